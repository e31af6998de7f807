"""The training report: a short Markdown page and a plot of holdout forecasts against actuals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np

from retail_forecast.core.data import DataReport, Panel
from retail_forecast.training.metrics import Scores

if TYPE_CHECKING:
    from retail_forecast.training.pipeline import TrainResult

REPORT_FILE: Final = "report.md"
PLOT_FILE: Final = "forecast.png"
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
        "## Search",
        "",
        f"{len(result.trials)} trial(s); best mean validation WAPE {result.validation_wape:.4f} with "
        f"`{result.params}`.",
        "",
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
