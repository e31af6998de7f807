"""The domain forecast API: recent history in, forecasts for every horizon out.

Requests are turned into the same panel and features as training (shared core), so the service's
forecast for a series and origin is the training pipeline's prediction for them, bit for bit.

The panel is a dense series x periods grid over the dates of all series, so its size is bounded before it
is built: at most `max_history_periods` periods per series and for the request as a whole, besides the
series count and body size the request model and the route enforce.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from types import GenericAlias
from typing import Annotated, Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.dataclasses import dataclass

from retail_forecast.core import features as feat
from retail_forecast.core.data import Panel, build_panel, extend_for_forecast, validate_sales
from retail_forecast.core.manifest import Manifest
from retail_forecast.core.schema import DATE, EVENT, ITEM, PRICE, PROMO, SALES, STORE, Freq
from retail_forecast.inference.limits import Limits
from retail_forecast.inference.model import LoadedModel

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
# The calendar the shared core can represent (pandas datetime64[ns]): whole days from 1677-09-22 to
# 2262-04-11. Dates outside it, or a forecast reaching beyond it, are refused instead of failing inside.
EARLIEST: Final = pd.Timestamp.min.ceil("D").date()
LATEST: Final = pd.Timestamp.max.floor("D").date()
CalendarDate = Annotated[
    dt.date, Field(ge=EARLIEST, le=LATEST, description=f"ISO date from {EARLIEST} to {LATEST}")
]
# Points are slotted dataclasses, not models: a request holds one per period of every series, and a
# model instance costs several times the memory (about 1 KB a point against 150 bytes).
POINT_CONFIG: Final = ConfigDict(extra="forbid")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(slots=True, config=POINT_CONFIG)
class HistoryPoint:
    date: CalendarDate
    sales: FiniteFloat
    price: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    promo: Annotated[int, Field(ge=0, le=1)] | None = None
    event: Annotated[str, Field(max_length=200)] | None = None


@dataclass(slots=True, config=POINT_CONFIG)
class FuturePoint:
    date: CalendarDate
    price: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    promo: Annotated[int, Field(ge=0, le=1)] | None = None
    event: Annotated[str, Field(max_length=200)] | None = None


SeriesKey = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")]


class SeriesRequest(_Strict):
    store_id: SeriesKey
    item_id: SeriesKey
    history: Annotated[list[HistoryPoint], Field(min_length=1)]
    future: list[FuturePoint] = Field(
        default_factory=list, description="known covariates of forecast periods: at most the horizon's"
    )


class ForecastRequest(_Strict):
    series: Annotated[list[SeriesRequest], Field(min_length=1)]
    horizon: Annotated[int, Field(ge=1)] | None = None


def request_model(limits: Limits) -> type[ForecastRequest]:
    """`ForecastRequest` with this server's size limits: validation enforces them, the OpenAPI schema shows
    them (maxItems), and neither depends on the model."""
    history_limit = Field(
        min_length=1,
        max_length=limits.max_history_periods,
        description=f"one point per period, spanning at most {limits.max_history_periods} periods",
    )
    series = create_model(
        "SeriesRequest", __base__=SeriesRequest, history=(Annotated[list[HistoryPoint], history_limit], ...)
    )
    series_list: Any = GenericAlias(list, series)  # list[series]: a type made at run time
    series_limit = Field(min_length=1, max_length=limits.max_forecast_series)
    return create_model(
        "ForecastRequest", __base__=ForecastRequest, series=(Annotated[series_list, series_limit], ...)
    )


class ForecastPoint(BaseModel):
    date: dt.date
    yhat: float
    quantiles: dict[str, float] | None = Field(
        default=None,
        description='only from a model with quantile outputs: the forecast at each level, e.g. {"0.1": …, '
        '"0.5": …, "0.9": …}, never decreasing with the level',
        examples=[{"0.1": 3.0, "0.5": 5.0, "0.9": 9.0}],
    )


class SeriesForecast(BaseModel):
    store_id: str
    item_id: str
    points: list[ForecastPoint]


class ModelRef(BaseModel):
    name: str
    version: str


class ForecastResponse(BaseModel):
    model: ModelRef
    forecasts: list[SeriesForecast]


class ForecastInputError(ValueError):
    """A request the model cannot forecast; the message names the series and the field."""


def _periods(first: dt.date, last: dt.date, step: int) -> int:
    """Periods from `first` to `last`, both included, on a grid of `step` days."""
    return (last - first).days // step + 1


def _check_series(
    index: int, series: SeriesRequest, manifest: Manifest, horizon: int, max_history_periods: int
) -> None:
    where = f"series[{index}] ({series.store_id}, {series.item_id})"
    step = Freq(manifest.freq).days
    dates = [point.date for point in series.history]
    for j in range(1, len(dates)):
        gap = (dates[j] - dates[j - 1]).days
        if gap <= 0:
            raise ForecastInputError(f"{where}: history[{j}].date {dates[j]} is not after {dates[j - 1]}")
        if gap % step:
            raise ForecastInputError(
                f"{where}: history[{j}].date {dates[j]} is {gap} days after the previous date; "
                f"the model is {'weekly' if step == 7 else 'daily'} (freq {manifest.freq})"
            )
    span = _periods(dates[0], dates[-1], step)
    if span < manifest.min_history:
        raise ForecastInputError(
            f"{where}: history covers {span} periods; the model needs at least {manifest.min_history}"
        )
    if span > max_history_periods:
        raise ForecastInputError(
            f"{where}: history spans {span} periods from {dates[0]} to {dates[-1]}; the limit is "
            f"{max_history_periods} (the model reads the last {manifest.min_history})"
        )
    last = dates[-1]
    if (LATEST - last).days < horizon * step:
        raise ForecastInputError(
            f"{where}: a {horizon}-period forecast after {last} ends beyond {LATEST}, the last date supported"
        )
    if len(series.future) > horizon:
        raise ForecastInputError(
            f"{where}: future holds {len(series.future)} points; a {horizon}-period forecast takes at most "
            f"{horizon}"
        )
    seen: set[dt.date] = set()
    for j, point in enumerate(series.future):
        ahead = (point.date - last).days
        if ahead <= 0 or ahead % step or ahead // step > horizon or point.date in seen:
            raise ForecastInputError(
                f"{where}: future[{j}].date {point.date} is not one of the {horizon} forecast periods "
                f"after {last} (or is repeated)"
            )
        seen.add(point.date)


def _check_request(
    request: ForecastRequest, manifest: Manifest, horizon: int, max_history_periods: int
) -> None:
    """Everything the panel's size depends on, before it is built: each series, then all of them."""
    keys = set()
    for index, series in enumerate(request.series):
        key = (series.store_id, series.item_id)
        if key in keys:
            raise ForecastInputError(f"series[{index}] ({key[0]}, {key[1]}): the series appears twice")
        keys.add(key)
        _check_series(index, series, manifest, horizon, max_history_periods)
    # the panel spans the dates of all series together, however short each one is
    first = min(series.history[0].date for series in request.series)
    last = max(series.history[-1].date for series in request.series)
    span = _periods(first, last, Freq(manifest.freq).days)
    if span > max_history_periods:
        raise ForecastInputError(
            f"series: their histories together span {span} periods from {first} to {last}; the limit is "
            f"{max_history_periods} (send series far apart in time in separate requests)"
        )


