"""Quoted values and tag keys in MLflow filter strings, checked against a real sqlite MLflow store."""
from __future__ import annotations

import pytest

from manymodels.errors import InputError
from manymodels.tracking.filters import FilterValueError, equals, literal, tag_equals, tag_key

# Values a run tag, model name or version tag may hold, with look-alikes that a wrong escape would find instead.
VALUES = ["it's", 'say "hi"', "its", "it''s", "it\\'s", 'say \\"hi\\"', "a' and tags.other = 'b", "b",
          "back\\slash", "", "two\nlines", "semi;colon -- /* x */"]
MODEL_NAMES = ["it's", "its", 'say "hi"', "a' and name = 'b", "b"]


def test_literal_quotes_by_content():
    assert literal("abc") == "'abc'"
    assert literal("it's") == '"it\'s"'
    assert literal('say "hi"') == "'say \"hi\"'"
    assert literal("") == "''"
    assert tag_key("manymodels.training_run_id") == "tags.`manymodels.training_run_id`"
    assert tag_key("odd`key") == 'tags."odd`key"'
    assert equals("run_id", "abc") == "run_id = 'abc'"


@pytest.mark.parametrize("value", ["both ' and \"", "ends in a backslash\\", "it's\\"])
def test_literal_refuses_values_the_grammar_cannot_spell(value):
    with pytest.raises(FilterValueError, match="training_run_id") as err:
        literal(value, "training_run_id")
    assert repr(value) in str(err.value) and "Fix:" in str(err.value)
    assert isinstance(err.value, InputError)


def test_tag_key_refuses_backtick_and_double_quote():
    with pytest.raises(FilterValueError, match="tag key"):
        tag_key('a`b"c')
    with pytest.raises(FilterValueError):
        tag_key("")
    with pytest.raises(FilterValueError, match="expected a string"):
        literal(42, "model name")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A fresh sqlite tracking + registry store with one run per value (tags ``k`` and ``k'ey``) and one
    registered model per name (one version, tagged ``k``); the previous URIs are restored afterwards."""
    import mlflow
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow_filters")
    old_tracking, old_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        client = MlflowClient(uri, uri)
        exp = client.create_experiment("filters", artifact_location=str(root / "artifacts"))
        runs = {v: client.create_run(exp, tags={"k": v, "k'ey": v, "other": "b"}).info.run_id for v in VALUES}
        for name in MODEL_NAMES:
            client.create_registered_model(name)
            client.create_model_version(name, str(root / "artifacts"), run_id=runs.get(name),
                                        tags={"k": name})
        yield client, exp, runs
    finally:
        mlflow.set_tracking_uri(old_tracking)
        mlflow.set_registry_uri(old_registry)


@pytest.mark.parametrize("value", VALUES)
def test_search_runs_finds_exactly_the_tagged_run(store, value):
    import mlflow

    _, exp, runs = store
    for key in ("k", "k'ey"):
        found = mlflow.search_runs([exp], filter_string=tag_equals(key, value))
        assert sorted(found["run_id"]) == [runs[value]], tag_equals(key, value)
    attr = mlflow.search_runs([exp], filter_string=equals("attributes.run_id", runs[value]))
    assert list(attr["run_id"]) == [runs[value]]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_search_model_versions_finds_exactly_the_named_model(store, name):
    client, _, runs = store
    for flt in (equals("name", name), tag_equals("k", name), f"{equals('name', name)} and {tag_equals('k', name)}"):
        assert [(v.name, int(v.version)) for v in client.search_model_versions(flt)] == [(name, 1)], flt
    if name in runs:  # the versions made from this value's run, found by its id
        assert [v.name for v in client.search_model_versions(equals("run_id", runs[name]))] == [name]


def test_backslash_and_doubled_quotes_are_not_escapes(store):
    """Why a value holding both quotes is refused: MLflow cuts the quotes off and unescapes nothing, so the
    SQL-style and C-style spellings of it's find the look-alike runs, never the run tagged it's."""
    import mlflow

    _, exp, runs = store
    for spelled, found_instead in (("'it''s'", "it''s"), ("'it\\'s'", "it\\'s")):
        found = mlflow.search_runs([exp], filter_string=f"tags.`k` = {spelled}")
        assert list(found["run_id"]) == [runs[found_instead]]
