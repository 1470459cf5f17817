"""Drive headless Debian Chromium over the DevTools protocol (``--remote-debugging-pipe``).

Standard library only: Chromium reads commands on fd 3 and writes replies/events on fd 4,
as NUL-terminated JSON. Used by the report tests to load a page offline and collect its
JavaScript errors, console errors, network requests and the rendering state of plots.
"""
from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe"]


def chromium_path() -> str | None:
    env = os.environ.get("BROWSER_PATH")
    if env and os.access(env, os.X_OK):
        return env
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


class Chromium:
    def __init__(self, exe: str, window: tuple[int, int] = (1400, 1000)):
        self.profile = tempfile.mkdtemp(prefix="gradlab-chromium-")
        cmd_r, self._cmd_w = os.pipe()   # we write commands, Chromium reads fd 3
        self._res_r, res_w = os.pipe()   # Chromium writes fd 4, we read

        def child() -> None:
            # move both ends out of the way first (either may already be 3 or 4), then onto 3 and 4
            a, b = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 100), fcntl.fcntl(res_w, fcntl.F_DUPFD, 100)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.log = open(Path(self.profile) / "stderr.log", "wb")
        self.proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={window[0]},{window[1]}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, preexec_fn=child,
            close_fds=False)  # our fds are non-inheritable (PEP 446); only the dup2 copies 3 and 4 pass
        os.close(cmd_r)
        os.close(res_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ protocol
    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from chromium")
            ready, _, _ = select.select([self._res_r], [], [], left)
            if ready:
                chunk = os.read(self._res_r, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed the pipe (exit {self.proc.poll()})")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        for i, m in enumerate(self.events):
            if m.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            m = self._read_message(deadline)
            if m.get("method") == method:
                return m
            self.events.append(m)

    def pump(self, seconds: float) -> None:
        """Collect events for ``seconds``."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self._read_message(deadline))
        except TimeoutError:
            pass

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd_w, self._res_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


RENDER_STATE = """(() => {
  const divs = [...document.querySelectorAll('.plotly-graph-div')];
  const ok = d => !!(d._fullLayout && d.querySelector('svg.main-svg') && d.data && d.data.length
                     && d.getBoundingClientRect().height > 100
                     && d.querySelectorAll('g.trace, g.hm image').length > 0);
  return JSON.stringify({plotly: typeof Plotly !== 'undefined', total: divs.length,
                         rendered: divs.filter(ok).map(d => d.id), missing: divs.filter(d => !ok(d)).map(d => d.id),
                         sections: [...document.querySelectorAll('section')].map(s => s.id)});
})()"""


def load_page(path: Path, timeout: float = 30, load_timeout: float = 90) -> dict[str, Any]:
    """Load ``path`` in headless Chromium; return JS errors, external requests and plot state.

    Waits up to ``load_timeout`` s for the load event, then up to ``timeout`` s for every plot to render.
    """
    exe = chromium_path()
    if exe is None:
        raise FileNotFoundError("chromium")
    b = Chromium(exe)
    try:
        target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            b.send(f"{domain}.enable", session=session)
        b.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=session)
        b.wait_event("Page.loadEventFired", timeout=load_timeout)
        state: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = b.send("Runtime.evaluate", {"expression": RENDER_STATE, "returnByValue": True}, session=session)
            state = json.loads(res["result"]["value"])
            if state["total"] and not state["missing"]:
                break
            b.pump(0.5)
        b.pump(0.5)
        errors = []
        for m in b.events:
            p = m.get("params", {})
            if m.get("method") == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                errors.append(d.get("exception", {}).get("description") or d.get("text"))
            elif m.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif m.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                errors.append("log: " + p["entry"]["text"])
        requests = [m["params"]["request"]["url"] for m in b.events if m.get("method") == "Network.requestWillBeSent"]
        external = [u for u in requests if not u.startswith(("file:", "data:", "about:", "blob:"))]
        return {**state, "errors": errors, "requests": requests, "external": external}
    finally:
        b.close()

