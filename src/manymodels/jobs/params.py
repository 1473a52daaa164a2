"""Every parameter of every ``manymodels`` command, declared once.

The command line's options (``jobs/cli.py``), the notebooks' widgets (``widgets(job_params("score"))``) and the
bundle jobs' parameters (``resources/*.job.yml``, checked by ``tests/unit/test_job_params.py``) derive from the
declarations here, so a name, a default or a help text changes in one place.

A parameter's ``name`` is its widget and job parameter name (underscores); its command-line option is the name with
dashes (``--group-cols``), the underscore spelling (``--group_cols``, what the bundle's wheel tasks pass) is accepted
too. Widgets and job parameters carry text: ``Param.text`` is a default as text and ``Param.parse`` turns a text
into the typed value (an ``InputError`` naming the parameter, what was expected and a fix otherwise).

Pure: no pyspark, no MLflow; importing this module imports nothing heavy (the checks of ``core`` are imported when
a value is parsed), so ``manymodels --help`` stays fast.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, replace
from typing import Callable, Mapping

from manymodels.errors import InputError
from manymodels.settings import (
    CACHE_ENV,
    DEFAULT_CATALOG,
    DEFAULT_SCHEMA,
    DEFAULT_VOLUME,
    SPARK_MASTER_ENV,
    STAGING_ENV,
    on_databricks,
)

TYPES = ("str", "int", "float", "bool", "json", "list")

# Vocabularies of the code below this layer, repeated so this module imports nothing heavy (a test checks each
# equals its source: core.retrain, core.spec, core.folds, core.model_bytes, spark.inputs, core.schema).
RETRAIN_MODES = ("all", "failed", "changed")
FAILURE_POLICIES = ("record", "raise")
SAMPLINGS = ("disjoint", "complement")
COMBINES = ("mean", "median", "max", "stacking")
MODEL_FORMATS = ("pickle5", "skops")
INPUT_FORMATS = ("parquet", "csv", "table", "delta")
SIZE_DISTRIBUTIONS = ("uniform", "poisson", "zipf")
LAYOUTS = ("parquet", "gzip", "both")
GATE_METRICS = tuple(f"{split}_{m}" for split in ("train", "holdout")
                     for m in ("r2", "rmse", "accuracy", "log_loss", "roc_auc"))


@dataclass(frozen=True)
class Param:
    """One parameter of a command: a widget, a job parameter and a command-line option.

    ``default`` is the typed value (``None``: unset, the empty text); ``choices`` enumerate the allowed values
    (a dropdown widget); ``aliases`` are further option spellings the command line accepts; ``minimum`` bounds
    a number; ``check`` replaces the type's parsing with a check of ``core`` (``check(name, text) -> value``);
    ``cli_only`` marks options of the local command line that notebooks and bundle jobs do not take (the Spark
    master); ``positional``, ``required`` and ``repeat`` shape the command-line argument."""

    name: str
    type: str
    default: object
    help: str
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    minimum: float | None = None
    check: Callable[[str, str], object] | None = None
    cli_only: bool = False
    positional: bool = False
    required: bool = False
    repeat: bool = False

    @property
    def flags(self) -> tuple[str, ...]:
        """The command-line spellings: ``--with-dashes`` first, then ``--with_underscores`` and the aliases."""
        if self.positional:
            return ()
        dashed = "--" + self.name.replace("_", "-")
        underscored = (f"--{self.name}",) if "_" in self.name else ()
        return (dashed, *underscored, *self.aliases)

    @property
    def text(self) -> str:
        """The default as a widget or job parameter carries it."""
        return to_text(self.default)

    @property
    def value(self) -> object:
        """A fresh copy of the typed default (a list for ``list`` parameters)."""
        if self.type == "list" and self.default is not None:
            return list(self.default)
        return copy.deepcopy(self.default)

    def parse(self, value) -> object:
        """The typed value of a widget, job parameter or option (text, or a typed value); an ``InputError``
        naming the parameter when it is not one."""
        text = value if isinstance(value, str) else to_text(value)
        if not text.strip():
            if self.required:
                raise InputError(f"{self.name} is empty: expected a value ({self.help}).")
            if self.default is None:
                return None
            if self.type == "list" or (self.type == "str" and not self.choices):
                return PARSERS[self.type](self, text)
        parsed = self.check(self.name, text) if self.check else PARSERS[self.type](self, text)
        if self.choices and parsed not in self.choices:
            raise InputError(f"{self.name}={text!r}: expected one of {', '.join(self.choices)}. "
                             f"Fix: e.g. {self.name}={self.choices[0]}.")
        return parsed

    def but(self, **changes) -> Param:
        """This parameter with other fields (a command's own default or help)."""
        return replace(self, **changes)


def to_text(value) -> str:
    """A typed value as widget text: '' for None, true/false, comma-separated lists, JSON for dicts."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _int(param: Param, text: str) -> int:
    # lazy: core.checks imports scikit-learn; only a value to parse pays for it, not `manymodels --help`
    from manymodels.core.checks import parse_int

    return parse_int(param.name, text, minimum=None if param.minimum is None else int(param.minimum))


def _float(param: Param, text: str) -> float:
    try:
        number = float(text.strip().replace("_", ""))
    except ValueError:
        number = float("nan")
    if not math.isfinite(number):
        raise InputError(f"{param.name}={text!r}: expected a finite number. Fix: e.g. {param.name}={param.text}.")
    if param.minimum is not None and number < param.minimum:
        raise InputError(f"{param.name}={number}: expected at least {param.minimum}. Fix: e.g. "
                         f"{param.name}={param.text}.")
    return number


def _bool(param: Param, text: str) -> bool:
    # lazy: core.checks imports scikit-learn; only a value to parse pays for it, not `manymodels --help`
    from manymodels.core.checks import parse_bool

    return parse_bool(param.name, text)


def _json(param: Param, text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{param.name}={text!r} is not JSON ({exc.msg} at character {exc.pos}). Fix: e.g. "
                         f"{param.name}='{param.text or '{}'}' (double quotes around names and strings).") from None


def _list(param: Param, text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


PARSERS = {"str": lambda param, text: text, "int": _int, "float": _float, "bool": _bool, "json": _json,
           "list": _list}


def _fraction(name: str, text: str) -> float:
    # lazy: core.checks imports scikit-learn; only a value to parse pays for it, not `manymodels --help`
    from manymodels.core.checks import check_fraction

    return check_fraction(name, text)


def _seconds(name: str, text: str) -> float:
    # lazy: core.checks imports scikit-learn; only a value to parse pays for it, not `manymodels --help`
    from manymodels.core.checks import check_seconds

    return check_seconds(name, text)


def _megabytes(name: str, text: str) -> float:
    # lazy: the model cache's module is only needed once a value is parsed
    from manymodels.core.model_cache import cache_bytes

    cache_bytes(text)  # the scoring job's own check: a positive, finite number of megabytes
    return float(text)


def _gate_metric(name: str, text: str) -> str:
    # not ``choices``: the bundle passes an empty value (the default metric), which argparse would refuse
    metric = text.strip()
    if metric not in GATE_METRICS:
        raise InputError(f"{name}={text!r}: expected a metric column, one of {', '.join(GATE_METRICS)} (or empty: "
                         f"holdout_rmse for regression, holdout_accuracy for classification). Fix: e.g. "
                         f"{name}=holdout_rmse.")
    return metric


def _date(name: str, text: str) -> str:
    import datetime

    try:
        return datetime.date.fromisoformat(text.strip()).isoformat()
    except ValueError:
        raise InputError(f"{name}={text!r}: expected a date as YYYY-MM-DD (or empty: today, UTC). Fix: e.g. "
                         f"{name}=2026-12-01.") from None


def _name_value(name: str, text: str) -> str:
    key, sep, _ = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"{name}={text!r}: expected NAME=VALUE, a job parameter and its value. Fix: e.g. "
                         f"--{name} n_groups=200.")
    return text


# ---------------------------------------------------------------- parameters several commands share

INPUT_PATH = Param("input_path", "str", "", "table name, Parquet folder or CSV path (empty: the Parquet panel "
                   "`manymodels prepare` writes under $MANYMODELS_HOME)", aliases=("--input",))
GROUP_COLS = Param("group_cols", "list", ("store", "item"), "comma-separated group key columns: one model per key")
FEATURE_COLS = Param("feature_cols", "list", ("x0", "x1", "x2", "x3", "x4"), "comma-separated feature columns")
LABEL_COL = Param("label_col", "str", "y", "label column")
ESTIMATOR = Param("estimator", "str", "sklearn.linear_model.LinearRegression",
                  "scikit-learn estimator class as module.Class (modules sklearn and manymodels, and those in "
                  "$MANYMODELS_ALLOWED_ESTIMATOR_MODULES)")
MODEL_NAME = Param("model_name", "str", "manymodels_router",
                   "registered model name (catalog.schema.name in Unity Catalog)")
ALIAS = Param("alias", "str", "champion", "registry alias the new version gets")
EXPERIMENT = Param("experiment", "str", None, "MLflow experiment name or workspace path (empty: "
                   "$MANYMODELS_EXPERIMENT, else manymodels)")
MODEL_TABLE = Param("model_table", "str", None, "model table location: a folder or catalog.schema.table (empty: "
                    "$MANYMODELS_HOME/tables/model_table)", aliases=("--table",))
MASTER = Param("master", "str", None, f"Spark master, e.g. spark://127.0.0.1:7077 (empty: ${SPARK_MASTER_ENV}, "
               "else local[*])", cli_only=True)
N_GROUPS = Param("n_groups", "int", 1000, "groups of the generated panel (one model each)", aliases=("--groups",),
                 minimum=1)
MEAN_ROWS = Param("mean_rows", "int", 200, "mean rows per group of the generated panel", aliases=("--rows",),
                  minimum=1)
PROFILE = Param("profile", "str", None, "profile of ~/.databrickscfg (empty: DATABRICKS_HOST and the SDK's "
                "credentials from the environment)")
CATALOG = Param("catalog", "str", DEFAULT_CATALOG, "Unity Catalog catalog")
SCHEMA = Param("schema", "str", DEFAULT_SCHEMA, "schema inside the catalog")
VOLUME = Param("volume", "str", DEFAULT_VOLUME, "volume inside catalog.schema that holds the input data")
# The notebooks' and jobs' catalog and schema: the registered models are catalog.schema.<model_name> (Unity Catalog
# names have three levels), the default input and staging folders lie in the schema's volume. Locally they default
# to empty: one-level names in the local registry, folders under $MANYMODELS_HOME.
UC_CATALOG = CATALOG.but(default=DEFAULT_CATALOG if on_databricks() else None,
                         help="Unity Catalog catalog of the registered models (catalog.schema.model_name), the "
                              "default input and the staging folder (empty: a one-level model name, local registry)")
UC_SCHEMA = SCHEMA.but(default=DEFAULT_SCHEMA if on_databricks() else None,
                       help="schema inside the catalog (empty: a one-level model name, local registry)")
UC_VOLUME = VOLUME.but(help="volume inside catalog.schema: on Databricks the default input (<volume>/panel) and the "
                       "staging folder (<volume>/_staging) live in it")
STAGING_DIR = Param("staging_dir", "str", None, "folder every executor can read, where model stores and search data "
                    f"are staged (empty: ${STAGING_ENV}, else /Volumes/<catalog>/<schema>/<volume>/_staging on "
                    "Databricks, else $MANYMODELS_HOME/staging)")
COMPARE = Param("compare", "bool", False, "also time the same work with the usual alternatives (MLlib, a driver "
                "thread pool, one centralized model) on a sample brought to the driver; off for production runs")


# The promotion gate (core/promotion.py), shared by `manymodels promote` and `manymodels workspace promote`.
GATE_PARAMS = (
    Param("alias", "str", "challenger", "alias of the version to promote"),
    Param("champion_alias", "str", "champion", "alias moved to that version if it passes the gate"),
    Param("min_ok_fraction", "float", 0.95, "ok / (ok + failed) groups the version's run needs, in [0, 1]",
          check=_fraction),
    Param("metric", "str", None, "per-group metric compared with the champion's (empty: holdout_rmse for "
          "regression, holdout_accuracy for classification)", check=_gate_metric),
    Param("max_median_worse", "float", 0.05, "relative degradation of the median metric allowed (0: not worse, "
          "0.05: up to 5 percent worse)", minimum=0.0),
    Param("max_worse_fraction", "float", 0.6, "fraction of the shared groups allowed to be worse than the "
          "champion, in [0, 1]", check=_fraction),
    Param("min_shared_fraction", "float", 0.5, "groups ok in both runs / the challenger's ok groups needed for "
          "the comparison, in [0, 1]", check=_fraction),
    Param("dry_run", "bool", False, "write the verdict onto the version but move no alias"),
)


@dataclass(frozen=True)
class Command:
    """A ``manymodels`` command: the words typed after ``manymodels``, what it does, its parameters."""

    name: str
    help: str
    params: tuple[Param, ...]


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("main", "the main job on the embedded default: prepare a panel, train, register, score",
            (N_GROUPS, MEAN_ROWS, ESTIMATOR, MASTER)),
    Command("prepare", "write a synthetic panel (Parquet and/or one gzipped CSV per group); notebook 01", (
        N_GROUPS, MEAN_ROWS,
        Param("size_distribution", "str", "poisson", "distribution of the group sizes", choices=SIZE_DISTRIBUTIONS,
              aliases=("--sizes",)),
        Param("layout", "str", "both", "files to write: Parquet with the key columns, one gzipped CSV per group, "
              "or both", choices=LAYOUTS),
        Param("output_dir", "str", None, "folder to write (empty: the volume's panel folder on Databricks, else "
              "$MANYMODELS_HOME/data/panel)", aliases=("--out",)),
        Param("seed", "int", 7, "seed of the generated panel", minimum=0),
        UC_CATALOG, UC_SCHEMA, UC_VOLUME,
    )),
    Command("train", "train one model per group, log to MLflow and register the router; notebook 02", (
        INPUT_PATH, GROUP_COLS, FEATURE_COLS, LABEL_COL, ESTIMATOR,
        Param("estimator_params", "json", {}, "estimator parameters as a JSON object", aliases=("--params",)),
        MODEL_NAME, ALIAS, EXPERIMENT, MODEL_TABLE,
        Param("failure_policy", "str", "record", "a failing group: record its error and go on, or raise",
              choices=FAILURE_POLICIES),
        Param("retrain", "str", "all", "train every group, or only the failed or changed ones, carrying the others "
              "over from the model table committed at model_table", choices=RETRAIN_MODES),
        Param("params_from", "str", None, "model table of a per-group search (tune with group_cols): each group "
              "trains with its best parameters there, over estimator_params (empty: estimator_params for all)"),
        UC_CATALOG, UC_SCHEMA, UC_VOLUME,
        Param("format", "str", None, "input format (empty: from the path: table name, Parquet folder or CSV)",
              choices=INPUT_FORMATS, cli_only=True),
        Param("training_run_id", "str", None, "name of the training run (empty: generated); a rerun with the same "
              "id and the same input reuses its registered version, with other input it is refused (the bundle "
              "passes the job run's id, so a retried task registers once)"),
        Param("model_format", "str", "pickle5", "per-group model format: pickle5 (fastest) or skops (loads only "
              "trusted types)", choices=MODEL_FORMATS, cli_only=True),
        Param("trusted_types", "list", (), "skops: comma-separated type names trusted beyond the defaults (linear "
              "models, numpy)", cli_only=True),
        MASTER,
    )),
    Command("tune", "hyperparameter search (global or per group), logged and registered; notebook 03", (
        INPUT_PATH.but(help="table name, Parquet folder or CSV path (empty: scikit-learn's diabetes dataset)"),
        LABEL_COL.but(default="target"),
        ESTIMATOR.but(default="sklearn.ensemble.RandomForestRegressor"),
        Param("param_grid", "json", {"n_estimators": [10, 20, 50]}, "parameter grid as a JSON object of lists"),
        Param("cv", "str", "3", "cross-validation: a number of folds (>= 2) or kfold, stratified, group, "
              "timeseries"),
        Param("scoring", "str", "r2", "scikit-learn scorer name (empty: the estimator's score)"),
        GROUP_COLS.but(default=(), help="comma-separated group key columns: one search per group (empty: one "
                       "global search)"),
        FEATURE_COLS.but(default=(), help="comma-separated feature columns (empty: every numeric column but the "
                         "label and group columns)"),
        MODEL_NAME.but(default="manymodels_tuned"), ALIAS, EXPERIMENT,
        MODEL_TABLE.but(help="per-group search: model table of the best models, which train's params_from reads (a "
                        "folder or catalog.schema.table; empty: <catalog>.<schema>.<model_name>_groups on Databricks, "
                        "else $MANYMODELS_HOME/tables/tuned_model_table)"),
        UC_CATALOG, UC_SCHEMA, UC_VOLUME, STAGING_DIR, COMPARE, MASTER,
    )),
    Command("ensemble", "fold/sample ensemble: members in parallel on Spark, four combination rules, KDE plot; "
            "logged and registered; notebook 04", (
        INPUT_PATH.but(help="table name, Parquet folder or CSV path with a binary label (empty: generated "
                       "classification data of n_samples rows)"),
        FEATURE_COLS.but(default=(), help="comma-separated feature columns (empty: every numeric column but the "
                         "label)"),
        LABEL_COL.but(default="label", help="binary label column"),
        Param("n_samples", "int", 100000, "rows of the generated classification data", minimum=100),
        Param("n_members", "int", 5, "ensemble members, each trained on its own sample", minimum=2),
        Param("sampling", "str", "disjoint", "each member's rows: its own 1/K sample (disjoint) or the complement "
              "of one fold", choices=SAMPLINGS),
        Param("combine", "str", "mean", "how the registered ensemble combines its members' probabilities",
              choices=COMBINES),
        Param("learner", "str", "sklearn.ensemble.HistGradientBoostingClassifier", "members' classifier as "
              "module.Class"),
        MODEL_NAME.but(default="manymodels_fold_ensemble"), ALIAS, EXPERIMENT, UC_CATALOG, UC_SCHEMA, UC_VOLUME,
        COMPARE, MASTER,
    )),
    Command("score", "score a table per group with a registered router and write the scores; notebook 05", (
        INPUT_PATH, MODEL_NAME, ALIAS,
        Param("output_table", "str", None, "table name, or folder written as Parquet inside an output root "
              "(empty: $MANYMODELS_HOME/scores/<model_name>)"),
        Param("passthrough_cols", "list", (), "comma-separated input columns copied to the scores"),
        EXPERIMENT,
        Param("shuffle", "bool", True, "group the rows by key first; false when the input is already clustered "
              "by group (one file or partition per group)"),
        Param("model_cache_mb", "float", None, f"megabytes of models each Python worker keeps loaded (empty: "
              f"${CACHE_ENV}, else 1024)", check=_megabytes),
        Param("score_date", "str", None, "date the scores are filed under in output_table, YYYY-MM-DD (empty: today, "
              "UTC); a rerun of a date replaces that date's scores and no other", check=_date),
        UC_CATALOG, UC_SCHEMA, UC_VOLUME, STAGING_DIR, MASTER,
    )),
    Command("prune", "delete old model-table versions (keeps the current one, the newest --keep and any younger "
            "than --min-age-hours)", (
        MODEL_TABLE,
        Param("keep", "int", 5, "newest versions kept besides the current one", minimum=0),
        Param("min_age_hours", "float", 24.0, "versions younger than this are kept (a run may be writing them)",
              minimum=0.0),
    )),
    Command("promote", "quality gate on @alias's version against @champion_alias's, then move @champion_alias "
            "(the configured MLflow registry, e.g. the local one)", (MODEL_NAME, *GATE_PARAMS)),
    Command("workspace setup", "create catalog.schema and the volume unless they exist (the bundle's deploy does "
            "too; this is for workspaces used without the bundle)",
            (PROFILE, CATALOG, SCHEMA, VOLUME)),
    Command("workspace upload", "upload prepared data (gzipped per-group files or Parquet) to the volume", (
        PROFILE, CATALOG, SCHEMA, VOLUME,
        Param("source", "str", None, "local file or folder, e.g. .manymodels/data/panel", required=True),
        Param("dest", "str", "panel", "folder inside the volume (the jobs' generated panel is panel)"),
        Param("overwrite", "bool", True, "replace files that exist in the volume"),
    )),
    Command("workspace run", "run a job the bundle deployed, show progress, print the final state and URL", (
        Param("job", "str", None, "the bundle job", choices=("nightly", "weekly_tuning", "fold_ensemble"),
              positional=True, required=True),
        PROFILE,
        Param("target", "str", "dev", "bundle target the job was deployed to"),
        Param("job_id", "int", None, "the job's id, to skip the lookup by tag", minimum=1),
        Param("param", "str", (), "job parameter NAME=VALUE (the notebooks' widget names), repeatable",
              check=_name_value, repeat=True),
        Param("only", "list", None, "comma-separated task keys to run (empty: every task)"),
        Param("wait", "bool", True, "wait for the run to end"),
        Param("timeout", "float", 4 * 3600.0, "seconds to wait for the run", check=_seconds),
    )),
    Command("workspace promote", "register step: quality gate on @alias's version against @champion_alias's, "
            "then move @champion_alias (MLflow on the workspace)", (
        PROFILE,
        MODEL_NAME.but(default=None, help="registered model, catalog.schema.model", required=True),
        *GATE_PARAMS,
    )),
)}

# The bundle's jobs (resources/<key>.job.yml) and the job parameter defaults each sets apart from its commands'
# (values of bundle variables, ${...}, aside); the YAML says why.
JOB_DEFAULTS: dict[str, dict[str, str]] = {
    "nightly": {"layout": "parquet", "alias": "challenger", "retrain": "changed", "passthrough_cols": "y"},
    "weekly_tuning": {"label_col": "y", "estimator": "sklearn.linear_model.Ridge", "feature_cols": "x0,x1,x2,x3,x4",
                      "param_grid": '{"alpha": [0.01, 0.1, 1.0, 10.0]}', "group_cols": "store,item"},
    "fold_ensemble": {"n_samples": "1000000"},
}
JOB_KEYS = tuple(JOB_DEFAULTS)
# Job parameters no command takes: what the job's own tasks read (a condition task's operand).
JOB_ONLY_PARAMS: dict[str, dict[str, str]] = {
    "nightly": {"generate_data": "true: the prepare_data task generates a panel first (dev); false: it is skipped"},
}


def command(name: str) -> Command:
    """The command typed as ``name`` (``"score"``, ``"workspace run"``); an ``InputError`` listing them if none."""
    try:
        return COMMANDS[name]
    except KeyError:
        raise InputError(f"No command {name!r}: expected one of {', '.join(COMMANDS)}.") from None


def job_params(name: str) -> tuple[Param, ...]:
    """The parameters of command ``name`` that notebooks (as widgets) and bundle jobs take: all but the
    command-line-only ones."""
    return tuple(p for p in command(name).params if not p.cli_only)


def parse_all(params: tuple[Param, ...], texts: Mapping[str, object]) -> dict[str, object]:
    """The typed values of ``texts`` (widget values: name -> text) for ``params``; a missing name takes its
    default. An ``InputError`` names the first value that is not usable."""
    return {p.name: p.parse(texts[p.name]) if p.name in texts else p.value for p in params}


def as_texts(params: tuple[Param, ...], values: Mapping[str, object]) -> dict[str, str]:
    """``values`` (typed) as the texts widgets give, for the functions that take widget values."""
    return {p.name: to_text(values[p.name]) for p in params}


def markdown() -> str:
    """The command tables of docs/configuration.md (``python -m manymodels.jobs.params`` prints them)."""
    out = []
    for name, cmd in COMMANDS.items():
        positional = " ".join(f"<{p.name}>" for p in cmd.params if p.positional)
        out += [f"**`manymodels {name}{' ' + positional if positional else ''}`**: {cmd.help}.", "",
                "| option | default | meaning |", "|---|---|---|"]
        for p in cmd.params:
            if p.positional:
                spelled = f"`<{p.name}>`"
            elif p.type == "bool":
                spelled = f"`{p.flags[0]}`, `--no-{p.flags[0][2:]}`"
            else:
                spelled = f"`{p.flags[0]}`" + (f" (also {', '.join(f'`{a}`' for a in p.aliases)})" if p.aliases else "")
            default = "required" if p.required else (f"`{p.text}`" if p.text else "empty")
            meaning = p.help + (f"; one of {', '.join(f'`{c}`' for c in p.choices)}" if p.choices else "")
            meaning += ", repeatable" if p.repeat and "repeatable" not in p.help else ""
            meaning += " (command line only)" if p.cli_only else ""
            out.append(f"| {spelled} | {default} | {meaning} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown())
