"""``manymodels`` command line: the entry points used by the README, the bundle jobs and CI."""
from __future__ import annotations

import argparse
import sys

from manymodels import settings
from manymodels.core.spec import PanelSpec


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _checked(check, name: str):
    """An argparse type running ``check(name, text)``: a NaN or out-of-range number is a usage error naming it."""
    def parse(text: str):
        try:
            return check(name, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = name
    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="manymodels", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("main", help="the main job on the embedded default: prepare, train, register, score")
    # Underscore spellings = the notebooks' widget names = the bundle's job parameters.
    m.add_argument("--groups", "--n_groups", type=int, default=1000)
    m.add_argument("--rows", "--mean_rows", type=int, default=200, help="mean rows per group")
    m.add_argument("--estimator", default="sklearn.linear_model.LinearRegression")
    m.add_argument("--master", default=None, help="Spark master, e.g. spark://127.0.0.1:7077 (default local[*])")

    pr = sub.add_parser("prepare", help="write a synthetic panel (parquet and/or one gzipped CSV per group)")
    pr.add_argument("--out", "--output_dir", default=None)
    pr.add_argument("--groups", "--n_groups", type=int, default=1000)
    pr.add_argument("--rows", "--mean_rows", type=int, default=200)
    pr.add_argument("--sizes", "--size_distribution", default="poisson", choices=["uniform", "poisson", "zipf"])
    pr.add_argument("--layout", default="both", choices=["parquet", "gzip", "both"])
    pr.add_argument("--seed", type=int, default=7)

    t = sub.add_parser("train", help="train one model per group, log to MLflow and register the router")
    t.add_argument("--input", "--input_path", required=True, help="table name, Parquet folder or CSV path")
    t.add_argument("--format", default=None, choices=["parquet", "csv", "table"])
    t.add_argument("--group-cols", "--group_cols", required=True, type=_csv)
    t.add_argument("--feature-cols", "--feature_cols", required=True, type=_csv)
    t.add_argument("--label-col", "--label_col", required=True)
    t.add_argument("--estimator", default="sklearn.linear_model.LinearRegression")
    t.add_argument("--params", "--estimator_params", default="{}", help="JSON object of estimator parameters")
    t.add_argument("--model-name", "--model_name", default=None)
    t.add_argument("--alias", default="champion")
    t.add_argument("--experiment", default=None)
    t.add_argument("--table", "--model_table", default=None,
                   help="model table location: folder or catalog.schema.table")
    t.add_argument("--failure-policy", "--failure_policy", default="record", choices=["record", "raise"])
    t.add_argument("--retrain", default="all", choices=["all", "failed", "changed"],
                   help="train every group, or only failed / changed groups, carrying the others over from the "
                        "model table committed at --model_table")
    t.add_argument("--training-run-id", default=None)
    t.add_argument("--master", default=None)
    t.add_argument("--model_format", default="pickle5", choices=["pickle5", "skops"],
                   help="per-group model format: pickle5 (fastest) or skops (loads only trusted types)")
    t.add_argument("--trusted_types", type=_csv, default=[],
                   help="skops: comma-separated type names trusted beyond the defaults (linear models, numpy)")

    tu = sub.add_parser("tune", help="hyperparameter search (global or per group), logged and registered; "
                        "options = notebook 03's widgets")
    for name, default in TUNE_OPTIONS.items():  # == search_spark.TUNE_DEFAULTS (a test checks), kept cheap to import
        tu.add_argument(f"--{name}", default=default)
    e = sub.add_parser("ensemble", help="fold/sample ensemble study: members in parallel on Spark, four "
                       "combination rules, KDE plot; log + register (options = notebook 04's widgets)")
    for name, default in ENSEMBLE_OPTIONS.items():
        e.add_argument(f"--{name}", default=default)
    e.add_argument("--master", default=None)
    sc = sub.add_parser("score", help="score a table per group with a registered router and write the scores "
                        "(options = notebook 05's widgets)")
    for name, default in SCORE_OPTIONS.items():  # == jobs.SCORE_DEFAULTS (a test checks)
        sc.add_argument(f"--{name}", default=default)
    sc.add_argument("--master", default=None)
    pn = sub.add_parser("prune", help="delete old model-table versions of a folder or table-name location (keeps "
                        "the current one, the newest --keep and any younger than --min_age_hours)")
    pn.add_argument("--table", "--model_table", default=None,
                    help="model table folder or table name (default: the project's folder)")
    pn.add_argument("--keep", type=int, default=5)
    pn.add_argument("--min_age_hours", "--min-age-hours", type=float, default=24.0)
    _workspace_parser(sub)
    return p


# `manymodels ensemble` options: exactly the widgets of notebooks/04_fold_ensemble.py (all strings).
ENSEMBLE_OPTIONS = {"n_samples": "100000", "n_members": "5", "sampling": "disjoint", "combine": "mean",
                    "learner": "sklearn.ensemble.HistGradientBoostingClassifier",
                    "model_name": "manymodels_fold_ensemble", "alias": "champion", "experiment": ""}


# `manymodels score` options: exactly the widgets of notebooks/05_batch_inference.py (all strings).
SCORE_OPTIONS = {"input_path": "", "model_name": "manymodels_router", "alias": "champion", "output_table": "",
                 "passthrough_cols": "", "experiment": "", "shuffle": "true", "model_cache_mb": ""}

JOB_KEYS = ("nightly", "weekly_tuning", "fold_ensemble")
TUNE_OPTIONS = {"input_path": "", "label_col": "target", "estimator": "sklearn.ensemble.RandomForestRegressor",
                "param_grid": '{"n_estimators": [10, 20, 50]}', "cv": "3", "scoring": "r2", "group_cols": "",
                "model_name": "manymodels_tuned", "alias": "champion", "experiment": ""}


def _workspace_parser(sub) -> None:
    """`manymodels workspace ...`: a Databricks workspace through databricks-sdk (see manymodels.workspace)."""
    # lazy: the command starts without pyspark or mlflow until it needs them
    from manymodels.core.checks import check_fraction, check_seconds
    from manymodels.settings import DEFAULT_CATALOG, DEFAULT_SCHEMA, DEFAULT_VOLUME

    ws = sub.add_parser("workspace", help="Databricks workspace: setup, upload, run a deployed job, promote "
                        "(auth: DATABRICKS_HOST + the SDK's credentials, or --profile)")
    wsub = ws.add_subparsers(dest="workspace_command", required=True)

    def location(q, with_volume=True):
        q.add_argument("--profile", default=None, help="profile of ~/.databrickscfg (default: the environment)")
        q.add_argument("--catalog", default=DEFAULT_CATALOG)
        q.add_argument("--schema", default=DEFAULT_SCHEMA)
        if with_volume:
            q.add_argument("--volume", default=DEFAULT_VOLUME)

    location(wsub.add_parser("setup", help="create catalog.schema and the volume unless they exist"))
    u = wsub.add_parser("upload", help="upload prepared data (gzipped per-group files or Parquet) to the volume")
    location(u)
    u.add_argument("--source", required=True, help="local file or folder, e.g. .manymodels/data/panel")
    u.add_argument("--dest", default="panel", help="folder inside the volume (the jobs' default data_dir is panel)")
    u.add_argument("--no-overwrite", dest="overwrite", action="store_false")
    r = wsub.add_parser("run", help="run a job the bundle deployed, show progress, print the final state and URL")
    r.add_argument("job", choices=JOB_KEYS)
    r.add_argument("--profile", default=None)
    r.add_argument("--target", default="dev", help="bundle target the job was deployed to")
    r.add_argument("--job-id", type=int, default=None, help="skip the lookup by tag")
    r.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="job parameter (the notebook widget names), repeatable")
    r.add_argument("--only", type=_csv, default=None, help="comma-separated task keys to run")
    r.add_argument("--no-wait", dest="wait", action="store_false")
    r.add_argument("--timeout", type=_checked(check_seconds, "timeout"), default=4 * 3600,
                   help="seconds to wait for the run")
    pm = wsub.add_parser("promote", help="register step: quality gate on @alias's run, then move @champion_alias")
    pm.add_argument("--profile", default=None)
    pm.add_argument("--model_name", required=True, help="catalog.schema.model")
    pm.add_argument("--alias", default="challenger")
    pm.add_argument("--champion_alias", default="champion")
    pm.add_argument("--min_ok_fraction", type=_checked(check_fraction, "min_ok_fraction"), default=0.95,
                    help="ok / (ok + failed) groups the new version's run needs, in [0, 1]")


