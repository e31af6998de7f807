"""A real forecast run for the batch and monitoring tests: synthetic sales, the session's model, predict."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pandas as pd

from retail_forecast.batch.predict import predict
from retail_forecast.core.schema import Freq
from retail_forecast.inference.model import load_model
from retail_forecast.training.synth import synthesize

# The data the session's model (tests/conftest.py `model_dir`) was trained on; 240 days from 2022-01-03.
STORES, ITEMS, PERIODS, SEED = 2, 6, 240, 11
# An origin 40 days before the end: the actuals of its 14-day horizon are in the data.
ORIGIN: Final = pd.Timestamp("2022-01-03") + pd.Timedelta(days=199)


def sales(path: Path) -> pd.DataFrame:
    frame = synthesize(stores=STORES, items=ITEMS, periods=PERIODS, freq=Freq.DAILY, seed=SEED)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return frame


def forecast_run(
    model_dir: Path, folder: Path, out: str | None = None, chunk_series: int = 5
) -> tuple[str, Path]:
    """Predict from `ORIGIN` into `out` (default a file in `folder`); returns the run and the data file."""
    data = folder / "sales.parquet"
    if not data.exists():
        sales(data)
    target = out or str(folder / "run.parquet")
    predict(data, load_model(model_dir), target, origin=ORIGIN, chunk_series=chunk_series)
    return target, data