def _frame(
    points: Sequence[tuple[SeriesRequest, HistoryPoint | FuturePoint]], sales: list[float]
) -> pd.DataFrame:
    """The points as validated rows in the DESIGN schema, built column by column (a dict per row would
    cost several times the memory of the request itself)."""
    frame = pd.DataFrame(
        {
            DATE: [p.date.isoformat() for _, p in points],
            STORE: [s.store_id for s, _ in points],
            ITEM: [s.item_id for s, _ in points],
            SALES: sales,
            PRICE: [p.price for _, p in points],
            PROMO: [p.promo for _, p in points],
            EVENT: [p.event for _, p in points],
        }
    )
    return validate_sales(frame, source="request")


def forecast_features(
    panel: Panel, horizon: int, future: pd.DataFrame | None = None
) -> tuple[Panel, npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Each series forecast from its last observed period: the panel extended by the horizon (future
    covariates as `extend_for_forecast` decides), the origins, and the feature rows, series-major then
    horizon 1..H. `/v1/forecast` and `forecast predict` both score exactly these rows."""
    extended, origins = extend_for_forecast(panel, horizon, future)
    n = extended.n_series
    series_index = np.repeat(np.arange(n), horizon)
    origin = np.repeat(origins, horizon)
    horizons = np.tile(np.arange(1, horizon + 1), n)
    with np.errstate(over="ignore", invalid="ignore"):  # extreme values: the callers refuse overflows
        rows = feat.build_features(extended, series_index, origin, horizons, feat.spec_for(panel.freq))
    return extended, origins, rows


def forecast(
    model: LoadedModel,
    request: ForecastRequest,
    max_history_periods: int,
    observe: Callable[[npt.NDArray[np.float32]], None] | None = None,
) -> ForecastResponse:
    """The request's forecasts; `observe` is shown the feature rows of a forecast that is answered."""
    manifest = model.manifest
    horizon = request.horizon or manifest.horizon
    if horizon > manifest.horizon:
        raise ForecastInputError(f"horizon: {horizon} is beyond the model's horizon {manifest.horizon}")
    _check_request(request, manifest, horizon, max_history_periods)

    history = [(s, p) for s in request.series for p in s.history]
    freq = Freq(manifest.freq)
    panel, _ = build_panel(_frame(history, [p.sales for _, p in history]), freq, source="request")
    future = [(s, p) for s in request.series for p in s.future]
    extended, origins, rows = forecast_features(
        panel, horizon, _frame(future, [0.0] * len(future)) if future else None
    )
    n = extended.n_series
    outputs = model.predict_all(rows).reshape(n, horizon, -1)  # point, then quantiles by level
    yhat = outputs[:, :, 0]
    overflowed = ~np.isfinite(outputs).all(axis=(1, 2))
    if overflowed.any():
        k = int(np.flatnonzero(overflowed)[0])
        index = next(
            i
            for i, s in enumerate(request.series)
            if (s.store_id, s.item_id) == (str(extended.store_ids[k]), str(extended.item_ids[k]))
        )
        raise ForecastInputError(
            f"series[{index}] ({extended.store_ids[k]}, {extended.item_ids[k]}): its history's values are "
            "too large to forecast (the features overflow)"
        )
    if observe is not None:
        observe(rows)

    by_key = {
        (str(s), str(i)): k
        for k, (s, i) in enumerate(zip(extended.store_ids, extended.item_ids, strict=True))
    }
    levels = [f"{level:g}" for level in model.quantile_levels]
    forecasts = []
    for series in request.series:
        k = by_key[series.store_id, series.item_id]
        dates = extended.dates[origins[k] + 1 : origins[k] + horizon + 1]
        forecasts.append(
            SeriesForecast(
                store_id=series.store_id,
                item_id=series.item_id,
                points=[
                    ForecastPoint(
                        date=d.date(),
                        yhat=float(v),
                        quantiles=dict(zip(levels, map(float, q), strict=True)) if levels else None,
                    )
                    for d, v, q in zip(dates, yhat[k], outputs[k, :, 1:], strict=True)
                ],
            )
        )
    return ForecastResponse(model=ModelRef(name=manifest.name, version=manifest.version), forecasts=forecasts)
