"""Build the documentation site and look at it in headless Chromium: screenshots, and checks a reader would make.

    python benchmarks/docs_screenshots.py                      # build, check and screenshot four pages
    python benchmarks/docs_screenshots.py --all                # ... and check every page (no more screenshots)
    python benchmarks/docs_screenshots.py --out /tmp/shots --width 1024

Builds ``docs/mkdocs.yml`` strictly into ``<out>/site`` (or reads ``--site``), then:

1. scans every built HTML and CSS file for resources loaded from elsewhere (``<script src>``, stylesheet,
   font and icon ``<link>``, ``<img>``/``<iframe>``/``<source>`` ``src``, CSS ``@import`` and ``url()`` with
   ``http(s)://`` or ``//``): the site must read the same offline;
2. opens a copy of each page in Chromium from ``file://`` (no server) under a Content-Security-Policy that
   allows only ``file:`` and ``data:``, so that anything the page tries to fetch from elsewhere is blocked
   and reported by the browser itself; after its scripts ran, reports those, the stylesheets, scripts and
   fonts it loaded, the maths KaTeX rendered and any KaTeX error, the elements wider than their box (code
   blocks, tables and display maths that would scroll sideways) and the page height;
3. screenshots the four pages (home, concepts, a tutorial, the widest results page) as
   ``<out>/<name>.png``, ``--width`` wide and as tall as the page up to ``--max-height``.

Writes ``<out>/report.json`` and prints one line per page.  Exits 1 on an external resource, a KaTeX error
or an element that scrolls sideways, and 2 when no Chromium is found (Debian: ``apt-get install -y chromium``;
or set ``CHROMIUM`` to its path).  Output goes to ``build/docs_screenshots/`` by default (git-ignored).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MKDOCS_YML = ROOT / "docs" / "mkdocs.yml"
# name -> page of the built site (use_directory_urls: false): the home page, the model, a tutorial with code
# and maths, and the results page whose tables have the most columns.
PAGES = {
    "home": "index.html",
    "concepts": "concepts.html",
    "tutorial": "tutorials/new-head.html",
    "results": "benchmarks/results-peers.html",
}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

_EXTERNAL = r"""(?:https?:)?//[^"'\s)>]+"""
_HTML_LOADS = [
    re.compile(rf"""<(?:script|img|iframe|source|audio|video|embed)\b[^>]*\bsrc\s*=\s*["']?({_EXTERNAL})""", re.I),
    re.compile(rf"""<link\b(?=[^>]*\brel\s*=\s*["']?(?:[\w-]+\s+)*(?:stylesheet|preload|prefetch|modulepreload|icon|shortcut|manifest|font))[^>]*\bhref\s*=\s*["']?({_EXTERNAL})""", re.I),
    re.compile(rf"""<link\b[^>]*\bhref\s*=\s*["']?({_EXTERNAL})[^>]*\brel\s*=\s*["']?(?:[\w-]+\s+)*(?:stylesheet|preload|prefetch|modulepreload|icon|shortcut|manifest|font)""", re.I),
    re.compile(rf"""@import\s+(?:url\()?\s*["']?({_EXTERNAL})""", re.I),
]
_CSS_LOADS = [
    re.compile(rf"""@import\s+(?:url\()?\s*["']?({_EXTERNAL})""", re.I),
    re.compile(rf"""url\(\s*["']?({_EXTERNAL})""", re.I),
]

