"""Which features the model leans on: LightGBM's gain importances, or permutation importance for
HistGradientBoosting, which has no built-in importances.

Both are taken from the holdout fit (the model the report scores), never the final refit, so that
permutation importance is measured on rows the model has not seen. Permutation importance is the rise in
holdout WAPE (in sales units) when one feature's column is shuffled, on a bounded random sample of the
holdout rows: its cost is features x repeats predictions of at most `PERMUTATION_ROWS` rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

PERMUTATION_ROWS: Final = 5_000
PERMUTATION_REPEATS: Final = 2
GAIN: Final = "gain"
PERMUTATION: Final = "permutation"
UNITS: Final = {
    GAIN: "share of the booster's total split gain",
    PERMUTATION: "rise in holdout WAPE when the feature is shuffled",
}


@dataclass(frozen=True)
class Importances:
    method: str
    names: tuple[str, ...]
    values: tuple[float, ...]
    rows: int | None = None  # holdout rows the permutation was measured on

    def top(self, n: int) -> list[tuple[str, float]]:
        """The `n` most important features, largest first (ties in feature order)."""
        order = np.argsort(-np.asarray(self.values), kind="stable")[:n]
        return [(self.names[i], self.values[i]) for i in order]

    def as_dict(self) -> dict[str, object]:
        return {
            "method": self.method,
            "unit": UNITS[self.method],
            "rows": self.rows,
            "features": dict(self.top(len(self.names))),
        }


def gain_importances(estimator: Any, names: list[str]) -> Importances:
    """A fitted LGBMRegressor's total gain per feature, as shares of the whole."""
    gain = np.asarray(estimator.booster_.feature_importance(importance_type="gain"), dtype=np.float64)
    total = gain.sum()
    shares = gain / total if total > 0 else gain
    return Importances(GAIN, tuple(names), tuple(float(v) for v in shares))


def permutation_importances(
    estimator: Any,
    features: npt.NDArray[np.float32],
    actual: npt.NDArray[np.float64],
    scale_index: int,
    names: list[str],
    seed: int,
    max_rows: int = PERMUTATION_ROWS,
) -> Importances:
    """scikit-learn's permutation importance scored by WAPE in sales units.

    The series scale is both a feature and the forecast's multiplier: the scorer multiplies by the
    unshuffled scale (carried in `y` next to the actuals), so shuffling `scale` measures what the trees
    make of it, not the damage of multiplying by another series' level.
    """
    from sklearn.inspection import permutation_importance  # noqa: PLC0415 - training-only dependency

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(actual), size=min(max_rows, len(actual)), replace=False))
    x = features[rows]
    y = np.column_stack([actual[rows], x[:, scale_index].astype(np.float64)])

    def negative_wape(model: Any, x_: npt.NDArray[np.float32], y_: npt.NDArray[np.float64]) -> float:
        predicted = np.maximum(np.asarray(model.predict(x_), dtype=np.float64), 0.0) * y_[:, 1]
        volume = float(np.abs(y_[:, 0]).sum())
        return -float(np.abs(predicted - y_[:, 0]).sum()) / volume if volume > 0 else 0.0

    result = permutation_importance(
        estimator, x, y, scoring=negative_wape, n_repeats=PERMUTATION_REPEATS, random_state=seed
    )
    return Importances(
        PERMUTATION, tuple(names), tuple(float(v) for v in result.importances_mean), rows=len(rows)
    )


def feature_importances(
    estimator: Any,
    features: npt.NDArray[np.float32],
    actual: npt.NDArray[np.float64],
    scale_index: int,
    names: list[str],
    seed: int,
) -> Importances:
    """Gain importances where the learner has them (LightGBM), permutation importances otherwise."""
    if hasattr(estimator, "booster_"):
        return gain_importances(estimator, names)
    return permutation_importances(estimator, features, actual, scale_index, names, seed)
