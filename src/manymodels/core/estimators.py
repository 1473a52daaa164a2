"""What manymodels needs to know of an estimator, decided in one place: its task kind, its seed parameters
(every ``random_state``, also nested), its parameters as JSON, and the per-task template each group's model is
cloned from. Pure scikit-learn: no Spark, no MLflow."""
from __future__ import annotations

import importlib
import json
import os
import pickle

from sklearn.base import BaseEstimator, clone, is_classifier

from manymodels.core import model_bytes
from manymodels.core.spec import TrainSpec
from manymodels.errors import InputError
from manymodels.settings import ALLOWED_MODULES_ENV


def seed_param_names(estimator: object) -> list[str]:
    """Every ``random_state`` parameter of ``estimator``, nested ones (``step__random_state``) included."""
    return [n for n in estimator.get_params(deep=True) if n == "random_state" or n.endswith("__random_state")]


def seeded_clone(estimator: object, seed: int) -> object:
    """Clone and set every ``random_state`` parameter (also nested in pipelines) to ``seed``."""
    model = clone(estimator)
    names = seed_param_names(model)
    if names:
        model.set_params(**{n: seed for n in names})
    return model


def params_dict(model: object) -> dict:
    """The estimator's own parameters as JSON-able values (anything else by its ``repr``)."""
    return {k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)
            for k, v in model.get_params(deep=False).items()}


def params_json(model: object) -> str:
    """``params_dict`` as JSON with sorted keys: what the model table and MLflow record."""
    return json.dumps(params_dict(model), sort_keys=True)


class EstimatorTemplate:
    """What every group of a task starts from, computed once per estimator instead of once per group:
    the unfitted estimator pickled (unpickling is several times cheaper than ``clone``), the names of
    its seed parameters, and its parameters as JSON when only a top-level ``random_state`` varies."""

    _cache: dict[int, tuple[object, "EstimatorTemplate"]] = {}

    def __init__(self, estimator: object) -> None:
        self.blob = model_bytes.dumps(clone(estimator))  # pickle5 (cloudpickle for classes of ``__main__``)
        self.seed_names = seed_param_names(estimator)
        self.params = params_dict(estimator) if set(self.seed_names) <= {"random_state"} else None
        self.params_valid = _params_valid(estimator)

    @classmethod
    def of(cls, estimator: object) -> "EstimatorTemplate":
        entry = cls._cache.get(id(estimator))
        if entry is None or entry[0] is not estimator:
            entry = (estimator, cls(estimator))
            cls._cache = {id(estimator): entry}  # one spec per task: keep only the latest
        return entry[1]

    def model(self, seed: int) -> object:
        model = pickle.loads(self.blob)
        if self.seed_names:
            model.set_params(**{n: seed for n in self.seed_names})
        return model

    def params_json(self, model: object, seed: int) -> str:
        if self.params is None:
            return params_json(model)
        params = dict(self.params, random_state=seed) if self.seed_names else self.params
        return json.dumps(params, sort_keys=True)


def _params_valid(estimator: object) -> bool:
    """True when scikit-learn's parameter checks pass for the estimator and every estimator nested in it.

    scikit-learn repeats those checks (and the ones of each metric function) at every call; the
    parameters are the same for every group of a run, so they are checked once here and the per-group
    calls skip them (``skip_parameter_validation``). An estimator that fails them keeps the checks, so
    every group reports the same error it always did.
    """
    nested = [estimator] + [v for v in estimator.get_params(deep=True).values() if isinstance(v, BaseEstimator)]
    try:
        for est in nested:
            validate = getattr(est, "_validate_params", None)
            if validate is None:
                return False
            validate()
    except Exception:  # noqa: BLE001 - any refusal: let every fit run the checks and raise as usual
        return False
    return True


def is_classifier_estimator(obj) -> bool:
    """scikit-learn's ``is_classifier``, False for objects it cannot tag (an MLflow pyfunc wrapper, say)."""
    try:
        return bool(is_classifier(obj))
    except (AttributeError, TypeError):  # scikit-learn >= 1.6 raises for objects without __sklearn_tags__
        return False


def task_of(spec_or_estimator, task: str | None = None) -> str:
    """The task kind, ``regression`` or ``classification``: the one decision every layer uses. ``spec_or_estimator``
    is a ``TrainSpec`` (its ``task`` wins when set) or an estimator; ``task`` wins over both."""
    estimator = spec_or_estimator
    if isinstance(spec_or_estimator, TrainSpec):
        task, estimator = task or spec_or_estimator.task, spec_or_estimator.estimator
    if task:
        return task
    return "classification" if is_classifier_estimator(estimator) else "regression"


