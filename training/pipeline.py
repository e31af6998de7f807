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

from retail_forecast.core import drift
from retail_forecast.core import features as feat
from retail_forecast.core.data import DataReport, Panel
from retail_forecast.core.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    FeatureSchema,
    Golden,
    Manifest,
    QuantileOutput,
    Quantiles,
    TrainingData,
    quantile_output_name,
    sha256_bytes,
)
from retail_forecast.core.manifest import QuantileScores as ManifestQuantileScores
from retail_forecast.core.manifest import Scores as ManifestScores
from retail_forecast.core.schema import Freq
from retail_forecast.training import export, selection, tracking
from retail_forecast.training import importance as importance_
from retail_forecast.training import quantiles as quantiles_
from retail_forecast.training import rows as rows_
from retail_forecast.training.metrics import (
    ForecastBlock,
    Scores,
    VolumeBand,
    naive_scales,
    pinball_scales,
    score,
    score_by_horizon,
    score_by_volume,
)
from retail_forecast.training.model import Params, fit, fitted_rounds, search_plan, training_threads

IntArray = npt.NDArray[np.int64]
METRICS_FILE: Final = "metrics.json"
GOLDEN_TOLERANCE: Final = 1e-4
# A target above this multiple of its series' recent level is a regime change (a store reopening after a
# long closure), not demand the features can explain; capping it keeps one such row from dominating a
# log-link fit. Evaluation always uses the uncapped actuals.
TARGET_CAP: Final = 25.0
Progress = Callable[[str], None]
DEFAULT_MEMORY_BUDGET_GIB: Final = 2.0
SEARCH_SHARE: Final = 10
SEARCH_FLOOR: Final = 100_000
# ONNX parity and the golden sample are checked on at most this many random holdout rows (plus 5,000 seen
# rows): a tree-conversion error shows on far fewer rows, and 30,000 series have 840,000 holdout rows.
PARITY_HOLDOUT_ROWS: Final = 100_000


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
    # Training rows: as many as the memory budget holds (training/rows.py states the rule), or fewer
    # when `max_rows` says so.
    memory_budget_gib: float = DEFAULT_MEMORY_BUDGET_GIB
    max_rows: int | None = None
    # Search trials rank parameters on fewer rows than the holdout and final fits: ranking needs less
    # data than the best fit does. Default: a tenth of the training rows, at least SEARCH_FLOOR.
    search_rows: int | None = None
    # Search folds are scored on a random sample of at most this many series (the holdout on all).
    search_series: int = rows_.SEARCH_SERIES
    # A trial replaces the defaults only when ahead of them by more than this many standard errors of the
    # paired per-series difference (training/selection.py).
    search_noise: float = selection.NOISE_MULTIPLE
    fixed_params: Params = field(default_factory=dict)
    # Quantile heads (training/quantiles.py): the levels, () for none, and the rows each head fits on
    # (default: as many as a search trial).
    quantiles: tuple[float, ...] = quantiles_.DEFAULT_LEVELS
    quantile_rows: int | None = None


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
    cpu_timings: dict[str, float]
    parity: export.Parity | None
    gate_passed: bool
    gate_message: str
    out: Path
    rows: rows_.RowPlan
    training_rows: int
    search_rows: int
    # How the search chose `params` among its trials (training/selection.py).
    search: selection.Choice
    quantiles: quantiles_.QuantileHoldout | None = None
    quantile_parity: export.Parity | None = None
    # The report's extra views: every fold's evaluation (the search folds' by the chosen parameters,
    # then the holdout), the holdout by volume band, and the holdout fit's feature importances.
    backtest: list[Evaluation] = field(default_factory=list)
    volume_bands: list[VolumeBand] = field(default_factory=list)
    importances: importance_.Importances | None = None


