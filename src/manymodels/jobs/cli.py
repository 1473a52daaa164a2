"""``manymodels`` command line: the entry points used by the README, the bundle jobs and CI.

Every option derives from ``manymodels.jobs.params``: ``--with-dashes``, with the underscore spelling (the widget
and job parameter name) accepted too. A value that is not usable, and any other ``InputError``, ends the command
with its message (which says how to fix it) on stderr and exit code 2; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import logging
import sys

from manymodels import settings
from manymodels.core.spec import PanelSpec
from manymodels.errors import InputError, QualityGateError
from manymodels.jobs.params import COMMANDS, Param, as_texts, job_params

DESCRIPTION = ("Train, tune, track and score many scikit-learn models in parallel on Spark. Options: --with-dashes, "
               "or --with_underscores (the notebooks' widget and the bundle jobs' parameter names).")
WORKSPACE_HELP = ("Databricks workspace: setup, upload, run a deployed job, promote (auth: DATABRICKS_HOST and "
                  "the SDK's credentials, or --profile)")
DEBUG_HELP = "on an error, show the Python traceback instead of the message alone"
METAVARS = {"int": "N", "float": "X", "json": "JSON", "list": "A,B", "str": "TEXT"}


def _parsed(param: Param, text, spelling: str | None):
    """``param.parse(text)``; an ``InputError`` says which option (as typed) had the value."""
    try:
        return param.parse(text)
    except InputError as exc:
        raise InputError(f"argument {spelling or param.name}: {exc}") from exc


class _Value(argparse.Action):
    """Stores the typed value of a parameter (appends it for a repeatable one)."""

    def __init__(self, option_strings, dest, param: Param, **kwargs):
        self.param = param
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        value = _parsed(self.param, values, option_string)
        if self.param.repeat:
            value = [*(getattr(namespace, self.dest, None) or ()), value]
        setattr(namespace, self.dest, value)


class _Flag(argparse.Action):
    """A boolean: ``--flag`` / ``--no-flag``, and ``--flag=true|false`` as the bundle's tasks pass it."""

    def __init__(self, option_strings, dest, param: Param, **kwargs):
        self.param = param
        self.negative = "--no-" + param.name.replace("_", "-")
        super().__init__([*option_strings, self.negative], dest, nargs="?", metavar="true|false", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string == self.negative:
            if values is not None:
                raise InputError(f"argument {option_string}: takes no value (found {values!r}). Fix: "
                                 f"{option_string}, or --{self.param.name}={values}.")
            value = False
        else:
            value = True if values is None else _parsed(self.param, values, option_string)
        setattr(namespace, self.dest, value)


def help_text(param: Param) -> str:
    """The option's help and its default (an empty default is explained by the help's own "(empty: ...)")."""
    if param.required:
        suffix = " (required)"
    elif param.text:
        suffix = f" (default: {param.text})"
    else:
        suffix = "" if "(empty: " in param.help else " (default: empty)"
    return (param.help + suffix).replace("%", "%%")


class _Formatter(argparse.HelpFormatter):
    """Shows a boolean as ``--flag[=true|false], --no-flag``."""

    def _format_action_invocation(self, action):
        if isinstance(action, _Flag):
            positive = [f"{s}[=true|false]" for s in action.option_strings if s != action.negative]
            return ", ".join([*positive, action.negative])
        return super()._format_action_invocation(action)


def add_param(parser: argparse.ArgumentParser, param: Param) -> None:
    """``param`` as an argument of ``parser``: its spellings, help with the default, typed on parsing."""
    kwargs = dict(param=param, default=param.value, help=help_text(param))
    if param.type == "bool":
        parser.add_argument(*param.flags, dest=param.name, action=_Flag, **kwargs)
        return
    kwargs.update(action=_Value, choices=param.choices or None, metavar=None if param.choices else
                  METAVARS[param.type])
    if param.positional:
        parser.add_argument(param.name, **kwargs)
    else:
        parser.add_argument(*param.flags, dest=param.name, required=param.required, **kwargs)


def _parser() -> argparse.ArgumentParser:
    """The ``manymodels`` parser: one subcommand per ``params.COMMANDS`` entry (``workspace ...`` nested)."""
    p = argparse.ArgumentParser(prog="manymodels", description=DESCRIPTION, formatter_class=_Formatter)
    p.add_argument("--version", action="version", version=f"manymodels {settings.VERSION}")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    groups = {}
    for name, command in COMMANDS.items():
        first, _, rest = name.partition(" ")
        if rest and first not in groups:
            group = sub.add_parser(first, help=WORKSPACE_HELP, description=WORKSPACE_HELP, formatter_class=_Formatter)
            groups[first] = group.add_subparsers(dest=f"{first}_command", required=True, metavar="command")
        parent = groups[first] if rest else sub
        q = parent.add_parser(rest or first, help=command.help, description=command.help, formatter_class=_Formatter)
        q.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        for param in command.params:
            add_param(q, param)
    return p


def _spark(args):
    # lazy: the command starts without pyspark until it needs a session
    from manymodels.spark.session import get_spark

    return get_spark(args.master)


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
        params = dict(item.partition("=")[::2] for item in args.param)
        job_id = args.job_id or workspace.find_job(w, args.job, args.target).job_id
        result = workspace.run_job(w, job_id, params, only=args.only, wait=args.wait, timeout_s=args.timeout)
        if args.wait and not result.succeeded:
            print(f"FAILED: {result.message or result.result_state}")
            return 1
    elif command == "promote":
        return _gated(lambda: workspace.promote(w, args.model_name, args.alias, args.champion_alias,
                                                args.min_ok_fraction, **_gate_options(args)))
    return 0


GATE_OPTIONS = ("metric", "max_median_worse", "max_worse_fraction", "min_shared_fraction", "dry_run")


def _gate_options(args) -> dict:
    return {name: getattr(args, name) for name in GATE_OPTIONS}


def _gated(promote) -> int:
    """Run ``promote()``; a failed gate exits 1 with its reasons on stderr (the nightly job's register task fails),
    and so does a dry run whose verdict failed."""
    try:
        done = promote()
    except QualityGateError as exc:
        print(f"manymodels: {exc}", file=sys.stderr)
        return 1
    return 0 if done.verdict.passed else 1


def _promote(args) -> int:
    # lazy: the command starts without mlflow until it needs it
    from manymodels.tracking import configure, promotion

    configure(experiment=None, create=False)
    return _gated(lambda: promotion.promote(args.model_name, alias=args.alias, champion_alias=args.champion_alias,
                                            min_ok_fraction=args.min_ok_fraction, **_gate_options(args)))


def _prune(args) -> int:
    # lazy: the command starts without pyspark or mlflow until it needs them
    from manymodels.storage import model_table

    location = args.model_table or model_table.default_location()
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


def _prepare(args) -> int:
    # lazy: the command starts without pyspark or mlflow until it needs them
    from manymodels.jobs import steps

    panel = PanelSpec(n_groups=args.n_groups, mean_rows=args.mean_rows, size_distribution=args.size_distribution,
                      seed=args.seed)
    prepared = steps.prepare_data(panel, steps.Locations.of(vars(args)).panel_dir(args.output_dir), layout=args.layout)
    print(f"wrote {prepared.n_rows} rows of {prepared.n_groups} groups to {prepared.parquet_dir.parent}")
    return 0


def _train(args) -> int:
    # lazy: the command starts without pyspark or mlflow until it needs them
    from manymodels.jobs import steps

    values = vars(args)
    if not args.input_path:
        steps.Locations.of(values).default_input()  # no input: refused before Spark starts
    result = steps.train_job(_spark(args), values)
    print(steps.summarize(result, None, None, sum(result.timings.values())))
    return 0


def _widget_texts(args) -> dict[str, str]:
    """The command's job parameters as the texts a notebook's widgets give (what tune, score and the study take)."""
    return as_texts(job_params(args.command), vars(args))


def _tune(args) -> int:
    # lazy: the command starts without pyspark or mlflow until it needs them
    from manymodels.studies.tuning import tune

    print(tune(_spark(args), **_widget_texts(args)).summary())
    return 0


def _score(args) -> int:
    # lazy: the command starts without pyspark or mlflow until it needs them
    from manymodels.jobs import steps

    print(steps.batch_score(_spark(args), **_widget_texts(args)).summary())
    return 0


def _ensemble(args) -> int:
    # lazy: the command starts without pyspark or mlflow until it needs them
    from manymodels.studies.fold_ensemble import format_study, run_study

    print(format_study(run_study(_spark(args), **_widget_texts(args))))
    return 0


def _main(args) -> int:
    # lazy: the command starts without pyspark or mlflow until it needs them
    from manymodels.jobs import steps

    print(steps.run_main(args.n_groups, args.mean_rows, args.estimator, args.master))
    return 0


RUNNERS = {"main": _main, "prepare": _prepare, "train": _train, "tune": _tune, "ensemble": _ensemble,
           "score": _score, "prune": _prune, "promote": _promote, "workspace": _workspace}


def main(argv: list[str] | None = None) -> int:
    """Run ``manymodels argv``; its exit code. An ``InputError`` prints its message to stderr and exits with 2
    (``--debug``: raised, traceback shown)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not logging.getLogger().handlers:  # run as a command: the library's progress lines on stderr, others WARNING
        logging.basicConfig(format="%(message)s")
        logging.getLogger("manymodels").setLevel(logging.INFO)
    try:
        args = _parser().parse_args(argv)
        return RUNNERS[args.command](args)
    except InputError as exc:
        if "--debug" in argv:
            raise
        print(f"manymodels: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    sys.exit(main())
