"""Per-group parameters (core/group_params.py) without Spark: what a tuned record overrides, the small sets the rows
index, per-group fingerprints and retrain decisions, and the fitting code using each group's own set."""
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from manymodels.core import group_params as G
from manymodels.core.estimators import params_json
from manymodels.core.fitting import fit_packed
from manymodels.core.retrain import DATA_FP, SPEC_FP, plan_retrain
from manymodels.core.spec import TrainSpec
from manymodels.errors import InputError


def test_overrides_keep_the_tuned_values_that_differ_but_not_seeds_or_objects():
    recorded = params_json(Ridge(alpha=0.01, random_state=123, max_iter=50))
    assert G.tuned_overrides(Ridge(max_iter=50), recorded) == {"alpha": 0.01}  # seed derived again, max_iter same
    assert G.tuned_overrides(Ridge(alpha=0.01), recorded) == {"max_iter": 50}  # over the configured parameters
    pipeline = make_pipeline(StandardScaler(), Ridge())
    assert G.tuned_overrides(pipeline, params_json(pipeline)) == {}  # steps are recorded as a repr, not a value


def test_a_record_of_another_estimator_is_refused_naming_the_parameters():
    with pytest.raises(InputError, match=r"'alpha'.*not parameters of LinearRegression.*another estimator"):
        G.tuned_overrides(LinearRegression(), params_json(Ridge(alpha=2.0)))


def test_attach_indexes_a_few_sets_and_matches_keys_by_canonical_text():
    stats = pd.DataFrame({"store": [1, 2, 3, 4], "count": [10, 10, 10, 10]})
    tuned = pd.DataFrame({"store": [1.0, 2.0, 3.0, 9.0],  # a double key column: 1.0 is the group 1
                          "params": [params_json(Ridge(alpha=a, random_state=s))
                                     for a, s in ((0.1, 5), (10.0, 6), (1.0, 7), (3.0, 8))]})
    out, sets = G.attach(stats, ["store"], Ridge(), tuned)
    assert [json.loads(t) for t in sets] == [{"alpha": 0.1}, {"alpha": 10.0}]
    # group 3's tuned alpha is the configured one (nothing to set); group 4 was not tuned
    assert out[G.GROUP_PARAMS_COL].tolist() == [0, 1, -1, -1]
    fps = G.group_fingerprints("base", out[G.GROUP_PARAMS_COL], sets)
    assert fps[2] == fps[3] == "base" and len({fps[0], fps[1], "base"}) == 3
    with pytest.raises(InputError, match="no column\\(s\\) 'item'"):
        G.attach(stats.assign(item=1), ["store", "item"], Ridge(), tuned)


def test_fit_packed_fits_each_group_with_its_own_set_and_records_it():
    rng = np.random.default_rng(0)
    pdf = pd.DataFrame({"g": np.repeat([1, 2, 3], 30), "x": rng.normal(size=90)})
    pdf["y"] = 2 * pdf["x"] + rng.normal(size=90)
    pdf[G.GROUP_PARAMS_COL] = np.repeat(np.array([0, 1, -1], dtype=np.int32), 30)
    spec = TrainSpec(group_cols=("g",), feature_cols=("x",), label_col="y", estimator=Ridge(alpha=2.0),
                     holdout_fraction=0.0, group_params=(json.dumps({"alpha": 0.5}), json.dumps({"alpha": 50.0})))
    rows = fit_packed(pdf, spec=spec).set_index("g")
    assert [json.loads(rows.loc[g, "params"])["alpha"] for g in (1, 2, 3)] == [0.5, 50.0, 2.0]
    assert (rows["status"] == "ok").all()


def _previous(fps):
    return pd.DataFrame({"g": [1, 2, 3], "status": "ok", DATA_FP: "d", SPEC_FP: fps, "training_run_id": "r0",
                         "carried_from": None})


def test_changed_retrains_exactly_the_groups_whose_own_fingerprint_changed():
    current = pd.DataFrame({"g": [1, 2, 3], "count": 5, DATA_FP: "d", SPEC_FP: ["a", "b2", "base"]})
    to_train, to_carry = plan_retrain(current, _previous(["a", "b", "base"]), ["g"], "changed", "base")
    assert to_train["g"].tolist() == [2] and to_carry["g"].tolist() == [1, 3]
    with pytest.raises(InputError, match=r"retrain='failed'.*1 group\(s\).*g=2"):
        plan_retrain(current, _previous(["a", "b", "base"]), ["g"], "failed", "base")
    to_train, _ = plan_retrain(current, _previous(["a", "b2", "base"]), ["g"], "failed", "base")
    assert to_train.empty