@contextmanager
def _timed(timings: dict[str, float], cpu_timings: dict[str, float], name: str) -> Iterator[None]:
    """Wall and CPU seconds of a stage: on a shared host only the CPU seconds say what the stage costs."""
    started, started_cpu = time.perf_counter(), time.process_time()
    yield
    timings[name] = time.perf_counter() - started
    cpu_timings[name] = time.process_time() - started_cpu


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


def evaluation_rows(
    panel: Panel, valid: npt.NDArray[np.bool_], origin: int, horizon: int, among: IntArray | None = None
) -> tuple[IntArray, IntArray, IntArray]:
    """Every series (of `among`, if given) with full history at the origin, every horizon whose target
    is observed."""
    series = np.flatnonzero(valid[:, origin])
    if among is not None:
        series = series[np.isin(series, among)]
    s = np.repeat(series, horizon)
    h = np.tile(np.arange(1, horizon + 1), len(series))
    o = np.full(len(s), origin)
    keep = (o + h < panel.n_periods) & ~np.isnan(panel.sales[s, np.minimum(o + h, panel.n_periods - 1)])
    return s[keep].astype(np.int64), o[keep].astype(np.int64), h[keep].astype(np.int64)


class _Dataset:
    """Training rows and their features, built once and sliced per fold (the features of a row never change).

    Rows are stored grouped by series (as they were drawn); `order` is one random permutation of them, so
    that any prefix of a fold's rows in that order is a random sample of the fold's rows.
    """

    def __init__(
        self, panel: Panel, spec: feat.FeatureSpec, rows: rows_.Rows, rng: np.random.Generator
    ) -> None:
        self.series, self.origin, self.horizon = rows
        self.target_period = self.origin + self.horizon
        self.features = rows_.build_features(panel, rows, spec)
        scale = self.features[:, spec.scale_index].astype(np.float64)
        self.actual = panel.sales[self.series, self.target_period]
        self.target = np.minimum(self.actual / scale, TARGET_CAP)
        self.order = rng.permutation(len(self.series))

    def upto(
        self, cutoff: int, limit: int | None = None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
        """Rows whose target is at or before `cutoff`: all of them, or a random `limit` of them."""
        if limit is None and bool(np.all(self.target_period <= cutoff)):
            return self.features, self.target  # no copy: the fit shuffles its own validation split
        keep = self.order[self.target_period[self.order] <= cutoff][:limit]
        keep.sort()  # reading rows in storage order is faster and the fit does not depend on order
        return self.features[keep], self.target[keep]


@dataclass(frozen=True)
class EvaluationRows:
    """One origin's evaluation rows, features, actuals and baselines: built once, scored by every trial."""

    origin: int
    series: IntArray
    horizon: IntArray
    features: npt.NDArray[np.float32]
    actual: npt.NDArray[np.float64]
    seasonal_naive: npt.NDArray[np.float64]
    moving_average: npt.NDArray[np.float64]
    mase_scale: npt.NDArray[np.float64]
    rmsse_scale: npt.NDArray[np.float64]

    @classmethod
    def at(
        cls,
        panel: Panel,
        spec: feat.FeatureSpec,
        valid: npt.NDArray[np.bool_],
        origin: int,
        horizon: int,
        among: IntArray | None = None,
    ) -> EvaluationRows:
        series, origins, horizons = evaluation_rows(panel, valid, origin, horizon, among)
        if len(series) == 0:
            raise NotEnoughDataError(
                f"no series has {spec.min_history} periods of history at {panel.dates[origin].date()}"
            )
        mase_scale, rmsse_scale = naive_scales(panel.sales[:, : origin + 1], panel.freq.season)
        return cls(
            origin=origin,
            series=series,
            horizon=horizons,
            features=rows_.build_features(panel, (series, origins, horizons), spec),
            actual=panel.sales[series, origins + horizons],
            seasonal_naive=feat.seasonal_naive(panel, series, origins, horizons),
            moving_average=feat.moving_average(panel, series, origins, spec),
            mase_scale=mase_scale,
            rmsse_scale=rmsse_scale,
        )


def evaluate(spec: feat.FeatureSpec, estimator: Any, rows: EvaluationRows, horizon: int) -> Evaluation:
    """Score the estimator and both baselines on one origin's rows."""
    predicted = export.sklearn_forecast(estimator, rows.features, spec.scale_index)
    blocks = {
        name: ForecastBlock(rows.series, rows.horizon, rows.actual, values)
        for name, values in (
            ("model", predicted),
            ("seasonal_naive", rows.seasonal_naive),
            ("moving_average", rows.moving_average),
        )
    }
    scales = rows.mase_scale, rows.rmsse_scale
    return Evaluation(
        model=score(blocks["model"], *scales),
        seasonal_naive=score(blocks["seasonal_naive"], *scales),
        moving_average=score(blocks["moving_average"], *scales),
        by_horizon={name: score_by_horizon(block, *scales, horizon) for name, block in blocks.items()},
        block=blocks["model"],
        naive_block=blocks["seasonal_naive"],
        origin=rows.origin,
    )


def train(
    panel: Panel,
    data_report: DataReport,
    out: Path,
    config: TrainConfig,
    progress: Progress = lambda message: print(message, file=sys.stderr, flush=True),
) -> TrainResult:
    """Search, check, export and report; raises `GateError` (after writing the report) on a failed gate.

    Every fit and prediction runs on `training_threads()` OpenMP threads.
    """
    from threadpoolctl import threadpool_limits  # noqa: PLC0415 - training-only dependency

    threads = training_threads()
    with threadpool_limits(limits=threads, user_api="openmp"):
        progress(f"threads: {threads} (CPU affinity, cgroup quota, OMP_NUM_THREADS)")
        return _train(panel, data_report, out, config, progress)


def _train(
    panel: Panel, data_report: DataReport, out: Path, config: TrainConfig, progress: Progress
) -> TrainResult:
    stale = [out / name for name in (MODEL_FILE, MANIFEST_FILE) if (out / name).exists()]
    if stale:
        raise OutputExistsError(
            f"{out} already holds a model ({', '.join(p.name for p in stale)}); train into an empty folder "
            "so that a failed run can never leave an older model looking like its result"
        )
    timings: dict[str, float] = {}
    cpu_timings: dict[str, float] = {}
    started, started_cpu = time.perf_counter(), time.process_time()
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
    with _timed(timings, cpu_timings, "features"):
        last = panel.n_periods - 1
        row_plan = rows_.plan_rows(
            rows_.count_rows(panel, valid, horizon, last),
            int(np.count_nonzero(~np.isnan(panel.sales))),
            int(config.memory_budget_gib * 2**30),
            len(spec.names),
            config.max_rows,
        )
        if row_plan.possible == 0:
            raise NotEnoughDataError(
                f"no series has {spec.min_history} periods of history before its last target"
            )
        drawn = rows_.draw_rows(panel, valid, horizon, last, row_plan.keep, rng)
        dataset = _Dataset(panel, spec, drawn, rng)
        scored = rows_.sample_series(panel.n_series, config.search_series, config.seed)
        evaluation_sets = {
            fold.origin: EvaluationRows.at(
                panel, spec, valid, fold.origin, horizon, None if fold is holdout else scored
            )
            for fold in folds
        }
    search_rows = config.search_rows or max(
        len(dataset.series) // SEARCH_SHARE, min(SEARCH_FLOOR, row_plan.rows)
    )
    progress(
        f"features: {row_plan.describe()} x {len(spec.names)} features in {timings['features']:.1f}s; "
        f"search trials fit on {min(search_rows, len(dataset.series))} of them and are scored on "
        f"{panel.n_series if scored is None else len(scored)} series"
    )

    with _timed(timings, cpu_timings, "search"):
        trials, validation_wape, params, search_evaluations, search_choice = _search(
            spec,
            dataset,
            [evaluation_sets[fold.origin] for fold in search_folds],
            horizon=horizon,
            search_rows=search_rows,
            config=config,
            progress=progress,
        )

    with _timed(timings, cpu_timings, "holdout"):
        x, y = dataset.upto(holdout.origin)
        estimator = fit(params, x, y, config.seed)
        del x, y
        holdout_eval = evaluate(spec, estimator, evaluation_sets[holdout.origin], horizon)
    with _timed(timings, cpu_timings, "importances"):
        holdout_rows = evaluation_sets[holdout.origin]
        importances = importance_.feature_importances(
            estimator, holdout_rows.features, holdout_rows.actual, spec.scale_index, spec.names, config.seed
        )
    levels = quantiles_.check_levels(config.quantiles)
    quantile_rows = config.quantile_rows or search_rows
    quantile_holdout: quantiles_.QuantileHoldout | None = None
    if levels:
        with _timed(timings, cpu_timings, "quantiles_holdout"):
            x, y = dataset.upto(holdout.origin, quantile_rows)
            heads = quantiles_.fit_heads(levels, x, y, config.seed)
            del x, y
            quantile_holdout = quantiles_.evaluate_heads(
                heads,
                levels,
                evaluation_sets[holdout.origin].features,
                holdout_eval.block,
                spec.scale_index,
                pinball_scales(panel.sales[:, : holdout.origin + 1]),
                horizon,
            )
        q_scores = quantile_holdout.scores
        progress(
            f"quantiles: {', '.join(quantile_output_name(q) for q in levels)} on "
            f"{min(quantile_rows, len(dataset.series))} rows in {timings['quantiles_holdout']:.1f}s; holdout "
            f"scaled pinball {q_scores.scaled_pinball:.4f}, coverage of [{levels[0]:g}, {levels[-1]:g}] "
            f"{q_scores.coverage:.3f}, {q_scores.open_coverage:.3f} without its ends "
            f"(nominal {levels[-1] - levels[0]:.2f})"
        )

    gate_passed, gate_message = promotion_gate(holdout_eval, config.gate_margin)
    progress(
        f"holdout: model wape {holdout_eval.model.wape:.4f}, "
        f"seasonal naive {holdout_eval.seasonal_naive.wape:.4f}, "
        f"moving average {holdout_eval.moving_average.wape:.4f}"
    )

    out.mkdir(parents=True, exist_ok=True)
    manifest: Manifest | None = None
    parity: export.Parity | None = None
    quantile_parity: export.Parity | None = None
    if gate_passed:
        with _timed(timings, cpu_timings, "final_fit"):
            # as many rounds as the holdout fit stopped at: no second early-stopping split
            final = fit(
                params, dataset.features, dataset.target, config.seed, rounds=fitted_rounds(estimator)
            )
        final_heads: list[Any] = []
        if quantile_holdout is not None:
            with _timed(timings, cpu_timings, "quantiles_final"):
                x, y = dataset.upto(panel.n_periods - 1, quantile_rows)
                final_heads = quantiles_.fit_heads(levels, x, y, config.seed)
                del x, y
        with _timed(timings, cpu_timings, "export"):
            manifest, parity, quantile_parity = _export(
                panel,
                spec,
                final,
                horizon=horizon,
                holdout=holdout_eval,
                heads=final_heads,
                quantile_holdout=quantile_holdout,
                holdout_features=evaluation_sets[holdout.origin].features,
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
    cpu_timings["total"] = time.process_time() - started_cpu

    result = TrainResult(
        manifest=manifest,
        holdout=holdout_eval,
        validation_wape=validation_wape,
        search=search_choice,
        params=params,
        trials=trials,
        timings=timings,
        cpu_timings=cpu_timings,
        parity=parity,
        gate_passed=gate_passed,
        gate_message=gate_message,
        out=out,
        rows=row_plan,
        training_rows=len(dataset.series),
        search_rows=min(search_rows, len(dataset.series)),
        quantiles=quantile_holdout,
        quantile_parity=quantile_parity,
        backtest=[*search_evaluations, holdout_eval],
        volume_bands=score_by_volume(
            {"model": holdout_eval.block, "seasonal_naive": holdout_eval.naive_block},
            panel.sales[:, : holdout.origin + 1],
            panel.freq.season,
        ),
        importances=importances,
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
    spec: feat.FeatureSpec,
    dataset: _Dataset,
    folds: list[EvaluationRows],
    *,
    horizon: int,
    search_rows: int,
    config: TrainConfig,
    progress: Progress,
) -> tuple[list[dict[str, Any]], float, Params, list[Evaluation], selection.Choice]:
    """Random search over the search folds, the winner chosen by `selection.choose` (the defaults unless
    a trial beats them by more than the folds' noise); returns trials, the winner's mean WAPE, params
    and fold evaluations, and the choice."""
    plan = search_plan(config.trials, config.seed, config.fixed_params)
    trials: list[dict[str, Any]] = []
    evaluated: list[list[Evaluation]] = []
    mean_wapes: list[float] = []
    for number, params in enumerate(plan, start=1):
        evaluations = []
        for fold in folds:
            x, y = dataset.upto(fold.origin, search_rows)
            estimator = fit(params, x, y, config.seed)
            evaluations.append(evaluate(spec, estimator, fold, horizon))
        wapes = [e.model.wape for e in evaluations]
        mean_wape = float(np.mean(wapes))
        trials.append(
            {
                "trial": number,
                "params": params,
                "wape": _finite(mean_wape),
                "fold_wape": [_finite(w) for w in wapes],
            }
        )
        evaluated.append(evaluations)
        mean_wapes.append(mean_wape)
        progress(f"search: trial {number}/{len(plan)} wape {mean_wape:.4f} {_describe(params)}")
    choice = selection.choose(
        [selection.series_contributions([e.block for e in evaluations]) for evaluations in evaluated],
        config.search_noise,
    )
    for k, trial in enumerate(trials):
        comparison = choice.comparisons[k]
        trial["ahead_of_defaults"] = _finite(comparison.advantage)
        trial["noise"] = choice.noise(k) if np.isfinite(choice.noise(k)) else None
        trial["chosen"] = k == choice.winner
    progress(f"search: {choice.message()}")
    won = choice.winner
    return trials, mean_wapes[won], plan[won], evaluated[won], choice


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
    heads: list[Any],
    quantile_holdout: quantiles_.QuantileHoldout | None,
    holdout_features: npt.NDArray[np.float32],
    params: Params,
    config: TrainConfig,
    out: Path,
    dataset: _Dataset,
) -> tuple[Manifest, export.Parity, export.Parity | None]:
    model = export.to_onnx_model(estimator, len(spec.names), spec.scale_index)
    levels = quantile_holdout.levels if quantile_holdout is not None else ()
    if heads:
        model = export.append_quantile_outputs(model, heads, levels, spec.scale_index)
    model_bytes = model.SerializeToString()
    session = export.onnx_session(model_bytes)
    # Parity on rows the model has not seen (the holdout's) and on a slice of its training rows.
    rng = np.random.default_rng(config.seed)
    held_out = holdout_features
    if len(held_out) > PARITY_HOLDOUT_ROWS:
        held_out = held_out[np.sort(rng.choice(len(held_out), size=PARITY_HOLDOUT_ROWS, replace=False))]
    seen = dataset.features[
        rng.choice(len(dataset.features), size=min(5000, len(dataset.features)), replace=False)
    ]
    parity_rows = np.concatenate([held_out, seen])
    parity = export.check_parity(session, estimator, parity_rows, spec.scale_index)
    golden_inputs, golden_outputs = export.golden_sample(session, held_out, seed=config.seed)
    quantile_parity: export.Parity | None = None
    quantiles: Quantiles | None = None
    if heads and quantile_holdout is not None:
        quantile_parity = export.check_quantile_parity(session, heads, levels, parity_rows, spec.scale_index)
        golden_quantiles = export.run_quantiles(session, np.asarray(golden_inputs, dtype=np.float32), levels)
        quantiles = Quantiles(
            outputs=[
                QuantileOutput(
                    level=level, output=quantile_output_name(level), golden=golden_quantiles[:, k].tolist()
                )
                for k, level in enumerate(levels)
            ],
            metrics=_manifest_quantile_scores(quantile_holdout),
        )

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
        quantiles=quantiles,
        # the training rows' distribution, from a random sample of them (`order` is a permutation)
        drift_reference=drift.reference_of(
            dataset.features[np.sort(dataset.order[: drift.REFERENCE_ROWS])], spec.names
        ),
    )
    (out / MANIFEST_FILE).write_text(manifest.to_json())
    return manifest, parity, quantile_parity


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else value


