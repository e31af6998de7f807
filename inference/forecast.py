"""The domain forecast API: recent history in, forecasts for every horizon out.

Requests are turned into the same panel and features as training (shared core), so the service's
forecast for a series and origin is the training pipeline's prediction for them, bit for bit.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Final

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from retail_forecast.core import features as feat
from retail_forecast.core.data import build_panel, extend_for_forecast, validate_sales
from retail_forecast.core.manifest import Manifest
from retail_forecast.core.schema import DATE, EVENT, ITEM, PRICE, PROMO, SALES, STORE, Freq
from retail_forecast.inference.model import LoadedModel

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
# The calendar the shared core can represent (pandas datetime64[ns]): whole days from 1677-09-22 to
# 2262-04-11. Dates outside it, or a forecast reaching beyond it, are refused instead of failing inside.
EARLIEST: Final = pd.Timestamp.min.ceil("D").date()
LATEST: Final = pd.Timestamp.max.floor("D").date()
CalendarDate = Annotated[
    dt.date, Field(ge=EARLIEST, le=LATEST, description=f"ISO date from {EARLIEST} to {LATEST}")
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HistoryPoint(_Strict):
    date: CalendarDate
    sales: FiniteFloat
    price: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    promo: Annotated[int, Field(ge=0, le=1)] | None = None
    event: Annotated[str, Field(max_length=200)] | None = None


class FuturePoint(_Strict):
    date: CalendarDate
    price: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    promo: Annotated[int, Field(ge=0, le=1)] | None = None
    event: Annotated[str, Field(max_length=200)] | None = None


SeriesKey = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")]


class SeriesRequest(_Strict):
    store_id: SeriesKey
    item_id: SeriesKey
    history: Annotated[list[HistoryPoint], Field(min_length=1)]
    future: list[FuturePoint] = Field(default_factory=list)


class ForecastRequest(_Strict):
    series: Annotated[list[SeriesRequest], Field(min_length=1)]
    horizon: Annotated[int, Field(ge=1)] | None = None


class ForecastPoint(BaseModel):
    date: dt.date
    yhat: float


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


def _check_series(index: int, series: SeriesRequest, manifest: Manifest, horizon: int) -> None:
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
    span = (dates[-1] - dates[0]).days // step + 1
    if span < manifest.min_history:
        raise ForecastInputError(
            f"{where}: history covers {span} periods; the model needs at least {manifest.min_history}"
        )
    last = dates[-1]
    if (LATEST - last).days < horizon * step:
        raise ForecastInputError(
            f"{where}: a {horizon}-period forecast after {last} ends beyond {LATEST}, the last date supported"
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


def forecast(model: LoadedModel, request: ForecastRequest) -> ForecastResponse:
    manifest = model.manifest
    horizon = request.horizon or manifest.horizon
    if horizon > manifest.horizon:
        raise ForecastInputError(f"horizon: {horizon} is beyond the model's horizon {manifest.horizon}")
    keys = set()
    for index, series in enumerate(request.series):
        key = (series.store_id, series.item_id)
        if key in keys:
            raise ForecastInputError(f"series[{index}] ({key[0]}, {key[1]}): the series appears twice")
        keys.add(key)
        _check_series(index, series, manifest, horizon)

    history = pd.DataFrame(
        [
            {
                DATE: p.date.isoformat(),
                STORE: s.store_id,
                ITEM: s.item_id,
                SALES: p.sales,
                PRICE: p.price,
                PROMO: p.promo,
                EVENT: p.event,
            }
            for s in request.series
            for p in s.history
        ]
    )
    freq = Freq(manifest.freq)
    panel, _ = build_panel(validate_sales(history, source="request"), freq, source="request")
    future_rows = [
        {
            DATE: p.date.isoformat(),
            STORE: s.store_id,
            ITEM: s.item_id,
            SALES: 0.0,
            PRICE: p.price,
            PROMO: p.promo,
            EVENT: p.event,
        }
        for s in request.series
        for p in s.future
    ]
    future = validate_sales(pd.DataFrame(future_rows), source="request") if future_rows else None
    extended, origins = extend_for_forecast(panel, horizon, future)

    n = extended.n_series
    series_index = np.repeat(np.arange(n), horizon)
    origin = np.repeat(origins, horizon)
    horizons = np.tile(np.arange(1, horizon + 1), n)
    with np.errstate(over="ignore", invalid="ignore"):  # extreme values: refused below if they overflow
        rows = feat.build_features(extended, series_index, origin, horizons, feat.spec_for(freq))
    yhat = model.predict(rows).reshape(n, horizon)
    overflowed = ~np.isfinite(yhat).all(axis=1)
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

    by_key = {
        (str(s), str(i)): k
        for k, (s, i) in enumerate(zip(extended.store_ids, extended.item_ids, strict=True))
    }
    forecasts = []
    for series in request.series:
        k = by_key[series.store_id, series.item_id]
        dates = extended.dates[origins[k] + 1 : origins[k] + horizon + 1]
        forecasts.append(
            SeriesForecast(
                store_id=series.store_id,
                item_id=series.item_id,
                points=[
                    ForecastPoint(date=d.date(), yhat=float(v)) for d, v in zip(dates, yhat[k], strict=True)
                ],
            )
        )
    return ForecastResponse(model=ModelRef(name=manifest.name, version=manifest.version), forecasts=forecasts)
