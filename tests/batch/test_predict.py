"""`forecast predict` on real data and a real model: the service's numbers, the data policy, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from retail_forecast.batch.predict import history_window, predict
from retail_forecast.batch.summary import parse_summary
from retail_forecast.cli import EXIT_ACCURACY, EXIT_STORE, main
from retail_forecast.core.schema import DataError, Freq
from retail_forecast.core.store import open_store
from retail_forecast.inference.app import create_app
from retail_forecast.inference.model import load_model
from tests.batch.runs import ORIGIN, forecast_run, sales
from tests.inference.conftest import wait_ready
from tests.inference.test_model import copy_with_manifest, with_a_renamed_feature


def history_points(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as `/v1/forecast` history points: what the file says, nothing filled in."""
    points = []
    for row in rows.to_dict("records"):
        point: dict[str, Any] = {"date": str(pd.Timestamp(row["date"]).date()), "sales": float(row["sales"])}
        if not np.isnan(row["price"]):
            point["price"] = float(row["price"])
        point["promo"] = int(row["promo"])
        if isinstance(row["event"], str) and row["event"]:  # a CSV's empty cell reads as NaN
            point["event"] = row["event"]
        points.append(point)
    return points


@pytest.fixture
def awkward_sales(tmp_path: Path) -> Path:
    """The model's data with what the gap policy must handle inside the history window: a series that
    ends before the origin, one that starts too late, a closed day (a missing row) and a return; and an
    event day, which the features read from history."""
    frame = sales(tmp_path / "plain.parquet")
    frame["date"] = pd.to_datetime(frame["date"])
    keys = frame[["store_id", "item_id"]].drop_duplicates().to_numpy()
    (s0, i0), (s1, i1), (s2, i2), (s3, i3) = keys[:4]
    ended = (frame.store_id == s0) & (frame.item_id == i0) & (frame.date > ORIGIN - pd.Timedelta(days=3))
    late = (frame.store_id == s1) & (frame.item_id == i1) & (frame.date < ORIGIN - pd.Timedelta(days=20))
    closed = (frame.store_id == s2) & (frame.item_id == i2) & (frame.date == ORIGIN - pd.Timedelta(days=5))
    frame = frame[~(ended | late | closed)].reset_index(drop=True)
    returned = (frame.store_id == s3) & (frame.item_id == i3) & (frame.date == ORIGIN - pd.Timedelta(days=2))
    frame.loc[returned, "sales"] = -2.0
    frame.loc[frame.date == ORIGIN - pd.Timedelta(days=3), "event"] = "festival"  # events in the window
    path = tmp_path / "sales.csv"
    frame.assign(date=frame.date.dt.strftime("%Y-%m-%d")).to_csv(path, index=False)
    return path


def test_batch_forecasts_equal_the_service_bit_for_bit(
    model_dir: Path, awkward_sales: Path, tmp_path: Path
) -> None:
    """Every forecast series, sent to /v1/forecast as its rows of the history window with no future
    points, gets exactly the batch's numbers (float32 bits), dates and horizons."""
    model = load_model(model_dir)
    manifest = model.manifest
    out = tmp_path / "run.parquet"
    report = predict(awkward_sales, model, str(out), origin=ORIGIN, chunk_series=5)  # chunks of 5, 5, 0-2
    assert (report.series, report.ended_before_origin, report.too_short) == (12, 1, 1)
    assert report.forecast == 10 and report.rows == 10 * manifest.horizon

    run = pq.read_table(out)
    meta = {k.decode(): v.decode() for k, v in run.schema.metadata.items()}
    assert (meta["model_name"], meta["model_version"], meta["model_sha256"]) == (
        "demand",
        "7",
        manifest.sha256,
    )
    assert meta["origin"] == str(ORIGIN.date()) and meta["horizon"] == str(manifest.horizon)
    assert manifest.quantiles is not None
    assert json.loads(meta["quantile_metrics"]) == manifest.quantiles.metrics.model_dump(mode="json")
    quantiles = ["q0.1", "q0.5", "q0.9"]  # the model's quantile outputs, by level
    assert run.column_names == ["store_id", "item_id", "origin", "date", "horizon", "yhat", *quantiles]
    frame = run.to_pandas()
    assert (pd.to_datetime(frame["origin"]) == ORIGIN).all()
    assert (pd.to_datetime(frame["date"]) == ORIGIN + pd.to_timedelta(frame["horizon"], unit="D")).all()

    raw = pd.read_csv(awkward_sales, parse_dates=["date"], keep_default_na=False, na_values=[""])
    start = ORIGIN - pd.Timedelta(days=history_window(manifest.min_history, Freq.DAILY) - 1)
    window = raw[(raw.date >= start) & (raw.date <= ORIGIN)]
    keys = list(frame[["store_id", "item_id"]].drop_duplicates().itertuples(index=False, name=None))
    request = {
        "series": [
            {
                "store_id": store,
                "item_id": item,
                "history": history_points(window[(window.store_id == store) & (window.item_id == item)]),
            }
            for store, item in keys
        ]
    }
    with TestClient(create_app(model_dir)) as client:
        wait_ready(client)
        response = client.post("/v1/forecast", json=request)
    assert response.status_code == 200, response.text
    served = response.json()["forecasts"]
    assert len(served) == len(keys) == 10
    for (store, item), answer in zip(keys, served, strict=True):
        batch = frame[(frame.store_id == store) & (frame.item_id == item)].sort_values("horizon")
        assert [p["date"] for p in answer["points"]] == [str(d) for d in batch["date"]]
        online = np.array([p["yhat"] for p in answer["points"]], dtype=np.float32)
        np.testing.assert_array_equal(online, batch["yhat"].to_numpy())
        levels = np.array([[p["quantiles"][q[1:]] for q in quantiles] for p in answer["points"]], np.float32)
        np.testing.assert_array_equal(levels, batch[quantiles].to_numpy())
    assert frame["yhat"].std() > 0  # real forecasts, not one constant
    assert (frame["q0.1"] <= frame["q0.5"]).all() and (frame["q0.5"] <= frame["q0.9"]).all()
    assert (frame["q0.9"] > frame["q0.1"]).mean() > 0.5  # an interval, not one value