DEFAULT_ALLOWED_MODULES = ("sklearn", "manymodels")


def estimator_module_prefixes(extra=()) -> tuple[str, ...]:
    """The module prefixes an estimator path may start with: ``sklearn``, ``manymodels``, ``$MANYMODELS_ALLOWED_
    ESTIMATOR_MODULES`` and ``extra``. A prefix matches whole dotted parts (``sklearn`` allows ``sklearn.svm.SVR``,
    not ``sklearnx.Evil``); a prefix may also be one class's full path."""
    if isinstance(extra, str):
        extra = extra.split(",")
    found = [*DEFAULT_ALLOWED_MODULES, *os.environ.get(ALLOWED_MODULES_ENV, "").split(","), *extra]
    prefixes = []
    for item in found:
        prefix = str(item).strip().rstrip(".")
        if not prefix:
            continue
        if not _is_dotted(prefix):
            raise InputError(f"Allowed estimator module prefix {item!r} (from {ALLOWED_MODULES_ENV} or "
                             "allowed_modules) is not a dotted module path: expected e.g. 'xgboost' or "
                             "'mycompany.models'.")
        prefixes.append(prefix)
    return tuple(dict.fromkeys(prefixes))


def _is_dotted(path: str) -> bool:
    return bool(path) and all(part.isascii() and part.isidentifier() for part in path.split("."))


def check_estimator_path(path: str, allowed=()) -> tuple[str, str]:
    """Refuse an estimator path outside the allowed module prefixes, before anything is imported (importing a
    module runs its code). Returns ``(module, class name)``."""
    what = f"estimator {path!r}"
    if not isinstance(path, str) or "." not in path.strip(".") or not _is_dotted(path):
        raise InputError(f"{what}: expected the dotted path of an estimator class, such as "
                         "'sklearn.linear_model.Ridge'.")
    prefixes = estimator_module_prefixes(allowed)
    if not any(path == p or path.startswith(p + ".") for p in prefixes):
        raise InputError(
            f"{what} is refused: only classes of the modules {', '.join(repr(p) for p in prefixes)} may be named "
            "by a job parameter (importing a module runs its code). Fix: a scikit-learn estimator such as "
            f"'sklearn.linear_model.Ridge', or allow its package where the job is configured: the environment "
            f"variable {ALLOWED_MODULES_ENV}={path.split('.')[0]} (comma-separated), or allowed_modules= in Python.")
    module_name, _, cls_name = path.rpartition(".")
    return module_name, cls_name


def load_estimator(path: str, params: str | dict | None = None, *, allowed_modules=()):
    """``'sklearn.linear_model.Ridge'`` plus a JSON object of parameters -> ``(unfitted estimator, params)``.

    Used for ``estimator`` and ``learner`` job parameters: the path must start with an allowed module prefix
    (``sklearn``, ``manymodels``, ``$MANYMODELS_ALLOWED_ESTIMATOR_MODULES``, ``allowed_modules``; checked before
    any import) and name a subclass of scikit-learn's ``BaseEstimator`` (checked before it is instantiated).
    Anything else is an ``InputError`` naming what was found and how to allow it."""
    from sklearn.base import BaseEstimator

    module_name, cls_name = check_estimator_path(path, allowed_modules)
    params = _estimator_params(params)
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise InputError(f"estimator {path!r} cannot be imported ({exc}): expected a dotted path such as "
                         "'sklearn.linear_model.Ridge'.") from exc
    if not isinstance(cls, type) or not issubclass(cls, BaseEstimator):
        found = f"the class {cls.__module__}.{cls.__qualname__}" if isinstance(cls, type) else \
            f"a {type(cls).__name__}, not a class"
        raise InputError(f"estimator {path!r} is {found}: expected a scikit-learn estimator class (a subclass of "
                         "sklearn.base.BaseEstimator), such as 'sklearn.linear_model.Ridge'.")
    return cls(), params


def _estimator_params(params: str | dict | None) -> dict:
    if isinstance(params, str):
        try:
            params = json.loads(params) if params.strip() else {}
        except json.JSONDecodeError as exc:
            raise InputError(f"estimator params {params!r} are not a JSON object ({exc}): expected e.g. "
                             '\'{"alpha": 0.5}\'.') from exc
    params = params or {}
    if not isinstance(params, dict):
        raise InputError(f"estimator params {params!r} are a {type(params).__name__}: expected a JSON object of "
                         'parameter names and values, e.g. \'{"alpha": 0.5}\'.')
    return params
