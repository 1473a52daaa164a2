"""The one Spark layer: thin wrappers that plan, check and run the pure core in ``mapInPandas`` tasks.

``session`` (which Spark, its settings), ``inputs`` (the one input reader), ``checks`` (driver checks that need
an aggregate), ``training``, ``scoring``, ``search``, ``ensembles``, ``progress`` and ``worker_process``
(per-worker state). No module here imports mlflow: the tracking layer sits above it."""
