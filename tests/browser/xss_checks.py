"""What the console's XSS browser test looks for in a page: traps that record any script a payload
manages to run (alert and friends, a `window.__xss` setter, dialogs), and a DOM check that finds
markup a payload smuggled in (script, frames, SVG, images, foreign forms, `on*` handlers,
`javascript:`/`data:`/`vbscript:` URLs, tags outside the rich-text allow-list)."""

from __future__ import annotations

from dataclasses import dataclass, field

from playwright.async_api import BrowserContext, Dialog, Page

from blocks.infra.content.rich_text import ALLOWED_TAGS

# Runs before any page script, in every frame: whatever a payload calls is recorded, not shown.
_TRAPS = """
(() => {
  const hit = (what) => { try { window.reportXss(String(what)); } catch (e) {} };
  for (const name of ["alert", "confirm", "prompt", "print"]) {
    Object.defineProperty(window, name, {
      configurable: false,
      value: (...args) => { hit(`${name}(${args.join(",")})`); return null; },
    });
  }
  Object.defineProperty(window, "__xss", {
    configurable: false,
    get() { return undefined; },
    set(value) { hit(`__xss = ${value}`); },
  });
})();
"""

# Everything wrong with the page's DOM, as a list of sentences (empty: nothing smuggled in).
_DOM_PROBLEMS = """
(allowedRich) => {
  const problems = [];
  const describe = (el) => el.outerHTML.slice(0, 160);
  const main = document.querySelector("main");
  if (!main) return ["the page has no <main>"];
  const banned = [
    "script", "iframe", "frame", "frameset", "object", "embed", "applet", "svg", "math", "img",
    "image", "style", "link", "meta", "base", "template", "noscript", "video", "audio", "source",
    "marquee", "xmp", "body", "html", "head", "title",
  ];
  for (const el of main.querySelectorAll(banned.join(","))) {
    problems.push(`<${el.localName}> inside <main>: ${describe(el)}`);
  }
  for (const form of main.querySelectorAll("form")) {
    const action = form.getAttribute("action") || "";
    if (!action.startsWith("/console")) problems.push(`a form not ours: ${describe(form)}`);
  }
  for (const el of main.querySelectorAll("[style]")) {
    problems.push(`a style attribute inside <main>: ${describe(el)}`);
  }
  // The page's own scripts are files under /console/static/; no inline script anywhere.
  for (const script of document.querySelectorAll("script")) {
    const src = script.getAttribute("src") || "";
    if (!src.startsWith("/console/static/") || script.textContent.trim() !== "") {
      problems.push(`a script not ours: ${describe(script)}`);
    }
  }
  const urlAttributes = new Set([
    "href", "src", "action", "formaction", "xlink:href", "data", "poster", "background",
    "ping", "cite", "srcset", "codebase", "dynsrc", "lowsrc",
  ]);
  for (const el of document.querySelectorAll("*")) {
    for (const attribute of el.attributes) {
      const name = attribute.name.toLowerCase();
      if (name.startsWith("on")) {
        problems.push(`an event handler ${name}: ${describe(el)}`);
      }
      if (name === "srcdoc") problems.push(`a srcdoc: ${describe(el)}`);
      if (!urlAttributes.has(name)) continue;
      // As a browser reads a URL: case and any whitespace or control character do not matter.
      const url = attribute.value.toLowerCase().replace(/[\\s\\u0000-\\u001f\\u007f]/g, "");
      if (/^(javascript|data|vbscript|file):/.test(url) || url.startsWith("//")) {
        problems.push(`a dangerous ${name}: ${describe(el)}`);
      }
    }
  }
  // Rich text (comments, step context) holds only the sanitizer's allow-list; links are absolute
  // web or mail links that open without reaching back into the page.
  for (const rich of main.querySelectorAll(".rich")) {
    for (const el of rich.querySelectorAll("*")) {
      if (!allowedRich.includes(el.localName)) {
        problems.push(`<${el.localName}> in rich text: ${describe(el)}`);
      }
      if (el.localName === "a") {
        const href = el.getAttribute("href") || "";
        const rel = el.getAttribute("rel") || "";
        if (href && !/^(https?:|mailto:)/i.test(href)) {
          problems.push(`a rich-text link to ${href}`);
        }
        if (!rel.includes("noopener")) problems.push(`a rich-text link without noopener`);
      }
    }
  }
  return problems;
}
"""


@dataclass
class Traps:
    """Anything a payload ran: a trapped call, or a dialog the browser was about to show."""

    ran: list[str] = field(default_factory=list)

    async def install(self, context: BrowserContext, page: Page) -> None:
        def report(what: str) -> None:
            self.ran.append(what)

        async def on_dialog(dialog: Dialog) -> None:
            self.ran.append(f"dialog {dialog.type}: {dialog.message}")
            await dialog.dismiss()

        await context.expose_function("reportXss", report)
        await context.add_init_script(_TRAPS)
        page.on("dialog", on_dialog)


async def dom_problems(page: Page) -> list[str]:
    """What is wrong with the page's DOM now (see `_DOM_PROBLEMS`)."""
    found: list[str] = await page.evaluate(_DOM_PROBLEMS, sorted(ALLOWED_TAGS))
    return found


async def texts(page: Page, selector: str) -> list[str]:
    """The text of every element the selector matches, exactly as the DOM holds it (the
    characters a person reads; markup that was parsed would not be there)."""
    return await page.locator(selector).all_text_contents()


async def attribute_values(page: Page, selector: str, attribute: str) -> list[str]:
    """One attribute of every element the selector matches, as the browser parsed it."""
    found: list[str] = await page.eval_on_selector_all(
        selector, "(els, name) => els.map((el) => el.getAttribute(name) ?? '')", attribute
    )
    return found
