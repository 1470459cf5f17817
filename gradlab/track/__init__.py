"""The tracker: freeze theta_e, take every probe batch's gradient there, measure D.

``tracker``    the public ``Tracker`` (use it in your own training loop)
``options``    ``TrackOptions`` (what it probes and stores) and ``Runtime`` (torchrun, lock, progress)
``shard``      the torchrun view the tracker needs (``SINGLE`` in one process), ``NullWriter``
``gradorders`` gradient-informed orders rebuilt at every theta_e; ``match``; their per-sample scores:
               ``fastsample`` + ``ghost`` (per-layer factors, default) or ``persample`` (vmap, reference)
``probe``      ``FrozenModel`` (theta_e) and ``probe_pass`` (one order's batches at theta_e)
``stores``     where batch gradients wait for the epoch end: memory | disk | recompute | sketch
``distances``  full gradient and the reductions the tracked quantities need (``gradlab.quantities``)
``sketch``     CountSketch for the ``sketch`` store
``layout``     the flat parameter vector's tensors (names, kinds, depths, offsets)
``paramstats`` per-tensor mean / variance / gradient norm during training
"""
