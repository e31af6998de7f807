"""`forecast train`: rolling-origin search, holdout check against baselines, ONNX export, report.

Folds are forecast origins spaced one horizon apart at the end of the data. The last fold is the holdout:
it is never used to choose hyper-parameters, only to score the chosen model against the baselines and
to decide the promotion gate. The exported model is then refit on all data with the chosen parameters.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from retail_forecast.core import features as feat
from retail_forecast.core.data import DataReport, Panel
from retail_forecast.core.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    FeatureSchema,
    Golden,
    Manifest,
    TrainingData,
    sha256_bytes,
)
from retail_forecast.core.manifest import Scores as ManifestScores
from retail_forecast.core.schema import Freq
from retail_forecast.training import export, tracking
from retail_forecast.training.metrics import ForecastBlock, Scores, naive_scales, score, score_by_horizon
from retail_forecast.training.model import Params, fit, search_plan

IntArray = npt.NDArray[np.int64]
METRICS_FILE: Final = "metrics.json"
GOLDEN_TOLERANCE: Final = 1e-4
# A target above this multiple of its series' recent level is a regime change (a store reopening after a
# long closure), not demand the features can explain; capping it keeps one such row from dominating a
# log-link fit. Evaluation always uses the uncapped actuals.
TARGET_CAP: Final = 25.0
Progress = Callable[[str], None]


class GateError(RuntimeError):
    """The model did not beat seasonal naive by the required margin: it must not be promoted."""


class OutputExistsError(ValueError):
    """The output folder already holds a model."""


class NotEnoughDataError(ValueError):
    """Too little history for the requested horizon and folds."""


@dataclass(frozen=True)
class TrainConfig:
    horizon: int | None = None
    folds: int = 3
    trials: int = 8
    seed: int = 0
    name: str = "demand"
    version: str | None = None
    gate_margin: float = 0.05
    max_rows: int = 300_000
    # Search trials rank parameters on fewer rows than the holdout and final fits: ranking needs less
    # data than the best fit does, and the search is where the time goes.
    search_rows: int = 100_000
    fixed_params: Params = field(default_factory=dict)


@dataclass(frozen=True)
class Fold:
    origin: int

    def label(self, panel: Panel) -> str:
        return str(panel.dates[self.origin].date())


@dataclass
class Evaluation:
    model: Scores
    seasonal_naive: Scores
    moving_average: Scores
    by_horizon: dict[str, list[Scores]]
    block: ForecastBlock
    naive_block: ForecastBlock
    origin: int


@dataclass
class TrainResult:
    manifest: Manifest | None
    holdout: Evaluation
    validation_wape: float
    params: Params
    trials: list[dict[str, Any]]
    timings: dict[str, float]
    parity: export.Parity | None
    gate_passed: bool
    gate_message: str
    out: Path


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - started


def _now_version() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def plan_folds(panel: Panel, spec: feat.FeatureSpec, horizon: int, folds: int) -> list[Fold]:
    """Origins for `folds` folds (the last one is the holdout), one horizon apart, latest last."""
    if folds < 2:
        raise ValueError("--folds must be at least 2: one or more for the search, one holdout")
    last = panel.n_periods - 1
    origins = [last - horizon * (folds - k) for k in range(folds)]
    # Each fold also needs training rows before it: at least one horizon of targets after min_history.
    earliest = spec.min_history - 1 + horizon
    if origins[0] < earliest:
        needed = spec.min_history + horizon * (folds + 1)
        raise NotEnoughDataError(
            f"{panel.n_periods} periods are too few for horizon {horizon} with {folds} folds: "
            f"need at least {needed} ({spec.min_history} of history per origin, then one horizon of "
            f"training targets and {folds} evaluation horizons); lower --horizon or --folds"
        )
    return [Fold(o) for o in origins]


def default_horizon(panel: Panel, spec: feat.FeatureSpec, folds: int, progress: Progress) -> int:
    """The frequency's default horizon, or the longest that fits short data (said, never silent)."""
    wanted = panel.freq.default_horizon
    fits = (panel.n_periods - spec.min_history) // (folds + 1)
    if fits >= wanted or fits < 1:
        return wanted  # plan_folds explains data that is too short for any horizon
    progress(
        f"horizon: the default {wanted} needs {spec.min_history + wanted * (folds + 1)} periods with {folds} "
        f"folds; the data has {panel.n_periods}, so the horizon is {fits} (pass --horizon to choose)"
    )
    return fits


