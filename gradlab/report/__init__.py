"""Read side: from run files to tables, figures and pages. Plots are pure functions of
stored data.

``summary``    phase summary (per score bin, permutation test)
``plots``      heatmaps of D and the public ``gradlab.plots`` functions
``paramplots`` per-layer parameter statistics figures
``page``       the HTML report (``gradlab report``) and PNG export
``inspect``    ``gradlab inspect``
"""
