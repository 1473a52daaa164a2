"""The flat module names of manymodels 0.1 (``manymodels.router``, ``manymodels.inference``, ...), kept as aliases
of the layered modules: pickles that name them (registered routers, logged fold ensembles) still load, and code
written against them still imports. A name resolves to the first listed module that has it; nothing is imported
until an alias is used. New code imports the layered modules."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

ALIASES = {
    "api": ["api"],
    "cli": ["jobs.cli"],
    "config": ["core.spec", "settings"],
    "data": ["core.panel", "spark.inputs"],
    "ensemble": ["core.ensemble", "core.folds"],
    "ensemble_spark": ["spark.ensembles", "studies.fold_ensemble"],
    "fastchecks": ["core.fastchecks"],
    "fitting": ["core.fitting", "core.packing", "core.estimators", "spark.worker_process"],
    "inference": ["api", "spark.scoring", "storage.staging", "core.estimators"],
    "keys": ["core.keys"],
    "memory": ["core.memory"],
    "metrics": ["core.metrics"],
    "mlflow_filters": ["tracking.filters"],
    "model_index": ["storage.model_index"],
    "model_store": ["storage.model_table"],
    "notebook": ["databricks.notebook"],
    "planning": ["core.planning"],
    "progress": ["spark.progress", "settings"],
    "retrain": ["core.retrain"],
    "router": ["core.routing", "storage.packed_store", "tracking.router_pyfunc"],
    "router_pyfunc": ["tracking.router_pyfunc"],
    "schemas": ["core.schema"],
    "search": ["core.search"],
    "search_spark": ["spark.search", "tracking.searches", "studies.tuning", "settings"],
    "serialization": ["core.model_bytes", "core.model_cache", "settings"],
    "session": ["spark.session", "settings"],
    "training": ["spark.training", "spark.inputs", "spark.session"],
    "validation": ["core.checks", "errors", "spark.checks"],
    "worker_process": ["spark.worker_process"],
    "workspace": ["databricks.workspace", "settings", "core.checks"],
}


class AliasModule(types.ModuleType):
    """An old module name: its attributes are looked up in the modules that hold them now."""

    def __init__(self, name: str, targets: list[str]) -> None:
        super().__init__(name, f"Alias of {', '.join(targets)} (the layout of manymodels 0.1).")
        self.__targets = [f"manymodels.{t}" for t in targets]

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        for target in self.__targets:
            module = importlib.import_module(target)
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(f"module {self.__name__!r} (now {', '.join(self.__targets)}) has no attribute {attr!r}")

    def __dir__(self):
        return sorted({n for t in self.__targets for n in dir(importlib.import_module(t))})


class AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package == "manymodels" and name in ALIASES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return AliasModule(spec.name, ALIASES[spec.name.partition(".")[2]])

    def exec_module(self, module) -> None:
        pass


def install() -> None:
    if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(AliasFinder())
