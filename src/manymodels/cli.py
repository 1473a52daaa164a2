"""``manymodels`` command line: the entry points used by the README, the bundle jobs and CI."""
from __future__ import annotations

import argparse
import sys

from manymodels.config import PanelSpec


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="manymodels", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("main", help="the main job on the embedded default: prepare, train, register, score")
    m.add_argument("--groups", type=int, default=1000)
    m.add_argument("--rows", type=int, default=200, help="mean rows per group")
    m.add_argument("--estimator", default="sklearn.linear_model.LinearRegression")
    m.add_argument("--master", default=None, help="Spark master, e.g. spark://127.0.0.1:7077 (default local[*])")

    pr = sub.add_parser("prepare", help="write a synthetic panel (parquet and/or one gzipped CSV per group)")
    pr.add_argument("--out", default=None)
    pr.add_argument("--groups", type=int, default=1000)
    pr.add_argument("--rows", type=int, default=200)
    pr.add_argument("--sizes", default="poisson", choices=["uniform", "poisson", "zipf"])
    pr.add_argument("--layout", default="both", choices=["parquet", "gzip", "both"])
    pr.add_argument("--seed", type=int, default=7)

    t = sub.add_parser("train", help="train one model per group, log to MLflow and register the router")
    t.add_argument("--input", required=True, help="table name, Parquet folder or CSV path")
    t.add_argument("--format", default=None, choices=["parquet", "csv", "table"])
    t.add_argument("--group-cols", required=True, type=_csv)
    t.add_argument("--feature-cols", required=True, type=_csv)
    t.add_argument("--label-col", required=True)
    t.add_argument("--estimator", default="sklearn.linear_model.LinearRegression")
    t.add_argument("--params", default="{}", help="JSON object of estimator parameters")
    t.add_argument("--model-name", default=None)
    t.add_argument("--alias", default="champion")
    t.add_argument("--experiment", default=None)
    t.add_argument("--table", default=None, help="model table location: folder or catalog.schema.table")
    t.add_argument("--failure-policy", default="record", choices=["record", "raise"])
    t.add_argument("--training-run-id", default=None)
    t.add_argument("--master", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from manymodels import jobs

    if args.command == "main":
        print(jobs.run_main(args.groups, args.rows, args.estimator, args.master))
    elif args.command == "prepare":
        panel = PanelSpec(n_groups=args.groups, mean_rows=args.rows, size_distribution=args.sizes, seed=args.seed)
        prepared = jobs.prepare_data(panel, args.out, layout=args.layout)
        print(f"wrote {prepared.n_rows} rows of {prepared.n_groups} groups to {prepared.parquet_dir.parent}")
    elif args.command == "train":
        from manymodels.session import get_spark

        result = jobs.train_and_register(
            get_spark(args.master), args.input, group_cols=args.group_cols, feature_cols=args.feature_cols,
            label_col=args.label_col, estimator=args.estimator, params=args.params, model_name=args.model_name,
            alias=args.alias, experiment=args.experiment, location=args.table, fmt=args.format,
            failure_policy=args.failure_policy, training_run_id=args.training_run_id)
        print(jobs.summarize(result, None, None, sum(result.timings.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
