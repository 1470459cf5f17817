"""Regenerate the docs' quickstart figures from the quickstart's run file, in one command.

    .venv/bin/gradlab run studies/quickstart.toml --overwrite   # writes runs/quickstart.h5
    .venv/bin/python docs/gen_figures.py                         # writes docs/quickstart-*.png

The figures are the report's own (``gradlab report --png``, kaleido through a local Chromium), so
the docs show exactly what a user's report shows. Which report figure becomes which docs file is
listed once, in ``FIGURES``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
# docs file -> the report figure's slug (gradlab.report.html.Fig.slug; the PNG is <NN>_<slug>.png)
FIGURES = {"quickstart-heatmap.png": "heatmap_quickstart_intensity_phase0", "quickstart-summary.png": "summary_profile"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/quickstart.h5", help="the quickstart's run file")
    args = ap.parse_args(argv)
    run = Path(args.run)
    if not run.is_file():
        print(f"gen_figures: {run} is missing; run the quickstart first: .venv/bin/gradlab run "
              f"studies/quickstart.toml --overwrite", file=sys.stderr)
        return 2
    from gradlab.report.page import write_report

    with tempfile.TemporaryDirectory() as tmp:
        rep = write_report([str(run)], Path(tmp) / "report.html", png_dir=Path(tmp) / "png")
        for name, slug in FIGURES.items():
            found = [p for p in rep.pngs if p.stem.split("_", 1)[1].startswith(slug)]
            if not found:
                print(f"gen_figures: no report figure {slug!r} among {[p.name for p in rep.pngs]}", file=sys.stderr)
                return 2
            shutil.copyfile(found[0], DOCS / name)
            print(f"wrote {DOCS / name} (from {found[0].name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
