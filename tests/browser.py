"""Load a page in headless Debian Chromium through Playwright (the maintained driver).

Playwright's own browser download is never used: ``executable_path`` points at the Debian
``chromium`` binary, so the tests run offline. Used by the report tests to load a page and
collect its JavaScript errors, console errors, network requests and the rendering state of
plots.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

# as root in a container Chromium needs --no-sandbox; the rest keeps it off the (closed) network
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "--hide-scrollbars", "--mute-audio"]


def chromium_path() -> str | None:
    env = os.environ.get("BROWSER_PATH")
    if env and os.access(env, os.X_OK):
        return env
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


RENDER_STATE = """() => {
  const divs = [...document.querySelectorAll('.plotly-graph-div')];
  const ok = d => !!(d._fullLayout && d.querySelector('svg.main-svg') && d.data && d.data.length
                     && d.getBoundingClientRect().height > 100
                     && d.querySelectorAll('g.trace, g.hm image').length > 0);
  return JSON.stringify({plotly: typeof Plotly !== 'undefined', total: divs.length,
                         rendered: divs.filter(ok).map(d => d.id), missing: divs.filter(d => !ok(d)).map(d => d.id),
                         sections: [...document.querySelectorAll('section')].map(s => s.id)});
}"""


def load_page(path: Path, timeout: float = 30, load_timeout: float = 90) -> dict[str, Any]:
    """Load ``path`` in headless Chromium; return JS errors, external requests and plot state.

    Waits up to ``load_timeout`` s for the load event, then up to ``timeout`` s for every plot to render.
    """
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise FileNotFoundError("chromium")
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type in ("error", "assert") else None)
            page.on("request", lambda r: requests.append(r.url))
            page.goto(Path(path).resolve().as_uri(), wait_until="load", timeout=load_timeout * 1000)
            try:
                page.wait_for_function(f"(() => {{ const s = JSON.parse(({RENDER_STATE})()); "
                                       f"return s.total > 0 && s.missing.length === 0; }})()",
                                       timeout=timeout * 1000)
            except Exception:  # noqa: BLE001 - a timeout: report the state as it is
                pass
            page.wait_for_timeout(500)
            state = json.loads(page.evaluate(RENDER_STATE))
        finally:
            browser.close()
    external = [u for u in requests if not u.startswith(("file:", "data:", "about:", "blob:"))]
    return {**state, "errors": errors, "requests": requests, "external": external}
