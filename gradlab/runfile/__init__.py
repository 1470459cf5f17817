"""The HDF5 run file: one self-describing file per run (docs/design.md lists its layout).

``names``  every dataset and attribute name of the file, in one place
``writer`` ``RunWriter``: creates the file, appends committed epochs (SWMR)
``reader`` ``Run`` / ``open_run``: pandas frames of committed epochs
``schema`` schema versions and migrations
``swmr``   low-level HDF5 open helpers (SWMR read, clearing flags)
``provenance`` versions, host, git commit and seed, as root attributes
"""
