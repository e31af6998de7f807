from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from retail_forecast.training.importance import (
    GAIN,
    PERMUTATION,
    Importances,
    feature_importances,
    permutation_importances,
)
from retail_forecast.training.model import DEFAULT_PARAMS, HIST_GRADIENT_BOOSTING, LIGHTGBM, fit

NAMES = ["scale", "signal", "noise"]
SCALE = 0


def rows(n: int, seed: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """Features [scale, signal, noise] and a scaled target driven by `signal` alone."""
    rng = np.random.default_rng(seed)
    features = np.column_stack(
        [rng.uniform(1.0, 50.0, n), rng.uniform(0.0, 4.0, n), rng.uniform(0.0, 4.0, n)]
    ).astype(np.float32)
    target = 0.5 + features[:, 1].astype(np.float64)
    return features, target


def small(learner: str) -> dict[str, float | int | str | None]:
    return {**DEFAULT_PARAMS[learner], "max_iter": 60, "max_leaf_nodes": 15}


def test_lightgbm_gets_gain_shares_led_by_the_driving_feature() -> None:
    features, target = rows(4000, seed=1)
    estimator = fit(small(LIGHTGBM), features, target, seed=0)
    actual = target * features[:, SCALE]
    importances = feature_importances(estimator, features, actual, SCALE, NAMES, seed=0)
    assert importances.method == GAIN
    assert importances.rows is None
    assert sum(importances.values) == pytest.approx(1.0)
    assert importances.top(1) == [("signal", max(importances.values))]
    assert dict(importances.top(3))["signal"] > 0.9


def test_hist_gradient_boosting_gets_permutation_importance_in_wape() -> None:
    features, target = rows(4000, seed=2)
    estimator = fit(small(HIST_GRADIENT_BOOSTING), features, target, seed=0)
    actual = target * features[:, SCALE]
    importances = feature_importances(estimator, features, actual, SCALE, NAMES, seed=0)
    assert importances.method == PERMUTATION
    values = dict(zip(importances.names, importances.values, strict=True))
    assert importances.top(1)[0][0] == "signal"
    assert values["signal"] > 0.3  # shuffling the only signal costs a large share of the volume
    # the scorer multiplies by each row's own scale: shuffling the scale column only changes what the
    # trees read from it (nothing here), never the multiplier
    assert abs(values["scale"]) < 0.02
    assert abs(values["noise"]) < 0.02


def test_permutation_importance_reads_a_bounded_sample() -> None:
    features, target = rows(3000, seed=3)
    estimator = fit(small(HIST_GRADIENT_BOOSTING), features, target, seed=0)
    actual = target * features[:, SCALE]
    importances = permutation_importances(estimator, features, actual, SCALE, NAMES, seed=0, max_rows=500)
    assert importances.rows == 500


def test_top_and_json_form() -> None:
    importances = Importances(PERMUTATION, ("a", "b", "c"), (0.1, 0.3, 0.1), rows=10)
    assert importances.top(2) == [("b", 0.3), ("a", 0.1)]
    assert importances.as_dict() == {
        "method": "permutation",
        "unit": "rise in holdout WAPE when the feature is shuffled",
        "rows": 10,
        "features": {"b": 0.3, "a": 0.1, "c": 0.1},
    }