def _workspace(args) -> int:
    # lazy: the command starts without pyspark or mlflow until it needs them
    from manymodels.databricks import workspace

    w = workspace.client(args.profile)
    command = args.workspace_command
    if command == "setup":
        workspace.ensure_schema_and_volume(w, args.catalog, args.schema, args.volume)
    elif command == "upload":
        dest = settings.volume_path(args.catalog, args.schema, args.volume, args.dest)
        done = workspace.upload(w, args.source, dest, overwrite=args.overwrite)
        print(f"{done.files} files, {done.bytes / 1e6:.1f} MB in {done.remote_dir}")
    elif command == "run":
        params = {}
        for item in args.param:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise SystemExit(f"--param {item!r}: expected NAME=VALUE, e.g. --param n_groups=200")
            params[name] = value
        job_id = args.job_id or workspace.find_job(w, args.job, args.target).job_id
        result = workspace.run_job(w, job_id, params, only=args.only, wait=args.wait, timeout_s=args.timeout)
        if args.wait and not result.succeeded:
            print(f"FAILED: {result.message or result.result_state}")
            return 1
    elif command == "promote":
        workspace.promote(w, args.model_name, args.alias, args.champion_alias, args.min_ok_fraction)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "workspace":
        return _workspace(args)
    if args.command == "prune":
        # lazy: the command starts without pyspark or mlflow until it needs them
        from manymodels.storage import model_table

        location = args.table or model_table.default_location()
        spark = None
        if model_table.is_table_name(location):  # version tables are listed and dropped through Spark
            # lazy: the command starts without pyspark or mlflow until it needs them
            from manymodels.spark.session import get_spark

            spark = get_spark()
        deleted = model_table.prune(location, keep=args.keep, min_age_hours=args.min_age_hours, spark=spark)
        print(f"deleted {len(deleted)} old version(s) of {location}; "
              f"{len(model_table.versions(location, spark=spark))} left (current one kept)")
        for path in deleted:
            print(f"  {path}")
        return 0
    # lazy: the command starts without pyspark or mlflow until it needs them
    from manymodels import jobs

    if args.command == "main":
        print(jobs.run_main(args.groups, args.rows, args.estimator, args.master))
    elif args.command == "prepare":
        panel = PanelSpec(n_groups=args.groups, mean_rows=args.rows, size_distribution=args.sizes, seed=args.seed)
        prepared = jobs.prepare_data(panel, args.out, layout=args.layout)
        print(f"wrote {prepared.n_rows} rows of {prepared.n_groups} groups to {prepared.parquet_dir.parent}")
    elif args.command == "train":
        # lazy: the command starts without pyspark or mlflow until it needs them
        from manymodels.spark.session import get_spark

        result = jobs.train_and_register(
            get_spark(args.master), args.input, group_cols=args.group_cols, feature_cols=args.feature_cols,
            label_col=args.label_col, estimator=args.estimator, params=args.params, model_name=args.model_name,
            alias=args.alias, experiment=args.experiment, location=args.table, fmt=args.format,
            failure_policy=args.failure_policy, training_run_id=args.training_run_id, retrain=args.retrain,
            model_format=args.model_format, trusted_types=args.trusted_types)
        print(jobs.summarize(result, None, None, sum(result.timings.values())))
    elif args.command == "tune":
        # lazy: the command starts without pyspark or mlflow until it needs them
        from manymodels.spark.session import get_spark
        from manymodels.studies.tuning import tune

        print(tune(get_spark(), **{name: getattr(args, name) for name in TUNE_OPTIONS}).summary())
    elif args.command == "score":
        # lazy: the command starts without pyspark or mlflow until it needs them
        from manymodels.spark.session import get_spark

        print(jobs.batch_score(get_spark(args.master), **{n: getattr(args, n) for n in SCORE_OPTIONS}).summary())
    elif args.command == "ensemble":
        # lazy: the command starts without pyspark or mlflow until it needs them
        from manymodels.spark.session import get_spark
        from manymodels.studies.fold_ensemble import format_study, run_study

        print(format_study(run_study(get_spark(args.master), **{n: getattr(args, n) for n in ENSEMBLE_OPTIONS})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
