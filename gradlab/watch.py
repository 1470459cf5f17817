"""``gradlab watch RUN.h5``: the report of a run in progress, rebuilt as each epoch commits.

The run file is written in SWMR mode, so a reader sees every committed epoch while the writer
trains. The watcher reopens the file read-only every ``interval`` seconds (``open_run``: SWMR
reads, never the writer's lock), and when ``epochs_done`` or the status changed it rebuilds the
page: the report's own sections (``gradlab.report.page.build_report``: the phase summary with its
verdicts so far, heatmaps, curves, ...) under a live banner that says which epoch is committed
and whether the run is running, complete, failed or stopped (status still "running" but no
writer holds ``<run>.lock`` any more: killed; ``gradlab run --resume`` continues it).

Two ways to see it, together or alone:

- served on localhost (default; ``--port``): the page asks the watcher for ``/status.json`` every
  ``interval`` seconds and reloads when an epoch committed;
- rewritten in place (``--out FILE``): each version replaces the file atomically and, while the
  run goes on, refreshes itself in a browser that opened the file.

It works on any run file: written by ``gradlab run``, by a user's ``gradlab.Tracker`` or by
rank 0 under torchrun (one writer per file).
"""
from __future__ import annotations

import datetime
import html
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from gradlab.atomic import atomic_write_bytes
from gradlab.errors import GradlabError
from gradlab.runfile.lock import lock_path
from gradlab.runfile.reader import open_run

FINAL = ("complete", "failed", "stopped")


@dataclass(frozen=True)
class State:
    """What the watcher last saw of the run file."""

    epochs_done: int = 0
    status: str = "waiting"  # waiting (not readable yet) | running | complete | failed | stopped
    detail: str = ""  # why it is waiting, the failure, or the writer

    def as_json(self) -> bytes:
        return json.dumps({"epochs_done": self.epochs_done, "status": self.status, "detail": self.detail}).encode()


def writer_of(run: Path) -> tuple[bool | None, str]:
    """Whether a live process holds the run's lock, read from the pid/host the holder wrote into
    ``<run>.lock`` (never by taking the lock): True, False (none, or a dead pid on this host), or
    None (a writer on another host, which this machine cannot check); and the holder's text."""
    try:
        text = lock_path(run).read_text(errors="replace").strip()
    except OSError:
        return False, ""
    parts = text.split()
    if len(parts) < 5 or parts[0] != "pid" or not parts[1].isdigit():
        return False, text
    if parts[4] != socket.gethostname():
        return None, text
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False, text
    except PermissionError:
        pass  # alive, another user's
    return True, text


def read_state(path: Path) -> State:
    """The run's committed epochs and status, read once; a file that is not readable yet is waiting."""
    try:
        with open_run(path) as run:
            done, status, failure = run.epochs_done, run.status, run.failure
    except GradlabError as exc:
        return State(0, "waiting", str(exc))
    if status == "running":
        alive, holder = writer_of(path)
        if alive is False:
            return State(done, "stopped", "no writer holds the run's lock any more (killed?); "
                                          "gradlab run --resume continues it")
        return State(done, status, holder)
    return State(done, status, failure)


