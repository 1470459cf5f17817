"""gradlab's own training runner (``gradlab run``), one client of ``gradlab.Tracker``.

``runner``      build a study from its config and run it: restore, epochs, finish
``loop``        one SGD epoch and the test evaluation
``checkpoint``  per-epoch checkpoint for ``--resume``
``nonfinite``   NaN/Inf guard
``accel``       device choice, bf16 autocast, channels-last
``distributed`` torchrun (DDP) support: ``Dist``, SyncBatchNorm
``variants``    the ``[variants]`` table of a study file
"""
