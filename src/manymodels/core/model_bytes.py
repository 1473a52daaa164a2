"""Model bytes: checksums, library versions, formats and load policies (the cache of loaded models is ``model_cache``).

Pickles execute code when loaded, so every blob carries a SHA-256 that is checked before it is
deserialized, whatever its format. Two formats, chosen per training run (``TrainSpec.model_format``)
and recorded per row (``model_format`` column):

- ``pickle5`` (default): the C pickler, protocol 5; fastest, but loading runs whatever the bytes say.
- ``skops``: ``skops.io`` (no code runs at load); a blob is loaded only if every type it names is in
  an explicit list of trusted types (``DEFAULT_TRUSTED_TYPES`` plus ``TrainSpec.trusted_types``),
  checked at training (a model with other types fails its group there) and again at every load.

The format dispatch is one dict lookup (``_DUMPERS`` / ``_LOADERS``). What a loader may accept (the
format a training run wrote and its trusted types) is a ``LoadPolicy``, written by the driver into the
index of the packed models it governs (``storage.model_index``).
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import platform
import warnings
import zipfile
from dataclasses import dataclass
from functools import lru_cache

import joblib

from manymodels.errors import InputError

MODEL_FORMAT = "pickle5"  # C pickler, protocol 5: ~10x faster than joblib's pure-Python pickler for small models
SKOPS = "skops"
MODEL_FORMATS = (MODEL_FORMAT, SKOPS)

# Types a skops blob may contain unless a training run trusts more (``TrainSpec.trusted_types``): the
# containers and scalars every estimator state uses, numpy arrays and scalars, the linear models of
# scikit-learn with the helpers they store (SGD losses, GLM losses and links, the label binarizer of the
# ridge classifiers), the common scalers and Pipeline. Estimator classes are written by their public path;
# a type in a blob matches either its full path or its public one (the private submodules left out), so
# ``sklearn.linear_model._base.LinearRegression`` matches ``sklearn.linear_model.LinearRegression``.
_LINEAR_MODELS = (
    "ARDRegression", "BayesianRidge", "ElasticNet", "ElasticNetCV", "GammaRegressor", "HuberRegressor", "Lars",
    "LarsCV", "Lasso", "LassoCV", "LassoLars", "LassoLarsCV", "LassoLarsIC", "LinearRegression",
    "LogisticRegression", "LogisticRegressionCV", "MultiTaskElasticNet", "MultiTaskElasticNetCV", "MultiTaskLasso",
    "MultiTaskLassoCV", "OrthogonalMatchingPursuit", "OrthogonalMatchingPursuitCV", "PassiveAggressiveClassifier",
    "PassiveAggressiveRegressor", "Perceptron", "PoissonRegressor", "QuantileRegressor", "RANSACRegressor", "Ridge",
    "RidgeCV", "RidgeClassifier", "RidgeClassifierCV", "SGDClassifier", "SGDOneClassSVM", "SGDRegressor",
    "TheilSenRegressor", "TweedieRegressor",
)
_LOSSES = ("HalfSquaredError", "HalfPoissonLoss", "HalfGammaLoss", "HalfTweedieLoss", "HalfTweedieLossIdentity",
           "HalfBinomialLoss", "HalfMultinomialLoss")
DEFAULT_TRUSTED_TYPES: tuple[str, ...] = (
    *(f"builtins.{t}" for t in ("dict", "list", "tuple", "str", "int", "float", "bool", "NoneType")),
    *(f"numpy.{t}" for t in ("ndarray", "dtype", "float64", "float32", "int64", "int32", "int16", "int8",
                             "uint64", "uint32", "uint16", "uint8", "bool_", "str_")),
    *(f"sklearn.linear_model.{m}" for m in _LINEAR_MODELS),
    *(f"sklearn.linear_model._sgd_fast.{t}" for t in ("Hinge", "SquaredHinge", "ModifiedHuber", "Log",
                                                       "SquaredLoss", "Huber", "EpsilonInsensitive",
                                                       "SquaredEpsilonInsensitive")),
    *(f"sklearn._loss.loss.{t}" for t in _LOSSES),
    *(f"sklearn._loss._loss.Cy{t}" for t in _LOSSES),
    *(f"sklearn._loss.link.{t}" for t in ("Interval", "IdentityLink", "LogLink", "LogitLink",
                                          "MultinomialLogit", "HalfLogitLink")),
    "sklearn.preprocessing.LabelBinarizer", "sklearn.preprocessing.LabelEncoder",
    "sklearn.preprocessing.StandardScaler", "sklearn.preprocessing.MinMaxScaler",
    "sklearn.preprocessing.MaxAbsScaler", "sklearn.preprocessing.RobustScaler", "sklearn.pipeline.Pipeline",
)


class ModelRefusedError(ValueError):
    """A stored model that must not be deserialized; the message names the model (group, run) and why."""


class ModelIntegrityError(ModelRefusedError):
    """A model blob does not match its recorded SHA-256."""


class UntrustedModelError(ModelRefusedError):
    """A skops blob names types outside the trusted list (or a pickle where only skops is allowed)."""


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


# ---------------------------------------------------------------- trusted types (skops)

@lru_cache(maxsize=64)
def trusted_types(extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The effective trusted list of a training run: ``DEFAULT_TRUSTED_TYPES`` plus its ``extra`` ones."""
    return tuple(sorted(set(DEFAULT_TRUSTED_TYPES) | set(extra)))


