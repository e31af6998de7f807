"""The training report: a short Markdown page and a plot of holdout forecasts against actuals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np

from retail_forecast.core.data import DataReport, Panel
from retail_forecast.training.importance import UNITS, Importances
from retail_forecast.training.metrics import Scores, VolumeBand

if TYPE_CHECKING:
    from retail_forecast.training.pipeline import TrainResult

REPORT_FILE: Final = "report.md"
PLOT_FILE: Final = "forecast.png"
CALIBRATION_PLOT_FILE: Final = "calibration.png"
IMPORTANCE_PLOT_FILE: Final = "importance.png"
TOP_FEATURES: Final = 15
PLOTTED_SERIES: Final = 6


def metrics_table(rows: dict[str, Scores]) -> list[str]:
    lines = ["| forecast | WAPE | MASE | RMSSE | bias |", "|---|---:|---:|---:|---:|"]
    lines += [
        f"| {name} | {s.wape:.4f} | {s.mase:.4f} | {s.rmsse:.4f} | {s.bias:+.4f} |"
        for name, s in rows.items()
    ]
    return lines


def horizon_table(by_horizon: dict[str, list[Scores]]) -> list[str]:
    names = list(by_horizon)
    lines = ["| horizon | " + " | ".join(f"{n} WAPE" for n in names) + " |", "|---:|" + "---:|" * len(names)]
    for h in range(len(by_horizon[names[0]])):
        lines.append(f"| {h + 1} | " + " | ".join(f"{by_horizon[n][h].wape:.4f}" for n in names) + " |")
    return lines


def write_report(result: TrainResult, panel: Panel, data_report: DataReport, horizon: int) -> None:
    holdout = result.holdout
    _plot(result, panel, horizon)
    manifest = result.manifest
    lines = [
        "# Training report",
        "",
        f"- data: {panel.n_series} series, {panel.n_periods} periods ({panel.freq.value}), "
        f"{panel.dates[0].date()} to {panel.dates[-1].date()}",
        f"- horizon: {horizon}; holdout forecast origin {panel.dates[holdout.origin].date()}",
        f"- {result.gate_message}",
        f"- training rows: {result.rows.describe()}; drawn {result.training_rows}, search trials fit on "
        f"{result.search_rows}",
    ]
    if manifest is not None:
        lines += [f"- model: `{manifest.name}` version `{manifest.version}`, sha256 `{manifest.sha256}`"]
    if result.parity is not None:
        lines += [
            f"- ONNX parity: max abs diff {result.parity.max_abs_diff:.2e} over {result.parity.rows} rows"
        ]
    lines += [
        "",
        "## Holdout metrics",
        "",
        *metrics_table(
            {
                "model": holdout.model,
                "seasonal naive": holdout.seasonal_naive,
                "moving average": holdout.moving_average,
            }
        ),
        "",
        "## WAPE by horizon",
        "",
        *horizon_table(holdout.by_horizon),
        "",
        *backtest_lines(result, panel),
        *volume_band_lines(result.volume_bands),
        *importance_lines(result),
        *quantile_lines(result),
        *search_lines(result),
        "## Data",
        "",
        *[f"- {line}" for line in data_report.lines()],
        "",
        "## Time",
        "",
        *[f"- {name}: {seconds:.1f}s" for name, seconds in result.timings.items()],
        "",
        f"![holdout forecasts]({PLOT_FILE})",
        "",
    ]
    (result.out / REPORT_FILE).write_text("\n".join(lines))


def backtest_lines(result: TrainResult, panel: Panel) -> list[str]:
    """Every fold the pipeline scores: the search folds by the chosen parameters, then the holdout."""
    if not result.backtest:
        return []
    lines = [
        "## Backtest",
        "",
        f"Rolling origins one horizon apart. On the search folds the model is the chosen parameters fit "
        f"on the {result.search_rows} search rows; on the holdout, on every training row before it. "
        f"Search folds score a random sample of series when there are many; the holdout scores all.",
        "",
        "| origin | fold | series | forecast | WAPE | MASE | bias |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for evaluation in result.backtest:
        fold = "holdout" if evaluation is result.holdout else "search"
        origin = panel.dates[evaluation.origin].date()
        series = len(np.unique(evaluation.block.series))
        lines += [
            f"| {origin} | {fold} | {series} | {name} | {s.wape:.4f} | {s.mase:.4f} | {s.bias:+.4f} |"
            for name, s in (
                ("model", evaluation.model),
                ("seasonal naive", evaluation.seasonal_naive),
                ("moving average", evaluation.moving_average),
            )
        ]
    return [*lines, ""]


def search_lines(result: TrainResult) -> list[str]:
    """Every trial against the defaults, and which one won and why (training/selection.py)."""
    lines = [
        "## Search",
        "",
        f"{len(result.trials)} trial(s), mean WAPE over the search folds; {result.search.message()}. "
        f"Chosen: `{result.params}` (mean validation WAPE {result.validation_wape:.4f}).",
        "",
        "| trial | mean WAPE | ahead of the defaults | noise | chosen |",
        "|---:|---:|---:|---:|---|",
    ]
    for trial in result.trials:
        lines.append(
            f"| {trial['trial']} | {_number(trial['wape'])} | {_number(trial['ahead_of_defaults'], '+.4f')} "
            f"| {_number(trial['noise'])} | {'yes' if trial['chosen'] else ''} |"
        )
    return [*lines, ""]


def _number(value: float | None, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def volume_band_lines(bands: list[VolumeBand]) -> list[str]:
    if not bands:
        return []
    lines = [
        "## Accuracy by sales volume",
        "",
        f"Holdout series ranked by mean observed sales up to the holdout origin and cut into {len(bands)} "
        "bands of equal series count (slow to fast movers).",
        "",
        "| band | series | mean sales | share of volume | model WAPE | model bias | seasonal naive WAPE "
        "| seasonal naive bias |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for band in bands:
        model, naive = band.scores["model"], band.scores["seasonal_naive"]
        low, high = band.mean_sales
        lines.append(
            f"| {band.name} | {band.series} | {low:.2f}-{high:.2f} | {band.volume_share:.3f} "
            f"| {model.wape:.4f} | {model.bias:+.4f} | {naive.wape:.4f} | {naive.bias:+.4f} |"
        )
    return [*lines, ""]


def importance_lines(result: TrainResult) -> list[str]:
    importances = result.importances
    if importances is None:
        return []
    _plot_importances(importances, result)
    sample = f" on {importances.rows} random holdout rows" if importances.rows is not None else ""
    return [
        "## Feature importances",
        "",
        f"{importances.method.capitalize()} importance of the holdout fit{sample}: "
        f"{UNITS[importances.method]}. Top {TOP_FEATURES}:",
        "",
        "| feature | importance |",
        "|---|---:|",
        *[f"| {name} | {value:.4f} |" for name, value in importances.top(TOP_FEATURES)],
        "",
        f"![feature importances]({IMPORTANCE_PLOT_FILE})",
        "",
    ]


def _plot_importances(importances: Importances, result: TrainResult) -> None:
    top = importances.top(TOP_FEATURES)[::-1]  # barh draws bottom-up: the largest on top
    figure, axis = plt.subplots(figsize=(6, 0.3 * len(top) + 1))
    axis.barh([name for name, _ in top], [value for _, value in top], color="tab:blue")
    axis.set_xlabel(UNITS[importances.method])
    axis.tick_params(labelsize=7)
    figure.tight_layout()
    figure.savefig(result.out / IMPORTANCE_PLOT_FILE, dpi=90)
    plt.close(figure)


def quantile_lines(result: TrainResult) -> list[str]:
    """The quantile heads' holdout: scaled pinball loss and calibration per level, interval coverage by
    horizon, and the calibration plot; nothing for a point-only model."""
    quantiles = result.quantiles
    if quantiles is None:
        return []
    _plot_calibration(result)
    scores, levels = quantiles.scores, quantiles.levels
    nominal = levels[-1] - levels[0]
    rows = len(result.holdout.block.actual)
    calibrated = {
        level: "yes" if scores.calibrated(level, 2 * np.sqrt(level * (1 - level) / rows)) else "no"
        for level in levels
    }
    lines = [
        "## Quantile forecasts",
        "",
        f"Holdout scaled pinball loss (M5 Uncertainty, mean over levels) {scores.scaled_pinball:.4f} "
        f"(the point forecast as every quantile: {quantiles.point_scores.scaled_pinball:.4f}); "
        f"coverage of the interval [{levels[0]:g}, {levels[-1]:g}]: {scores.coverage:.3f} "
        f"(nominal {nominal:.2f}), {scores.open_coverage:.3f} without its ends.",
        "",
        "Sales are counts, so actuals tie with forecasts (every zero at a forecast of 0): a level is "
        "calibrated when the share strictly below its forecasts is at most the level and the share at or "
        "below at least the level (here within two binomial standard errors of the holdout's "
        f"{rows} rows), and the interval's coverage then lies between its two figures above.",
        "",
        "| level | scaled pinball | share strictly below | share at or below | calibrated |",
        "|---:|---:|---:|---:|:---:|",
        *[
            f"| {level:g} | {scores.pinball_by_level[level]:.4f} | {scores.share_below[level]:.3f} "
            f"| {scores.share_at_or_below[level]:.3f} | {calibrated[level]} |"
            for level in levels
        ],
        "",
        "| horizon | coverage |",
        "|---:|---:|",
        *[f"| {h} | {c:.3f} |" for h, c in enumerate(scores.coverage_by_horizon, start=1)],
        "",
        f"![quantile calibration]({CALIBRATION_PLOT_FILE})",
        "",
    ]
    if result.quantile_parity is not None:
        lines[4:4] = [
            f"ONNX parity of the quantile outputs: max abs diff {result.quantile_parity.max_abs_diff:.2e} "
            f"over {result.quantile_parity.rows} rows.",
            "",
        ]
    return lines


def _plot_calibration(result: TrainResult) -> None:
    """Observed share of actuals at or below each quantile forecast against its level, by horizon band:
    a calibrated model sits on the diagonal."""
    assert result.quantiles is not None
    levels, forecasts = result.quantiles.levels, result.quantiles.forecasts
    block = result.holdout.block
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="calibrated")
    horizon = int(block.horizon.max())
    bands = [(1, max(horizon // 2, 1)), (max(horizon // 2, 1) + 1, horizon)] if horizon > 1 else [(1, 1)]
    for first, last in [(1, horizon), *bands]:
        rows = (block.horizon >= first) & (block.horizon <= last)
        observed = [float(np.mean(block.actual[rows] <= forecasts[rows, k])) for k in range(len(levels))]
        axis.plot(levels, observed, marker="o", label=f"horizon {first}-{last}")
    axis.set_xlabel("quantile level")
    axis.set_ylabel("share of holdout actuals at or below the forecast")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(result.out / CALIBRATION_PLOT_FILE, dpi=90)
    plt.close(figure)


def _plot(result: TrainResult, panel: Panel, horizon: int) -> None:
    """The largest series and a low-volume one: where a forecast looks right or wrong at a glance."""
    block, naive, origin = result.holdout.block, result.holdout.naive_block, result.holdout.origin
    series = np.unique(block.series)
    volume = np.nansum(panel.sales[series, max(0, origin - 4 * horizon) : origin + 1], axis=1)
    order = series[np.argsort(-volume, kind="stable")]
    chosen = list(order[: PLOTTED_SERIES - 1]) + ([order[-1]] if len(order) >= PLOTTED_SERIES else [])
    columns = 2
    rows = (len(chosen) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(12, 3 * rows), squeeze=False)
    start = max(0, origin - 3 * horizon)
    for axis, s in zip(axes.ravel(), chosen, strict=False):
        dates = panel.dates[start : origin + horizon + 1]
        axis.plot(dates, panel.sales[s, start : origin + horizon + 1], color="black", lw=1, label="actual")
        mine = block.series == s
        when = panel.dates[origin + block.horizon[mine]]
        axis.plot(when, block.predicted[mine], color="tab:blue", lw=1.5, label="model")
        if result.quantiles is not None:
            band, levels = result.quantiles.forecasts[mine], result.quantiles.levels
            axis.fill_between(
                when,
                band[:, 0],
                band[:, -1],
                color="tab:blue",
                alpha=0.2,
                label=f"{levels[0]:g}-{levels[-1]:g}",
            )
        axis.plot(when, naive.predicted[mine], color="tab:orange", lw=1, ls="--", label="seasonal naive")
        axis.axvline(panel.dates[origin], color="grey", lw=0.8)
        axis.set_title(f"store {panel.store_ids[s]} / item {panel.item_ids[s]}", fontsize=9)
        locator = mdates.AutoDateLocator(maxticks=6)  # type: ignore[no-untyped-call]
        axis.xaxis.set_major_locator(locator)
        axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        axis.tick_params(labelsize=7)
    for axis in axes.ravel()[len(chosen) :]:
        axis.axis("off")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(result.out / PLOT_FILE, dpi=90)
    plt.close(figure)