def banner(path: Path, state: State, served: bool, interval: float) -> str:
    """The live line at the top of the page (``#live``: its data attributes are the state)."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S UTC")
    last = f"epoch {state.epochs_done - 1} committed" if state.epochs_done else "no epoch committed yet"
    more = {"running": "the page updates as each epoch commits",
            "complete": "the run has finished", "failed": "the run failed", "stopped": "the run has stopped",
            "waiting": "waiting for the run file"}[state.status]
    colour = "#e8f4ea" if state.status == "complete" else "#fdf3e1" if state.status in FINAL else "#e7eefa"
    style = f"position:sticky;top:0;z-index:9;padding:.6em 1em;margin:0 0 1em;border-radius:6px;background:{colour}"
    script = ""
    if served and state.status not in FINAL:
        script = (f"<script>setInterval(()=>fetch('status.json',{{cache:'no-store'}}).then(r=>r.json()).then(s=>{{"
                  f"if(s.epochs_done!=={state.epochs_done}||s.status!=={json.dumps(state.status)})location.reload();}})"
                  f".catch(()=>{{}}),{int(interval * 1000)});</script>")
    return (f"<div id='live' data-epochs-done='{state.epochs_done}' data-status='{html.escape(state.status)}' "
            f"style='{style}'><b>gradlab watch</b> · {html.escape(str(path))} · <b>{state.epochs_done} epochs done</b> "
            f"({last}) · status <b>{html.escape(state.status)}</b>: {more}"
            + (f" · <span class='note'>{html.escape(state.detail)}</span>" if state.detail else "")
            + f" · checked {when}</div>{script}")


def render(path: Path, state: State, served: bool, interval: float, n_perm: int, measure: str, bins: int) -> str:
    """The page for ``state``: the report's sections under the live banner, or the banner alone."""
    top = banner(path, state, served, interval)
    refresh = "" if served or state.status in FINAL else f"<meta http-equiv='refresh' content='{max(interval, 2):g}'>"
    if state.epochs_done == 0:
        return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>{refresh}<title>gradlab watch — "
                f"{html.escape(path.name)}</title></head><body><main>{top}</main></body></html>")
    from gradlab.report.page import build_report

    with open_run(path) as run:
        page, _ = build_report([run], measure=measure, bins=bins, n_perm=n_perm,
                               title=f"gradlab watch — {path.name}")
    return page.replace("<head>", f"<head>{refresh}", 1).replace("<main>", f"<main>{top}", 1)


class Watcher:
    """Polls one run file and keeps its page current (``poll``); ``page`` and ``state`` are the latest."""

    def __init__(self, path: str | Path, out: str | Path | None = None, served: bool = True, interval: float = 2.0,
                 n_perm: int = 2000, measure: str = "l2", bins: int = 4):
        if interval <= 0:
            raise GradlabError(f"--interval must be > 0 seconds, got {interval}")
        self.path, self.out, self.served, self.interval = Path(path), Path(out) if out else None, served, interval
        self.options = dict(n_perm=n_perm, measure=measure, bins=bins)
        self.state: State | None = None
        self.page = b""

    def poll(self) -> bool:
        """Read the run's state; rebuild and publish the page when it changed. True when it did."""
        state = read_state(self.path)
        if state == self.state or (state.status == "waiting" and self.state is not None
                                   and self.state.status != "waiting"):
            return False  # unchanged, or a look that failed (the writer creating datasets): keep the last page
        try:
            page = render(self.path, state, self.served, self.interval, **self.options).encode()
        except GradlabError as exc:  # an epoch the report cannot show yet: keep the banner, say why
            state = State(state.epochs_done, state.status, f"{state.detail} (report: {exc})".strip())
            page = render(self.path, State(0, state.status, state.detail), self.served, self.interval,
                          **self.options).encode()
        self.state, self.page = state, page
        if self.out is not None:
            atomic_write_bytes(self.out, page)
        return True

    @property
    def finished(self) -> bool:
        return self.state is not None and self.state.status in FINAL

    def run(self, on_change: Callable[[State], None] = lambda s: None, stop: threading.Event | None = None) -> State:
        """Poll until the run is complete, failed or stopped (or ``stop`` is set); returns the last state."""
        stop = stop or threading.Event()
        while not stop.is_set():
            if self.poll():
                on_change(self.state)
            if self.finished:
                break
            stop.wait(self.interval)
        return self.state


def serve(watcher: Watcher, port: int = 8765, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """An HTTP server (in a daemon thread) for ``/`` (the page) and ``/status.json``; ``server_address``
    holds the port (``port=0``: a free one)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            route = self.path.split("?")[0]
            if route in ("/", "/index.html"):
                body, kind = watcher.page, "text/html; charset=utf-8"
            elif route == "/status.json":
                body, kind = (watcher.state or State()).as_json(), "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:  # no line per request on the terminal
            pass

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise GradlabError(f"gradlab watch cannot listen on {host}:{port} ({exc.strerror}); "
                           f"choose another --port (0: any free one)") from None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def describe(state: State) -> str:
    """One line per change, for the terminal."""
    stamp = time.strftime("%H:%M:%S")
    return f"[{stamp}] {state.epochs_done} epochs done, {state.status}" + (f": {state.detail}" if state.detail and
                                                                            state.status != "running" else "")