def _public(name: str) -> str:
    """``a.b._c.d.Cls`` -> ``a.b.Cls``: the module path up to its first private part, then the type name."""
    parts = name.split(".")
    module = []
    for p in parts[:-1]:
        if p.startswith("_"):
            break
        module.append(p)
    return ".".join([*module, parts[-1]])


def types_in(blob: bytes) -> set[str]:
    """Every type (``module.name``; bound methods as ``module.Class.method``) a skops blob names, read
    from its ``schema.json`` without importing or constructing anything."""
    try:
        schema = json.loads(zipfile.ZipFile(io.BytesIO(blob)).read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise UntrustedModelError(f"not a skops file ({type(exc).__name__}: {exc})") from exc
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__loader__" in node and "__module__" in node and "__class__" in node:
                name = f"{node['__module__']}.{node['__class__']}"
                found.add(name)
                content = node.get("content")
                if node["__loader__"] == "MethodNode" and isinstance(content, dict):
                    found.add(f"{name}.{content.get('func')}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def untrusted_types(blob: bytes, trusted: tuple[str, ...], found: set[str] | None = None) -> list[str]:
    """The types of a skops blob (or of ``found``) matching no entry of ``trusted``, sorted."""
    allowed = set(trusted)
    return sorted(t for t in (types_in(blob) if found is None else found)
                  if t not in allowed and _public(t) not in allowed)


def _untrusted_message(where: str, bad: list[str]) -> str:
    return (f"Refusing to load model {where or '(unnamed)'}: its skops file contains type(s) {bad} that are not in "
            "the trusted types. If you trust them, add them to trusted_types (train_per_group(..., "
            "model_format='skops', trusted_types=[...]) or `manymodels train --trusted-types a.B,c.D`) and train "
            "again; the defaults are model_bytes.DEFAULT_TRUSTED_TYPES.")


# ---------------------------------------------------------------- dump / load, dispatched on the format

def _dump_pickle(model: object, trusted: tuple[str, ...] | None = None) -> bytes:
    """The C pickler; cloudpickle for what it cannot name, e.g. an estimator class defined in a notebook or
    script (``__main__``), which Spark ships to the workers by value. Loading such a blob needs cloudpickle
    (a dependency of MLflow) but not the class's module."""
    try:
        return pickle.dumps(model, protocol=5)
    except (pickle.PicklingError, AttributeError, TypeError):
        import cloudpickle

        return cloudpickle.dumps(model, protocol=5)


def _dump_skops(model: object, trusted: tuple[str, ...] | None) -> bytes:
    import skops.io

    blob = skops.io.dumps(model)
    bad = untrusted_types(blob, trusted or DEFAULT_TRUSTED_TYPES)
    if bad:  # found at training, where the group's row can say so, not first at scoring
        raise UntrustedModelError(_untrusted_message(f"of type {type(model).__name__}", bad))
    return blob


def _load_pickle(blob: bytes, trusted: tuple[str, ...] | None, where: str) -> object:
    return pickle.loads(blob)


def _load_skops(blob: bytes, trusted: tuple[str, ...] | None, where: str) -> object:
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    found = types_in(blob)
    bad = untrusted_types(blob, trusted or DEFAULT_TRUSTED_TYPES, found)
    if bad:
        raise UntrustedModelError(_untrusted_message(where, bad))
    try:  # skops audits again, trusting exactly the (approved) types this blob names; never trusted=True
        return skops.io.loads(blob, trusted=sorted(found))
    except UntrustedTypesFoundException as exc:
        raise UntrustedModelError(_untrusted_message(where, sorted(map(str, exc.args[0] or [])))) from exc


_DUMPERS = {MODEL_FORMAT: _dump_pickle, SKOPS: _dump_skops}
_LOADERS = {MODEL_FORMAT: _load_pickle, SKOPS: _load_skops}
_EXTENSIONS = {MODEL_FORMAT: "pkl", SKOPS: "skops"}


def dumps(model: object, model_format: str = MODEL_FORMAT, trusted: tuple[str, ...] | None = None) -> bytes:
    """Model bytes in ``model_format``; a skops model naming types outside ``trusted`` (default:
    ``DEFAULT_TRUSTED_TYPES``) raises ``UntrustedModelError``."""
    return _DUMPERS[model_format](model, trusted)


def extension(model_format: str | None) -> str:
    return _EXTENSIONS.get(model_format or MODEL_FORMAT, "bin")


@dataclass(frozen=True)
class LoadPolicy:
    """What the loaders of one training run's models accept: the format it wrote and, for skops, the
    trusted types. A ``skops`` run never unpickles: a row claiming ``pickle5`` is refused."""

    model_format: str = MODEL_FORMAT
    trusted_types: tuple[str, ...] = ()  # the effective list (defaults included)

    def to_json(self) -> str:
        return json.dumps({"model_format": self.model_format, "trusted_types": list(self.trusted_types)})

    @classmethod
    def from_json(cls, text: str | bytes | None) -> "LoadPolicy":
        if not text:
            return DEFAULT_POLICY
        raw = json.loads(text)
        return cls(raw.get("model_format", MODEL_FORMAT), tuple(raw.get("trusted_types") or ()))

    @classmethod
    def of(cls, spec) -> "LoadPolicy":
        """The policy of a ``TrainSpec`` (its format; the defaults plus its extra trusted types)."""
        fmt = getattr(spec, "model_format", MODEL_FORMAT)
        return cls(fmt, trusted_types(tuple(getattr(spec, "trusted_types", ()) or ())))


DEFAULT_POLICY = LoadPolicy(MODEL_FORMAT, DEFAULT_TRUSTED_TYPES)


def loads(blob: bytes, expected_sha256: str, *, where: str = "", model_format: str | None = MODEL_FORMAT,
          policy: LoadPolicy | None = None) -> object:
    """Verify ``blob`` against ``expected_sha256``, then deserialize it with the loader of ``model_format``.

    ``where`` names the model (group key, run) in the errors: ``ModelIntegrityError`` on a checksum
    mismatch, ``UntrustedModelError`` for a skops blob with untrusted types or a pickle under a skops
    ``policy``. Nothing is deserialized before both checks pass.
    """
    actual = sha256(blob)
    if actual != expected_sha256:
        raise ModelIntegrityError(
            f"Refusing to load model {where or '(unnamed)'}: its SHA-256 is {actual} but the model "
            f"table recorded {expected_sha256}. The blob was changed after training; retrain the "
            "group or restore the original model table."
        )
    fmt = model_format or MODEL_FORMAT
    policy = policy or DEFAULT_POLICY
    check_policy(fmt, policy, where)
    return _LOADERS[fmt](blob, policy.trusted_types, where)


def check_policy(model_format: str, policy: LoadPolicy | None, where: str = "") -> None:
    """``UntrustedModelError`` unless ``policy`` lets a model in ``model_format`` load (skops runs load only skops)."""
    policy = policy or DEFAULT_POLICY
    known = model_format in _LOADERS
    if not known or (policy.model_format == SKOPS and model_format != SKOPS):
        raise UntrustedModelError(
            f"Refusing to load model {where or '(unnamed)'}: its format is {model_format!r} but "
            f"{'its training run stores only skops models' if known else f'expected one of {MODEL_FORMATS}'}. "
            "Restore the original model table or retrain the group.")


def check_format(model_format: str, extra_trusted) -> tuple[str, ...]:
    """Driver-side check of ``TrainSpec.model_format`` / ``trusted_types``; returns the extra types as a tuple."""
    if model_format not in _DUMPERS:
        raise InputError(f"model_format={model_format!r}: expected one of {MODEL_FORMATS} ('pickle5' is the "
                         "fastest; 'skops' loads without running code, trusting only listed types).")
    if isinstance(extra_trusted, str):
        extra_trusted = [t.strip() for t in extra_trusted.split(",") if t.strip()]
    extra = tuple(extra_trusted or ())
    bad = [t for t in extra if not isinstance(t, str) or "." not in t]
    if bad:
        raise InputError(f"trusted_types contains {bad!r}: expected fully qualified type names such as "
                         "'sklearn.tree._tree.Tree' (as the refusal message lists them).")
    if extra and model_format != SKOPS:
        raise InputError(f"trusted_types={list(extra)!r} only applies to model_format='skops': pickle5 models "
                         "load any type. Set model_format='skops' or drop trusted_types.")
    if model_format == SKOPS:
        try:
            import skops.io  # noqa: F401
        except ImportError as exc:
            raise InputError("model_format='skops' needs the skops package: pip install skops "
                             "(it is a dependency of manymodels and of mlflow).") from exc
    return extra


# ---------------------------------------------------------------- library versions

@lru_cache(maxsize=4)
def library_versions(model_format: str = MODEL_FORMAT) -> str:
    """JSON of the library versions that matter for loading, computed once per process (and format)."""
    import numpy
    import pandas
    import sklearn

    versions = {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "joblib": joblib.__version__,
    }
    if model_format == SKOPS:
        import skops

        versions["skops"] = skops.__version__
    return json.dumps(versions, sort_keys=True)


def warn_on_version_mismatch(recorded: str | None, where: str = "") -> None:
    if not recorded:
        return
    trained = json.loads(recorded)
    current = json.loads(library_versions(SKOPS if "skops" in trained else MODEL_FORMAT))
    diffs = {k: (v, current.get(k)) for k, v in trained.items() if k != "python" and current.get(k) != v}
    if diffs:
        text = ", ".join(f"{k} trained with {a}, loading with {b}" for k, (a, b) in sorted(diffs.items()))
        warnings.warn(f"Model {where}: library version mismatch ({text}).", RuntimeWarning, stacklevel=3)