# Injected first in <head> of a copy of each page: only file: and data: may load, and every load the policy
# blocks (an external script, stylesheet, font, image...) is recorded.
_CHECK_HEAD = r"""
<meta http-equiv="Content-Security-Policy" content="default-src file: data: blob: 'unsafe-inline' 'unsafe-eval'">
<script>
window.__blocked = [];
document.addEventListener("securitypolicyviolation", function (e) { window.__blocked.push(e.blockedURI); });
</script>
"""
# Injected before </body>: after load (the theme's and KaTeX's scripts have run), writes what a reader would
# check into <pre id="docs-check">, which --dump-dom then prints.
_CHECK_JS = r"""
<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var wide = [];
    document.querySelectorAll(".rst-content pre, .rst-content table, .wy-table-responsive, .rst-content .arithmatex, .rst-content img")
      .forEach(function (el) {
        var box = el.getBoundingClientRect();
        if (el.scrollWidth > el.clientWidth + 1 && el.clientWidth > 0) {
          wide.push({tag: el.tagName.toLowerCase(), cls: el.className, scroll: el.scrollWidth, width: el.clientWidth,
                     text: (el.textContent || "").trim().slice(0, 60)});
        }
      });
    var content = document.querySelector(".wy-nav-content");
    var out = {
      external: window.__blocked,
      resources: Array.from(document.styleSheets).map(function (s) { return s.href; })
        .concat(Array.from(document.scripts).map(function (s) { return s.src; })).filter(Boolean),
      fonts: Array.from(document.fonts).filter(function (f) { return f.status === "loaded"; }).map(function (f) { return f.family; }),
      katex: document.querySelectorAll(".arithmatex .katex").length,
      arithmatex: document.querySelectorAll(".arithmatex").length,
      katex_errors: Array.from(document.querySelectorAll(".katex-error")).map(function (e) { return e.title || e.textContent; }),
      highlighted: document.querySelectorAll(".highlight pre code span").length,
      wide: wide,
      page_overflow: document.documentElement.scrollWidth > window.innerWidth,
      content_width: content ? content.clientWidth : null,
      height: Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)
    };
    var pre = document.createElement("pre");
    pre.id = "docs-check";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }, 300);
});
</script>
"""


def external_references(site: Path) -> list[tuple[str, str]]:
    """``(file, url)`` for every resource a built page or stylesheet would load from outside the site.

    Plain links (``<a href="https://...">``) are not loads and are not listed.
    """
    found = []
    for path in sorted(site.rglob("*")):
        if path.suffix == ".html":
            patterns = _HTML_LOADS
        elif path.suffix == ".css":
            patterns = _CSS_LOADS
        else:
            continue
        text = path.read_text(errors="replace")
        for pattern in patterns:
            found += [(str(path.relative_to(site)), m.group(1)) for m in pattern.finditer(text)]
    return sorted(set(found))


def find_chromium() -> str:
    """The Chromium (or Chrome) executable: ``$CHROMIUM``, else the first of CHROMIUM_NAMES on ``PATH``."""
    candidates = [os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else list(CHROMIUM_NAMES)
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(
        "no Chromium found (looked for $CHROMIUM, then " + ", ".join(CHROMIUM_NAMES) + " on PATH): install it "
        "(Debian/Ubuntu: `apt-get install -y chromium`) or set CHROMIUM=/path/to/chrome")


def build_site(site: Path) -> None:
    """``mkdocs build --strict`` of docs/mkdocs.yml into ``site``; raises with mkdocs' output on failure."""
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(MKDOCS_YML), "-d", str(site)],
                         capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"mkdocs build --strict -f {MKDOCS_YML} failed:\n{res.stdout[-3000:]}{res.stderr[-3000:]}")


