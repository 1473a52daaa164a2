"""The jobs: one declaration of every job parameter (``params``), the job steps (``steps``), the scoring job's output
(``scores``) and the ``manymodels`` command (``cli``). ``manymodels.jobs.<step>`` still names a step, as it did
before the steps had their module."""

SUBMODULES = ("params", "steps", "scores", "cli")


def __getattr__(name: str):
    import importlib  # lazy: the command's start stays free of pyspark and mlflow until a step runs

    if name in SUBMODULES:  # `from manymodels.jobs import params` must not import the steps first
        return importlib.import_module(f"manymodels.jobs.{name}")
    steps = importlib.import_module("manymodels.jobs.steps")
    try:
        return getattr(steps, name)
    except AttributeError:
        raise AttributeError(f"module 'manymodels.jobs' has no attribute {name!r}") from None