def test_a_model_without_quantiles_writes_no_quantile_columns(point_model_dir: Path, tmp_path: Path) -> None:
    run, _ = forecast_run(point_model_dir, tmp_path)
    assert pq.read_table(run).column_names == ["store_id", "item_id", "origin", "date", "horizon", "yhat"]


def test_origin_defaults_to_the_last_date_and_horizon_is_bounded(model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "sales.parquet"
    frame = sales(data)
    model = load_model(model_dir)
    report = predict(data, model, str(tmp_path / "a.parquet"), horizon=3)
    run = pq.read_table(tmp_path / "a.parquet").to_pandas()
    assert set(pd.to_datetime(run["origin"])) == {pd.Timestamp(frame["date"].max())}
    assert sorted(set(run["horizon"])) == [1, 2, 3] and report.rows == len(run)
    with pytest.raises(DataError, match="beyond the model's horizon"):
        predict(data, model, str(tmp_path / "b.parquet"), horizon=model.manifest.horizon + 1)
    assert not (tmp_path / "b.parquet").exists()


def test_validation_errors_name_the_row_of_the_file(model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "sales.csv"
    frame = sales(data)
    frame["sales"] = frame["sales"].astype(object)
    frame.loc[1234, "sales"] = "many"
    frame.to_csv(data, index=False)
    with pytest.raises(DataError, match=r"line 1236, column 'sales'"):
        predict(data, load_model(model_dir), str(tmp_path / "run.parquet"))


def test_predict_and_evaluate_commands_with_the_store_and_output_in_azure(
    model_dir: Path, azure_store_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI as a pipeline runs it: the model fetched from the store and verified, the run in blob
    storage, then evaluated against the actuals with a threshold."""
    open_store(azure_store_uri).publish(model_dir, "demand", "7")
    data = tmp_path / "sales.parquet"
    sales(data)
    container = azure_store_uri.removeprefix("azureblob://").split("/")[0]
    run = f"azureblob://{container}/forecasts/demand/{ORIGIN.date()}.parquet"
    args = ["predict", "--data", str(data), "--model-uri", azure_store_uri, "--name", "demand"]
    args += ["--version", "7", "--fetch-dir", str(tmp_path / "models"), "--origin", str(ORIGIN.date())]
    summary = tmp_path / "termination-log"
    assert main([*args, "--out", run, "--no-progress", "--summary-file", str(summary)]) == 0
    assert "wrote 168 forecasts of demand 7" in capsys.readouterr().out
    reported = parse_summary(summary.read_text())
    assert reported is not None
    assert (reported.model, reported.version, reported.output) == ("demand", "7", run)
    assert (reported.sha256, reported.rows, reported.forecast) == (
        load_model(model_dir).manifest.sha256,
        168,
        12,
    )
    assert "AccountKey" not in summary.read_text() and "\n" not in summary.read_text()
    failed_summary = tmp_path / "failed-termination-log"
    again = [*args, "--out", run, "--no-progress", "--summary-file", str(failed_summary)]
    assert main(again) == EXIT_STORE  # a run is written once
    assert "already exists" in capsys.readouterr().err
    assert not failed_summary.exists()  # a failed run leaves its log's tail to the kubelet

    metrics = tmp_path / "metrics.prom"
    evaluate = ["evaluate", "--forecasts", run, "--actuals", str(data), "--metrics-out", str(metrics)]
    assert main(evaluate) == 0
    out = capsys.readouterr().out
    assert "evaluated 168 forecast points; 0 have no actual yet" in out
    assert 'forecast_live_wape{model="demand",version="7"}' in metrics.read_text()
    assert main([*evaluate, "--fail-above", "0.01"]) == EXIT_ACCURACY
    assert "live WAPE above 0.01: 7 " in capsys.readouterr().err
    assert main([*evaluate, "--fail-above", "5"]) == 0


def test_predict_refuses_a_model_trained_on_other_features(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The batch job runs this command: a clear error (its pod's termination message), nothing written."""
    renamed = copy_with_manifest(model_dir, tmp_path / "model", with_a_renamed_feature)
    data = tmp_path / "sales.parquet"
    sales(data)
    out = tmp_path / "run.parquet"
    args = ["predict", "--data", str(data), "--model-dir", str(renamed), "--out", str(out), "--no-progress"]
    assert main(args) == EXIT_STORE
    assert "feature 5 is 'lag_renamed' in the model" in capsys.readouterr().err
    assert not out.exists()
