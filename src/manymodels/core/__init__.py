"""The pure core: numpy, pandas and scikit-learn only (no Spark, no MLflow, no files, no network).

Everything a Spark task runs per group lives here, testable in a plain process: the frozen specs (``spec``),
column names and the model-table schema (``schema``), group keys and seeds (``keys``), estimator facts decided
once (``estimators``: task kind, seeding, params as JSON), driver checks on plain lists (``checks``), the packed
pass over sorted batches (``packing``, ``fitting``), metrics, the partition plan (``planning``), the memory
guard (``memory``), retrain fingerprints (``retrain``), search (``search``), fold ensembles (``ensemble``,
``folds``), model bytes and the per-process model cache (``model_bytes``, ``model_cache``), row routing
(``routing``) and synthetic panels (``panel``)."""
