"""Probabilistic forecasts: one quantile-loss gradient-boosting head per level, on the point model's rows.

Each head is a LightGBM `LGBMRegressor(objective="quantile")` fitted to the same scaled target as the
point model (sales / the series' recent level), so a head's output times the series scale is the
forecast at its level in sales units. Heads are fitted independently and may cross; the forecasts are
made monotone by a running maximum over the levels in increasing order (here and in the ONNX graph,
`export.append_quantile_outputs`), so P10 <= P50 <= P90 holds for every row whatever the trees say.

LightGBM rather than scikit-learn's `HistGradientBoostingRegressor(loss="quantile")` (the heads until
then): LightGBM sets each leaf to the level's quantile of the residuals in it rather than a gradient
step, and measured on the same rows it fits in half the time with the same pinball loss (README,
"Probabilistic forecasts").

Retail targets tie: many rows sell exactly 0. A pinball gradient is the same for a row on the prediction
as for one above it, so a head whose starting point (the level's quantile of all targets) sits on a mass
of zeros sees one gradient for every row, never splits, and stays at 0 for every series, busy ones
included (measured with scikit-learn's heads: the 0.1 head on synthetic weekly data, 14 % zeros, stopped
after 20 iterations at 0; LightGBM's pass the zero-mass test without the tie-break, which is kept as it
costs nothing and was not re-measured on data). Heads therefore fit `target - U[0, TIE_BREAK)`: ties are
broken, a level's quantile moves by less than TIE_BREAK (scaled units: a thousandth of the series'
level), and rows in the zero mass still forecast exactly 0 after the graph's clip.

Heads fit on a random subset of the training rows with fixed, cheaper parameters than the point model
(no search): a quantile needs fewer rows than the mean's best fit, and training time is budgeted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from retail_forecast.training.metrics import ForecastBlock, QuantileScores, quantile_scores
from retail_forecast.training.model import (
    VALIDATION_FRACTION,
    fit_lightgbm_early_stopping,
    training_threads,
)

DEFAULT_LEVELS: Final = (0.1, 0.5, 0.9)
TIE_BREAK: Final = 1e-3
# Fixed parameters of every head (no search: see the module docstring), in LightGBM's names.
HEAD_PARAMS: Final[dict[str, Any]] = {
    "learning_rate": 0.1,
    "num_leaves": 31,
    "min_child_samples": 100,
    "reg_lambda": 1.0,
    "n_estimators": 200,
}


def parse_levels(text: str) -> tuple[float, ...]:
    """`"0.1,0.5,0.9"` -> (0.1, 0.5, 0.9); `""` or `"none"` -> no quantiles. Raises ValueError."""
    if text.strip().lower() in {"", "none"}:
        return ()
    try:
        levels = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"quantiles {text!r}: give comma-separated levels such as 0.1,0.5,0.9") from None
    return check_levels(levels)


def check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    """Levels strictly between 0 and 1 with at most 3 decimals (they name outputs: `q0.025`), sorted."""
    for level in levels:
        if not 0 < level < 1 or round(level, 3) != level:
            raise ValueError(f"quantile level {level}: use a value between 0 and 1 with at most 3 decimals")
    if len(set(levels)) != len(levels):
        raise ValueError(f"quantile levels {list(levels)} repeat a level")
    return tuple(sorted(levels))


def fit_heads(
    levels: Sequence[float], features: npt.NDArray[np.float32], target: npt.NDArray[np.float64], seed: int
) -> list[Any]:
    """One fitted quantile head per level, in the order of `levels` (targets tie-broken: see above).

    Each stops early on a random tenth of the rows, as the point model's LightGBM fit does."""
    import lightgbm  # noqa: PLC0415 - training-only dependency

    rng = np.random.default_rng(seed)
    untied = target - rng.uniform(0.0, TIE_BREAK, len(target))
    held_out = rng.random(len(target)) < VALIDATION_FRACTION
    heads = []
    for level in levels:
        head = lightgbm.LGBMRegressor(
            objective="quantile",
            alpha=level,
            **HEAD_PARAMS,
            random_state=seed,
            n_jobs=training_threads(),
            verbose=-1,
        )
        heads.append(fit_lightgbm_early_stopping(head, features, untied, held_out))
    return heads


def monotone(quantiles: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Running maximum across the level columns: the rule the ONNX graph applies with Max nodes."""
    return np.maximum.accumulate(quantiles, axis=1)


def sklearn_quantiles(
    heads: Sequence[Any], features: npt.NDArray[np.float32], scale_index: int
) -> npt.NDArray[np.float64]:
    """What the graph's quantile outputs must compute, in scikit-learn: [N, Q] in sales units."""
    scale = features[:, scale_index].astype(np.float64)
    raw = np.column_stack([np.asarray(head.predict(features), dtype=np.float64) for head in heads])
    return monotone(np.maximum(raw, 0.0) * scale[:, None])


@dataclass(frozen=True)
class QuantileHoldout:
    """The heads' holdout: forecasts [N, Q] for the rows of the point model's holdout block, and scores;
    `point_scores` are those of the point forecast taken as every quantile, the reference the heads beat."""

    levels: tuple[float, ...]
    forecasts: npt.NDArray[np.float64]
    scores: QuantileScores
    point_scores: QuantileScores


def evaluate_heads(
    heads: Sequence[Any],
    levels: tuple[float, ...],
    features: npt.NDArray[np.float32],
    block: ForecastBlock,
    scale_index: int,
    pinball_scale: npt.NDArray[np.float64],
    horizon: int,
) -> QuantileHoldout:
    """Score the heads on the holdout rows (`features` aligned with `block`), as the graph serves them."""
    forecasts = sklearn_quantiles(heads, features, scale_index)
    point = np.repeat(block.predicted[:, None], len(levels), axis=1)
    return QuantileHoldout(
        levels,
        forecasts,
        quantile_scores(block, forecasts, levels, pinball_scale, horizon),
        quantile_scores(block, point, levels, pinball_scale, horizon),
    )
