"""Read side: from run files to tables, figures and pages. Plots are pure functions of
stored data.

``summary``    phase summary (per score bin, permutation test)
``plots``      heatmaps of D and the public ``gradlab.plots`` functions
``paramplots`` per-layer parameter statistics figures
``figures``    the report page's own figures (summary profile, layers, norms, curves, seeds)
``html``       HTML pieces of the report page: stylesheet, tables, figure cards, page shell
``png``        PNG export of the report's figures (kaleido and a local Chromium)
``page``       the HTML report (``gradlab report``): its sections, ``build_report``, ``write_report``
``inspect``    ``gradlab inspect``
"""