def training_rows(
    panel: Panel, valid: npt.NDArray[np.bool_], horizon: int, cutoff: int
) -> tuple[IntArray, IntArray, IntArray]:
    """All (series, origin, horizon) triples whose target is observed and at or before `cutoff`."""
    series, origin = np.nonzero(valid[:, :cutoff])
    parts = []
    for h in range(1, horizon + 1):
        keep = origin + h <= cutoff
        s, o = series[keep], origin[keep]
        keep = ~np.isnan(panel.sales[s, o + h])
        parts.append((s[keep], o[keep], np.full(int(keep.sum()), h)))
    return (
        np.concatenate([p[0] for p in parts]).astype(np.int64),
        np.concatenate([p[1] for p in parts]).astype(np.int64),
        np.concatenate([p[2] for p in parts]).astype(np.int64),
    )


def _sample(
    rows: tuple[IntArray, IntArray, IntArray], limit: int, rng: np.random.Generator
) -> tuple[IntArray, IntArray, IntArray]:
    """A random subset of at most `limit` rows, in random order (so any prefix is a random sample too)."""
    pick = rng.permutation(len(rows[0]))[:limit]
    return rows[0][pick], rows[1][pick], rows[2][pick]


def evaluation_rows(
    panel: Panel, valid: npt.NDArray[np.bool_], origin: int, horizon: int
) -> tuple[IntArray, IntArray, IntArray]:
    """Every series with full history at the origin, every horizon whose target is observed."""
    series = np.flatnonzero(valid[:, origin])
    s = np.repeat(series, horizon)
    h = np.tile(np.arange(1, horizon + 1), len(series))
    o = np.full(len(s), origin)
    keep = (o + h < panel.n_periods) & ~np.isnan(panel.sales[s, np.minimum(o + h, panel.n_periods - 1)])
    return s[keep].astype(np.int64), o[keep].astype(np.int64), h[keep].astype(np.int64)