class Browser:
    """Headless Chromium, one process per call, a throw-away profile."""

    def __init__(self, executable: str, width: int, profile: Path):
        self.executable = executable
        self.width = width
        self.profile = profile

    def _run(self, url: str, height: int, *args: str) -> subprocess.CompletedProcess:
        flags = ["--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--disable-extensions",
                 "--disable-background-networking", "--force-device-scale-factor=1", "--virtual-time-budget=8000",
                 "--host-resolver-rules=MAP * ~NOTFOUND",   # offline, as a reader may be: no name resolves
                 f"--user-data-dir={self.profile}", f"--window-size={self.width},{height}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            flags.append("--no-sandbox")              # Chromium refuses to run as root with its sandbox
        res = subprocess.run([self.executable, *flags, *args, url], capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"{self.executable} failed on {url} (exit {res.returncode}):\n{res.stderr[-2000:]}")
        return res

    def check(self, page: Path) -> dict:
        """Open a copy of ``page`` with the check script and return what it measured."""
        probe = page.with_name(page.stem + ".docs-check.html")
        text = page.read_text()
        head = re.search(r"<head[^>]*>", text)
        if head is None or "</body>" not in text:
            raise RuntimeError(f"{page}: no <head> or no </body> to put the check into")
        text = text[:head.end()] + _CHECK_HEAD + text[head.end():]
        probe.write_text(text.replace("</body>", _CHECK_JS + "</body>", 1))
        try:
            dom = self._run(probe.as_uri(), 900, "--dump-dom").stdout
        finally:
            probe.unlink()
        match = re.search(r'<pre id="docs-check">(.*?)</pre>', dom, re.S)
        if match is None:
            raise RuntimeError(f"{page}: the check script did not report (did the page's load event fire?)")
        result = json.loads(html.unescape(match.group(1)))
        return result

    def screenshot(self, page: Path, png: Path, height: int) -> None:
        self._run(page.as_uri(), height, f"--screenshot={png}")
        if not png.exists():
            raise RuntimeError(f"{self.executable} wrote no screenshot for {page}")


def problems(result: dict) -> list[str]:
    """What is wrong with a checked page, in words (empty when it reads right)."""
    out = [f"loads {url}" for url in result["external"]]
    out += [f"KaTeX error: {err}" for err in result["katex_errors"]]
    if result["katex"] < result["arithmatex"]:
        out.append(f"{result['arithmatex'] - result['katex']} of {result['arithmatex']} formulas not rendered")
    out += [f"<{w['tag']} class='{w['cls']}'> {w['scroll']}px in a {w['width']}px box: {w['text']!r}" for w in result["wide"]]
    if result["page_overflow"]:
        out.append("the page scrolls sideways")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "docs_screenshots", help="folder for the PNGs")
    parser.add_argument("--site", type=Path, help="an already built site (default: build one into <out>/site)")
    parser.add_argument("--width", type=int, default=1440, help="browser window width in CSS pixels")
    parser.add_argument("--max-height", type=int, default=2400, help="screenshots are cut at this height")
    parser.add_argument("--all", action="store_true", help="check every page of the site, not only the four")
    args = parser.parse_args(argv)

    try:
        chromium = find_chromium()
    except FileNotFoundError as err:
        print(f"docs_screenshots: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    site = args.site
    if site is None:
        site = args.out / "site"
        print(f"building the site into {site} ...", flush=True)
        build_site(site)

    failed = False
    external = external_references(site)
    for file, url in external:
        print(f"EXTERNAL  {file}: {url}")
    failed |= bool(external)

    report: dict = {"site": str(site), "width": args.width, "chromium": chromium, "external_references": external,
                    "pages": {}}
    pages = dict(PAGES)
    if args.all:
        pages.update({str(p.relative_to(site)): str(p.relative_to(site)) for p in sorted(site.rglob("*.html"))
                      if p.name not in ("404.html", "search.html") and str(p.relative_to(site)) not in PAGES.values()})
    with tempfile.TemporaryDirectory(prefix="docs-chromium-") as profile:
        browser = Browser(chromium, args.width, Path(profile))
        for name, rel in pages.items():
            page = site / rel
            result = browser.check(page)
            result["problems"] = problems(result)
            if name in PAGES:
                png = args.out / f"{name}.png"
                browser.screenshot(page, png, min(max(result["height"], 600), args.max_height))
                result["screenshot"] = str(png)
            report["pages"][name] = {"page": rel, **result}
            failed |= bool(result["problems"])
            print(f"{'FAIL' if result['problems'] else 'ok  '}  {rel}: {len(result['resources'])} stylesheets and scripts, "
                  f"{len(set(result['fonts']))} fonts, {len(result['external'])} blocked external loads, maths {result['katex']}/{result['arithmatex']}, "
                  f"{result['highlighted']} highlighted tokens, content {result['content_width']}px, "
                  f"height {result['height']}px" + (f" -> {result['screenshot']}" if "screenshot" in result else ""))
            for problem in result["problems"]:
                print(f"        {problem}")
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"report: {args.out / 'report.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
