"""Identity rules that need no I/O: where a browser may be sent after sign-in (`redirects`).

Roles, permissions and the resolved caller (`OrgContext`) sit at `blocks.core`'s top
(`roles`, `context`) because every domain uses them. An access review's items, report and CSV
(`access_review`).

May use: `blocks.core`'s top modules and the standard library.
"""