def _manifest_scores(scores: Scores) -> ManifestScores:
    return ManifestScores(**scores.as_dict())


def _manifest_quantile_scores(holdout: quantiles_.QuantileHoldout) -> ManifestQuantileScores:
    scores = holdout.scores
    return ManifestQuantileScores(
        scaled_pinball=_finite(scores.scaled_pinball),
        pinball_by_level={quantile_output_name(q): _finite(v) for q, v in scores.pinball_by_level.items()},
        interval=(holdout.levels[0], holdout.levels[-1]),
        coverage=_finite(scores.coverage),
        coverage_by_horizon=[_finite(c) for c in scores.coverage_by_horizon],
    )


def _library_versions() -> dict[str, str]:
    from importlib.metadata import version  # noqa: PLC0415

    names = ["retail-forecast", "numpy", "pandas", "scikit-learn", "skl2onnx", "onnx", "onnxruntime"]
    names += ["lightgbm", "onnxmltools"]
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
        "search": {
            "winner": result.search.winner + 1,
            "best": result.search.best + 1,
            "defaults_kept": result.search.defaults_kept,
            "noise_multiple": result.search.multiple,
            "message": result.search.message(),
        },
        "gate": {"passed": result.gate_passed, "message": result.gate_message},
        "parity": None if result.parity is None else vars(result.parity),
        "quantiles": None
        if result.quantiles is None
        else {
            **_manifest_quantile_scores(result.quantiles).model_dump(),
            "point_scaled_pinball": _finite(result.quantiles.point_scores.scaled_pinball),
            "open_coverage": _finite(result.quantiles.scores.open_coverage),
            "share_below": {f"{q:g}": _finite(v) for q, v in result.quantiles.scores.share_below.items()},
            "share_at_or_below": {
                f"{q:g}": _finite(v) for q, v in result.quantiles.scores.share_at_or_below.items()
            },
            "parity": None if result.quantile_parity is None else vars(result.quantile_parity),
        },
        "rows": {
            "possible": result.rows.possible,
            "observed_sales": result.rows.observed,
            "memory_budget": result.rows.budget,
            "limit": result.rows.limit,
            "planned": result.rows.rows,
            "drawn": result.training_rows,
            "search": result.search_rows,
        },
        "backtest": [
            {
                "origin": str(panel.dates[e.origin].date()),
                "holdout": e is holdout,
                **{
                    name: getattr(e, name).as_dict() for name in ("model", "seasonal_naive", "moving_average")
                },
            }
            for e in result.backtest
        ],
        "volume_bands": [band.as_dict() for band in result.volume_bands],
        "feature_importances": None if result.importances is None else result.importances.as_dict(),
        "timings_seconds": result.timings,
        "cpu_seconds": result.cpu_timings,
        "data": data_report.lines(),
    }
    (result.out / METRICS_FILE).write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")


def freq_of(value: str | None) -> Freq | None:
    return None if value is None else Freq(value)
