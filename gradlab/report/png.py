"""Static PNGs of the report's figures through kaleido, which drives a local Chromium
(never a downloaded one): ``BROWSER_PATH`` if set, else a Chromium-family browser on PATH.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from gradlab.errors import GradlabError
from gradlab.report.html import Fig

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class BrowserMissingError(GradlabError):
    """PNG export needs a Chromium-family browser and none was found."""


def find_chromium() -> str | None:
    """Path of a Chromium-family browser: ``BROWSER_PATH`` if set (and executable), else on PATH."""
    env = os.environ.get("BROWSER_PATH")
    if env:
        return env if os.path.isfile(env) and os.access(env, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        p = shutil.which(name)
        if p:
            return p
    return None


def _static(fig: go.Figure) -> go.Figure:
    """A copy of ``fig`` without its menus (update_layout(updatemenus=[]) would keep them)."""
    out = go.Figure(fig)
    out.layout.updatemenus = ()
    return out


def export_pngs(figs: list[Fig], out_dir: Path) -> list[Path]:
    """Write every figure as ``<out_dir>/<NN>_<slug>.png`` with kaleido (one browser for all)."""
    browser = find_chromium()
    if browser is None:
        raise BrowserMissingError(
            "PNG export needs Chromium and none was found (set BROWSER_PATH or install it: apt-get install chromium)")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{i:02d}_{f.slug}.png" for i, f in enumerate(figs)]
    old = os.environ.get("BROWSER_PATH")
    os.environ["BROWSER_PATH"] = browser  # kaleido/choreographer use this browser, never a download
    try:
        # a static image has no working buttons: the figures' menus (updatemenus) are left out of it
        static = [_static(f.fig) for f in figs]
        pio.write_images(static, paths, format="png",
                         width=[1200 if f.fig.layout.width is None else f.fig.layout.width for f in figs],
                         height=[f.fig.layout.height or 450 for f in figs], scale=1.5)
    except Exception as exc:  # kaleido raises several types (browser start, timeouts)
        raise BrowserMissingError(f"PNG export with kaleido and {browser} failed: {type(exc).__name__}: "
                                  f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
    finally:
        if old is None:
            os.environ.pop("BROWSER_PATH", None)
        else:
            os.environ["BROWSER_PATH"] = old
    return paths