class _Dataset:
    """Feature rows for a panel, built once and sliced per fold (the features of a row never change)."""

    def __init__(
        self, panel: Panel, spec: feat.FeatureSpec, rows: tuple[IntArray, IntArray, IntArray]
    ) -> None:
        self.series, self.origin, self.horizon = rows
        self.target_period = self.origin + self.horizon
        self.features = feat.build_features(panel, self.series, self.origin, self.horizon, spec)
        scale = self.features[:, spec.scale_index].astype(np.float64)
        self.actual = panel.sales[self.series, self.target_period]
        self.target = np.minimum(self.actual / scale, TARGET_CAP)

    def upto(
        self, cutoff: int, limit: int | None = None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
        """Rows whose target is at or before `cutoff`; the first `limit` of them (rows are shuffled)."""
        keep = np.flatnonzero(self.target_period <= cutoff)[:limit]
        return self.features[keep], self.target[keep]


def evaluate(
    panel: Panel,
    spec: feat.FeatureSpec,
    estimator: Any,
    *,
    valid: npt.NDArray[np.bool_],
    origin: int,
    horizon: int,
) -> Evaluation:
    series, origins, horizons = evaluation_rows(panel, valid, origin, horizon)
    if len(series) == 0:
        raise NotEnoughDataError(
            f"no series has {spec.min_history} periods of history at {panel.dates[origin].date()}"
        )
    x = feat.build_features(panel, series, origins, horizons, spec)
    actual = panel.sales[series, origins + horizons]
    predicted = export.sklearn_forecast(estimator, x, spec.scale_index)
    history = panel.sales[:, : origin + 1]
    mase_scale, rmsse_scale = naive_scales(history, panel.freq.season)
    block = ForecastBlock(series, horizons, actual, predicted)
    naive = ForecastBlock(series, horizons, actual, feat.seasonal_naive(panel, series, origins, horizons))
    average = ForecastBlock(series, horizons, actual, feat.moving_average(panel, series, origins, spec))
    return Evaluation(
        model=score(block, mase_scale, rmsse_scale),
        seasonal_naive=score(naive, mase_scale, rmsse_scale),
        moving_average=score(average, mase_scale, rmsse_scale),
        by_horizon={
            name: score_by_horizon(b, mase_scale, rmsse_scale, horizon)
            for name, b in (("model", block), ("seasonal_naive", naive), ("moving_average", average))
        },
        block=block,
        naive_block=naive,
        origin=origin,
    )


def train(
    panel: Panel,
    data_report: DataReport,
    out: Path,
    config: TrainConfig,
    progress: Progress = lambda message: print(message, file=sys.stderr, flush=True),
) -> TrainResult:
    """Search, check, export and report; raises `GateError` (after writing the report) on a failed gate."""
    stale = [out / name for name in (MODEL_FILE, MANIFEST_FILE) if (out / name).exists()]
    if stale:
        raise OutputExistsError(
            f"{out} already holds a model ({', '.join(p.name for p in stale)}); train into an empty folder "
            "so that a failed run can never leave an older model looking like its result"
        )
    timings: dict[str, float] = {}
    started = time.perf_counter()
    spec = feat.spec_for(panel.freq)
    horizon = config.horizon or default_horizon(panel, spec, config.folds, progress)
    if horizon < 1:
        raise ValueError("--horizon must be at least 1")
    folds = plan_folds(panel, spec, horizon, config.folds)
    valid = feat.valid_origins(panel, spec)
    rng = np.random.default_rng(config.seed)
    *search_folds, holdout = folds
    progress(
        f"data: {panel.n_series} series x {panel.n_periods} periods ({panel.freq.value}), horizon {horizon}, "
        f"{len(search_folds)} search fold(s) at {', '.join(f.label(panel) for f in search_folds)}, "
        f"holdout from {holdout.label(panel)}"
    )

    # One sample of rows serves every fit: rows whose target lies past a fold's origin are cut per fold.
    with _timed(timings, "features"):
        all_rows = training_rows(panel, valid, horizon, panel.n_periods - 1)
        if len(all_rows[0]) == 0:
            raise NotEnoughDataError(
                f"no series has {spec.min_history} periods of history before its last target"
            )
        dataset = _Dataset(panel, spec, _sample(all_rows, config.max_rows, rng))
    progress(
        f"features: {len(dataset.series)} training rows x {len(spec.names)} features "
        f"(of {len(all_rows[0])} possible) in {timings['features']:.1f}s"
    )

    with _timed(timings, "search"):
        trials, validation_wape, params = _search(
            panel,
            spec,
            dataset,
            valid=valid,
            folds=search_folds,
            horizon=horizon,
            config=config,
            progress=progress,
        )

    with _timed(timings, "holdout"):
        x, y = dataset.upto(holdout.origin)
        estimator = fit(params, x, y, config.seed)
        holdout_eval = evaluate(panel, spec, estimator, valid=valid, origin=holdout.origin, horizon=horizon)

    gate_passed, gate_message = promotion_gate(holdout_eval, config.gate_margin)
    progress(
        f"holdout: model wape {holdout_eval.model.wape:.4f}, "
        f"seasonal naive {holdout_eval.seasonal_naive.wape:.4f}, "
        f"moving average {holdout_eval.moving_average.wape:.4f}"
    )

    out.mkdir(parents=True, exist_ok=True)
    manifest: Manifest | None = None
    parity: export.Parity | None = None
    if gate_passed:
        with _timed(timings, "final_fit"):
            final = fit(params, dataset.features, dataset.target, config.seed)
        with _timed(timings, "export"):
            manifest, parity = _export(
                panel,
                spec,
                final,
                horizon=horizon,
                holdout=holdout_eval,
                params=params,
                config=config,
                out=out,
                dataset=dataset,
            )
        progress(
            f"export: {out / MODEL_FILE} (sha256 {manifest.sha256[:12]}…), parity max abs diff "
            f"{parity.max_abs_diff:.2e} over {parity.rows} rows"
        )
    timings["total"] = time.perf_counter() - started

    result = TrainResult(
        manifest=manifest,
        holdout=holdout_eval,
        validation_wape=validation_wape,
        params=params,
        trials=trials,
        timings=timings,
        parity=parity,
        gate_passed=gate_passed,
        gate_message=gate_message,
        out=out,
    )
    _write_metrics(result, horizon, panel, data_report)
    from retail_forecast.training.report import write_report  # noqa: PLC0415 - matplotlib is slow to import

    write_report(result, panel, data_report, horizon)
    if tracking.log_result(result):
        progress("tracking: logged parameters and metrics to MLflow")
    if not gate_passed:
        raise GateError(gate_message)
    return result


def _search(
    panel: Panel,
    spec: feat.FeatureSpec,
    dataset: _Dataset,
    *,
    valid: npt.NDArray[np.bool_],
    folds: list[Fold],
    horizon: int,
    config: TrainConfig,
    progress: Progress,
) -> tuple[list[dict[str, Any]], float, Params]:
    """Random search ranked by mean WAPE over the search folds; returns trials, best WAPE and params."""
    plan = search_plan(config.trials, config.seed, config.fixed_params)
    trials: list[dict[str, Any]] = []
    best: tuple[float, Params] | None = None
    for number, params in enumerate(plan, start=1):
        wapes = []
        for fold in folds:
            x, y = dataset.upto(fold.origin, config.search_rows)
            estimator = fit(params, x, y, config.seed)
            scores = evaluate(panel, spec, estimator, valid=valid, origin=fold.origin, horizon=horizon)
            wapes.append(scores.model.wape)
        mean_wape = float(np.mean(wapes))
        trials.append(
            {
                "trial": number,
                "params": params,
                "wape": _finite(mean_wape),
                "fold_wape": [_finite(w) for w in wapes],
            }
        )
        marker = ""
        if best is None or mean_wape < best[0]:
            best = (mean_wape, params)
            marker = "  <- best so far"
        progress(f"search: trial {number}/{len(plan)} wape {mean_wape:.4f} {_describe(params)}{marker}")
    assert best is not None
    return trials, best[0], best[1]


def promotion_gate(evaluation: Evaluation, margin: float) -> tuple[bool, str]:
    model, naive = evaluation.model.wape, evaluation.seasonal_naive.wape
    threshold = (1.0 - margin) * naive
    improvement = 1.0 - model / naive if naive > 0 else float("nan")
    if model <= threshold:
        return True, (
            f"promotion gate passed: holdout WAPE {model:.4f} is {improvement:.1%} below seasonal "
            f"naive {naive:.4f} (required: at least {margin:.1%})"
        )
    return False, (
        f"promotion gate failed: holdout WAPE {model:.4f} vs seasonal naive {naive:.4f} "
        f"({improvement:.1%} better; required: at least {margin:.1%}, i.e. WAPE <= {threshold:.4f})"
    )


def _describe(params: Params) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _export(
    panel: Panel,
    spec: feat.FeatureSpec,
    estimator: Any,
    *,
    horizon: int,
    holdout: Evaluation,
    params: Params,
    config: TrainConfig,
    out: Path,
    dataset: _Dataset,
) -> tuple[Manifest, export.Parity]:
    model = export.to_onnx_model(estimator, len(spec.names), spec.scale_index)
    model_bytes = model.SerializeToString()
    session = export.onnx_session(model_bytes)
    # Parity on rows the model has not seen (the holdout's) and on a slice of its training rows.
    held_out = feat.build_features(
        panel,
        holdout.block.series,
        np.full(len(holdout.block.series), holdout.origin),
        holdout.block.horizon,
        spec,
    )
    rng = np.random.default_rng(config.seed)
    seen = dataset.features[
        rng.choice(len(dataset.features), size=min(5000, len(dataset.features)), replace=False)
    ]
    parity_rows = np.concatenate([held_out, seen])
    parity = export.check_parity(session, estimator, parity_rows, spec.scale_index)
    golden_inputs, golden_outputs = export.golden_sample(session, held_out, seed=config.seed)

    (out / MODEL_FILE).write_bytes(model_bytes)
    manifest = Manifest(
        name=config.name,
        version=config.version or _now_version(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        sha256=sha256_bytes(model_bytes),
        onnx_opset=export.ONNX_OPSET,
        freq=panel.freq.value,
        horizon=horizon,
        min_history=spec.min_history,
        features=FeatureSchema(spec_version=feat.SPEC_VERSION, names=spec.names),
        metrics={
            "model": _manifest_scores(holdout.model),
            "seasonal_naive": _manifest_scores(holdout.seasonal_naive),
            "moving_average": _manifest_scores(holdout.moving_average),
        },
        metrics_by_horizon={k: [_manifest_scores(s) for s in v] for k, v in holdout.by_horizon.items()},
        golden=Golden(inputs=golden_inputs, outputs=golden_outputs, tolerance=GOLDEN_TOLERANCE),
        training_data=TrainingData(
            fingerprint=panel.fingerprint(),
            rows=int(np.count_nonzero(~np.isnan(panel.sales))),
            series=panel.n_series,
            start=str(panel.dates[0].date()),
            end=str(panel.dates[-1].date()),
        ),
        library_versions=_library_versions(),
        params=params,
    )
    (out / MANIFEST_FILE).write_text(manifest.to_json())
    return manifest, parity


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else value


def _manifest_scores(scores: Scores) -> ManifestScores:
    return ManifestScores(**scores.as_dict())


def _library_versions() -> dict[str, str]:
    from importlib.metadata import version  # noqa: PLC0415

    names = ["retail-forecast", "numpy", "pandas", "scikit-learn", "skl2onnx", "onnx", "onnxruntime"]
    return {"python": platform.python_version(), **{name: version(name) for name in names}}


def _write_metrics(result: TrainResult, horizon: int, panel: Panel, data_report: DataReport) -> None:
    holdout = result.holdout
    payload = {
        "horizon": horizon,
        "freq": panel.freq.value,
        "holdout_origin": str(panel.dates[holdout.origin].date()),
        "model": holdout.model.as_dict(),
        "seasonal_naive": holdout.seasonal_naive.as_dict(),
        "moving_average": holdout.moving_average.as_dict(),
        "by_horizon": {k: [s.as_dict() for s in v] for k, v in holdout.by_horizon.items()},
        "validation_wape": _finite(result.validation_wape),
        "params": result.params,
        "trials": result.trials,
        "gate": {"passed": result.gate_passed, "message": result.gate_message},
        "parity": None if result.parity is None else vars(result.parity),
        "timings_seconds": result.timings,
        "data": data_report.lines(),
    }
    (result.out / METRICS_FILE).write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")


def freq_of(value: str | None) -> Freq | None:
    return None if value is None else Freq(value)
