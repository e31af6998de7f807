"""Accuracy on real retail data: `forecast train` against statistical baselines over rolling origins.

For every real dataset found under FORECAST_DATASETS (docs/DATASETS.md; a missing one is skipped and
said), the last `--origins` forecast origins, one horizon apart, are each scored as a user would meet
them: the data is cut after the origin's horizon and the training pipeline (`training.pipeline.train`:
search, holdout fit, ONNX export) runs on it, so its holdout is exactly that origin and nothing after it
is seen. On the same rows (every series with full history at the origin, every horizon with an observed
target) the benchmark scores seasonal naive and moving average (the pipeline's own baselines), ETS and
Theta (statsforecast's AutoETS and AutoTheta, fitted per series on the year up to the origin,
negative forecasts clipped to 0) and each learner the pipeline can use. WAPE and bias are pooled over
all origins; MASE averages every (series, origin) pair (training/metrics.py).

The promotion gate is off here (a losing origin is measured, not refused). `--quick` (the test's mode)
samples a few series per dataset and runs forecast train's learner alone, one search trial of few
rounds on a small row budget, its median head alone: a smoke test, not a measurement. The pipeline's
median head (output q0.5 of the same model) is scored too, as a point forecast.

`--seeds 0,1,2` trains every learner once per seed (search draws, row samples, early-stopping splits) on
the same folds and prints the mean over seeds with the range of their WAPE against seasonal naive: on
the M5 samples one seed moves it by about 2 points, more than most changes worth measuring.

    python -m benchmarks.accuracy [--quick] [--origins 3] [--trials N] [--folds 3] [--max-series N]
        [--max-rows N] [--datasets a,b] [--learners lightgbm,hist_gradient_boosting] [--seeds 0,1,2]
        [--json PATH]

Targets (issue #11): WAPE at least 25 % below seasonal naive on every real dataset, and below each
statistical baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from retail_forecast.core import features as feat
from retail_forecast.core.data import DataReport, Panel, build_panel, read_sales, validate_sales
from retail_forecast.core.m5 import load_m5
from retail_forecast.training.metrics import ForecastBlock, Scores, score
from retail_forecast.training.model import (
    DEFAULT_LEARNER,
    HIST_GRADIENT_BOOSTING,
    LIGHTGBM,
    training_threads,
)
from retail_forecast.training.pipeline import EvaluationRows, TrainConfig, train

DATASETS_ENV: Final = "FORECAST_DATASETS"
# name: path under FORECAST_DATASETS (docs/DATASETS.md)
DATASETS: Final = {
    "favorita": "favorita/transactions_daily.csv",
    "m5-10-series": "m5-sample/ten-series-full-history",
    "m5-70-series": "m5-sample/seventy-series-last-140-days",
}
# Each learner the pipeline can use (training/model.py), under the name the tables give it.
LEARNERS: Final = {LIGHTGBM: "LightGBM", HIST_GRADIENT_BOOSTING: "HistGradientBoosting"}
PIPELINE: Final = LEARNERS[DEFAULT_LEARNER]
STATISTICAL: Final = ("ETS", "Theta")
# The pipeline's median head (output q0.5 of the same graph), scored as a point forecast: WAPE is lowest
# at the median, the point forecast (`forecast`) aims at the mean.
MEDIAN: Final = 0.5
MEDIAN_HEAD: Final = f"{PIPELINE} q0.5 (median head)"
# ETS and Theta see the last year before each origin (three seasons for weekly data): AutoETS's model
# search over 4.6 years of 54 Favorita series took 10 minutes an origin on this box.
STATISTICAL_HISTORY_DAYS: Final = 364
TARGET_VS_NAIVE: Final = -0.25
QUICK_SERIES: Final = 6
QUICK_ROWS: Final = 5_000
QUICK_ROUNDS: Final = 100


@dataclass
class Origin:
    """One origin's evaluation rows (shared by every method) and each method's predictions on them."""

    rows: EvaluationRows
    predictions: dict[str, npt.NDArray[np.float64]]


@dataclass
class DatasetResult:
    name: str
    series: int
    periods: int
    horizon: int
    origins: list[str]
    scores: dict[str, Scores]
    fit_seconds: dict[str, float]
    note: str
    # Per trained method, each seed's pooled WAPE (one entry per `--seeds` value).
    seed_wapes: dict[str, list[float]]


def seeded(method: str, seed: int) -> str:
    return f"{method}@seed{seed}"


def mean_over_seeds(
    scores: dict[str, Scores], seeds: list[int]
) -> tuple[dict[str, Scores], dict[str, list[float]]]:
    """Methods trained once per seed (`seeded` names) become one entry with the seeds' mean scores; the
    WAPE of each seed is kept beside them."""
    merged: dict[str, Scores] = {}
    wapes: dict[str, list[float]] = {}
    for method, value in scores.items():
        base, _, suffix = method.partition("@seed")
        if not suffix:
            merged[method] = value
            continue
        if base in merged:
            continue
        runs = [scores[seeded(base, seed)] for seed in seeds]
        merged[base] = Scores(
            *(float(np.mean([getattr(r, f.name) for r in runs])) for f in dataclasses.fields(Scores))
        )
        wapes[base] = [r.wape for r in runs]
    return merged, wapes


def load(path: Path) -> tuple[Panel, DataReport]:
    """A real dataset as `forecast train --data` reads it: a long-schema file or an M5 folder."""
    frame = validate_sales(load_m5(path), source=str(path)) if path.is_dir() else read_sales(path)
    return build_panel(frame, source=str(path))


def until(panel: Panel, last: int) -> Panel:
    """The panel cut after period `last`: what a user holding data up to then would train on."""
    end = last + 1
    return dataclasses.replace(
        panel,
        dates=panel.dates[:end],
        sales=panel.sales[:, :end],
        price=panel.price[:, :end],
        promo=panel.promo[:, :end],
        event=panel.event[:, :end],
    )


def sample_series(panel: Panel, count: int, seed: int) -> Panel:
    """`count` series drawn at random (sorted, so the panel keeps its order)."""
    if count >= panel.n_series:
        return panel
    picked = np.sort(np.random.default_rng(seed).choice(panel.n_series, size=count, replace=False))
    return panel.select_series(picked)


def plan(panel: Panel, origins: int, max_folds: int = TrainConfig.folds) -> tuple[int, int, list[int]]:
    """Horizon, pipeline folds and the evaluation origins (one horizon apart, the last one a horizon
    before the data's end). The frequency's default horizon unless the data is too short for it: the
    earliest cut must still hold a search fold and a holdout (`pipeline.plan_folds`)."""
    spec = feat.spec_for(panel.freq)
    n = panel.n_periods
    horizon = min(panel.freq.default_horizon, (n - spec.min_history) // (origins + 2))
    if horizon < 1:
        raise ValueError(f"{n} periods are too few for {origins} origins")
    earliest = n - horizon * (origins - 1)
    folds = min(max_folds, (earliest - spec.min_history) // horizon - 1)
    last = n - 1
    return horizon, folds, [last - horizon * k for k in range(origins, 0, -1)]


def statistical_forecasts(
    panel: Panel, rows: EvaluationRows, horizon: int
) -> dict[str, npt.NDArray[np.float64]]:
    """AutoETS and AutoTheta per series on its last year up to the origin, read at the rows' horizons."""
    import pandas as pd  # noqa: PLC0415
    from statsforecast import StatsForecast  # noqa: PLC0415 - benchmark-only dependency
    from statsforecast.models import AutoETS, AutoTheta  # noqa: PLC0415

    season = panel.freq.season
    window = max(STATISTICAL_HISTORY_DAYS // panel.freq.days, 3 * season)
    series = np.unique(rows.series)
    frames = []
    for s in series:
        history = panel.sales[s, : rows.origin + 1]
        observed = np.flatnonzero(~np.isnan(history))
        values = history[max(observed[0], len(history) - window) :]
        frames.append(pd.DataFrame({"unique_id": s, "ds": np.arange(len(values)), "y": values}))
    models = [AutoETS(season_length=season, alias="ETS"), AutoTheta(season_length=season, alias="Theta")]
    forecast = StatsForecast(models=models, freq=1, n_jobs=1).forecast(df=pd.concat(frames), h=horizon)
    forecast = forecast.reset_index() if "unique_id" not in forecast.columns else forecast
    position = {s: i for i, s in enumerate(series)}
    out = {}
    for name in STATISTICAL:
        table = forecast[name].to_numpy(dtype=np.float64).reshape(len(series), horizon)
        index = np.array([position[s] for s in rows.series])
        out[name] = np.maximum(np.nan_to_num(table[index, rows.horizon - 1], nan=0.0), 0.0)
    return out


def pooled(origins: list[Origin], method: str, n_series: int) -> Scores:
    """One score over every origin: each (series, origin) pair counts as a series of its own."""
    blocks = []
    for k, origin in enumerate(origins):
        rows = origin.rows
        blocks.append((rows.series + k * n_series, rows.horizon, rows.actual, origin.predictions[method]))
    block = ForecastBlock(*(np.concatenate([b[i] for b in blocks]) for i in range(4)))
    mase = np.concatenate([o.rows.mase_scale for o in origins])
    rmsse = np.concatenate([o.rows.rmsse_scale for o in origins])
    return score(block, mase, rmsse)


def run_dataset(
    name: str, panel: Panel, args: argparse.Namespace, note: str, log: Callable[[str], None]
) -> DatasetResult:
    horizon, folds, origin_periods = plan(panel, args.origins, args.folds)
    spec = feat.spec_for(panel.freq)
    valid = feat.valid_origins(panel, spec)
    log(
        f"{name}: {panel.n_series} series x {panel.n_periods} periods ({panel.freq.value}), horizon "
        f"{horizon}, origins {', '.join(str(panel.dates[o].date()) for o in origin_periods)}, "
        f"{folds} pipeline folds{note}"
    )
    learners = {LEARNERS[learner]: learner for learner in args.learners}
    fit_seconds = dict.fromkeys([*learners, *STATISTICAL], 0.0)
    origins: list[Origin] = []
    for origin in origin_periods:
        rows = EvaluationRows.at(panel, spec, valid, origin, horizon)
        predictions = {"seasonal naive": rows.seasonal_naive, "moving average": rows.moving_average}
        cut = until(panel, origin + horizon)
        for (label, learner), seed in itertools.product(learners.items(), args.seeds):
            config = TrainConfig(
                horizon=horizon,
                folds=folds,
                trials=args.trials,
                seed=seed,
                version="1",
                gate_margin=float("-inf"),
                max_rows=args.max_rows,
                fixed_params={"learner": learner} | ({"max_iter": QUICK_ROUNDS} if args.quick else {}),
                quantiles=(MEDIAN,) if args.quick else TrainConfig.quantiles,
            )
            with tempfile.TemporaryDirectory(prefix="accuracy-") as out:
                result = train(cut, DataReport(), Path(out), config, progress=lambda _: None)
            block = result.holdout.block
            same = np.array_equal(block.series, rows.series) and np.array_equal(block.horizon, rows.horizon)
            if not same:
                raise AssertionError(f"{name}: the pipeline's holdout rows differ from the benchmark's")
            predictions[seeded(label, seed)] = block.predicted
            if label == PIPELINE:
                heads = result.quantiles
                if heads is None or MEDIAN not in heads.levels:
                    raise AssertionError(f"{name}: the pipeline fitted no {MEDIAN} head")
                predictions[seeded(MEDIAN_HEAD, seed)] = heads.forecasts[:, heads.levels.index(MEDIAN)]
            fit_seconds[label] += result.timings["total"] / len(args.seeds)
            log(
                f"  {panel.dates[origin].date()} {label} seed {seed}: WAPE {result.holdout.model.wape:.4f} "
                f"(seasonal naive {result.holdout.seasonal_naive.wape:.4f}) "
                f"in {result.timings['total']:.0f} s, "
                f"{json.dumps(result.params)}; search: {result.search.message()}"
            )
        started = time.perf_counter()
        predictions |= statistical_forecasts(panel, rows, horizon)
        for stat in STATISTICAL:
            fit_seconds[stat] += (time.perf_counter() - started) / len(STATISTICAL)
        origins.append(Origin(rows, predictions))
    methods = list(origins[0].predictions)
    scores, seed_wapes = mean_over_seeds(
        {method: pooled(origins, method, panel.n_series) for method in methods}, args.seeds
    )
    return DatasetResult(
        name=name,
        series=panel.n_series,
        periods=panel.n_periods,
        horizon=horizon,
        origins=[str(panel.dates[o].date()) for o in origin_periods],
        scores=scores,
        fit_seconds=fit_seconds,
        note=note,
        seed_wapes=seed_wapes,
    )


def print_table(result: DatasetResult) -> None:
    naive = result.scores["seasonal naive"].wape
    print(
        f"\n{result.name}: {result.series} series x {result.periods} days, horizon {result.horizon}, "
        f"origins {', '.join(result.origins)}{result.note}"
    )
    seeds = max((len(w) for w in result.seed_wapes.values()), default=1)
    header = f"{'method':<32}{'WAPE':>8}{'MASE':>8}{'bias':>8}{'vs naive':>10}{'fit s':>8}"
    header += f"{'vs naive, seeds min..max':>26}" if seeds > 1 else ""
    if seeds > 1:
        print(f"(trained methods: the mean over {seeds} seeds)")
    print(header)
    print("-" * len(header))
    for method, scores in result.scores.items():
        seconds = result.fit_seconds.get(method)
        label = f"{method} (forecast train)" if method == PIPELINE else method
        spread = ""
        if seeds > 1 and method in result.seed_wapes:
            wapes = result.seed_wapes[method]
            spread = f"{min(wapes) / naive - 1:+.1%}..{max(wapes) / naive - 1:+.1%}"
        print(
            f"{label:<32}{scores.wape:>8.4f}{scores.mase:>8.4f}{scores.bias:>+8.3f}"
            f"{scores.wape / naive - 1:>+10.1%}{'' if seconds is None else f'{seconds:.0f}':>8}"
            + (f"{spread:>26}" if seeds > 1 else "")
        )
    model = result.scores[PIPELINE].wape
    singles = {m: result.scores[m].wape for m in LEARNERS.values() if m in result.scores}
    best = min(singles, key=singles.__getitem__)
    beaten = [m for m in ("moving average", *STATISTICAL) if model < result.scores[m].wape]
    lost = [m for m in ("moving average", *STATISTICAL) if model >= result.scores[m].wape]
    verdict = "met" if model / naive - 1 <= TARGET_VS_NAIVE else "MISSED"
    print(
        f"forecast train ({PIPELINE}) target <= {TARGET_VS_NAIVE:.0%} vs seasonal naive: {verdict} "
        f"({model / naive - 1:+.1%}); beats {', '.join(beaten) or 'none'}"
        + (f"; loses to {', '.join(lost)}" if lost else "")
        + f"; best single learner {best} ({singles[best] / naive - 1:+.1%})"
    )
    if MEDIAN_HEAD in result.scores:
        median = result.scores[MEDIAN_HEAD]
        verdict = "met" if median.wape / naive - 1 <= TARGET_VS_NAIVE else "MISSED"
        print(
            f"its median head q0.5, as a point forecast: {verdict} ({median.wape / naive - 1:+.1%}, "
            f"bias {median.bias:+.3f})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"the test's mode: {QUICK_SERIES} series, 1 trial of {QUICK_ROUNDS} rounds, one learner, "
        "its median head alone",
    )
    parser.add_argument("--origins", type=int, default=3, help="rolling origins per dataset (>= 3)")
    parser.add_argument("--folds", type=int, default=TrainConfig.folds, help="pipeline folds, at most")
    parser.add_argument("--trials", type=int, help="search trials per run (forecast train's; quick 1)")
    parser.add_argument("--max-series", type=int, help=f"sample series per dataset (quick {QUICK_SERIES})")
    parser.add_argument("--max-rows", type=int, help=f"training rows per run (quick {QUICK_ROWS})")
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"of {', '.join(DATASETS)}")
    parser.add_argument("--learners", help=f"of {', '.join(LEARNERS)} (default all; quick {DEFAULT_LEARNER})")
    parser.add_argument("--seed", type=int, default=0, help="series sampling (--max-series)")
    parser.add_argument("--seeds", default="0", help="training seeds, comma-separated (default 0)")
    parser.add_argument("--json", type=Path, help="also write the scores here")
    args = parser.parse_args()
    if args.origins < 3:
        parser.error("--origins must be at least 3")
    try:
        args.seeds = sorted({int(seed) for seed in args.seeds.split(",")})
    except ValueError:
        parser.error(f"--seeds: comma-separated integers, got {args.seeds!r}")
    args.trials = args.trials or (1 if args.quick else TrainConfig.trials)
    args.max_series = args.max_series or (QUICK_SERIES if args.quick else None)
    args.max_rows = args.max_rows or (QUICK_ROWS if args.quick else None)
    args.learners = (args.learners or (DEFAULT_LEARNER if args.quick else ",".join(LEARNERS))).split(",")
    if DEFAULT_LEARNER not in args.learners or set(args.learners) - set(LEARNERS):
        parser.error(f"--learners: of {', '.join(LEARNERS)}, with forecast train's {DEFAULT_LEARNER}")
    unknown = set(args.datasets.split(",")) - set(DATASETS)
    if unknown:
        parser.error(f"unknown dataset(s) {sorted(unknown)}; choose from {', '.join(DATASETS)}")

    root = os.environ.get(DATASETS_ENV)
    if not root:
        print(f"{DATASETS_ENV} is not set: no real dataset to measure (docs/DATASETS.md)", file=sys.stderr)
        return 2
    print(
        f"{os.cpu_count()} CPUs, {training_threads()} training thread(s), load {os.getloadavg()[0]:.1f}; "
        f"{args.origins} origins, {args.trials} trial(s) per run"
        + (f", at most {args.max_series} series per dataset" if args.max_series else ""),
        flush=True,
    )

    def log(message: str) -> None:
        print(message, flush=True)

    results: list[DatasetResult] = []
    skipped: dict[str, str] = {}
    for name in args.datasets.split(","):
        path = Path(root) / DATASETS[name]
        if not path.exists():
            skipped[name] = f"{path} does not exist"
            log(f"{name}: skipped, {skipped[name]}")
            continue
        panel, _ = load(path)
        note = ""
        if args.max_series and args.max_series < panel.n_series:
            note = f" (a random {args.max_series} of its {panel.n_series} series)"
            panel = sample_series(panel, args.max_series, args.seed)
        results.append(run_dataset(name, panel, args, note, log))
    for result in results:
        print_table(result)
    if args.json:
        payload: dict[str, Any] = {
            "datasets": {
                r.name: {
                    "series": r.series,
                    "horizon": r.horizon,
                    "origins": r.origins,
                    "scores": {m: s.as_dict() for m, s in r.scores.items()},
                    "fit_seconds": r.fit_seconds,
                    "seed_wapes": r.seed_wapes,
                }
                for r in results
            },
            "skipped": skipped,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
