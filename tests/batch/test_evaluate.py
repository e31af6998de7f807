"""`forecast evaluate` against figures worked out by hand from a small, fully known case."""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from retail_forecast.batch.evaluate import Figures, evaluate
from retail_forecast.batch.predict import KEY_FIELDS
from retail_forecast.cli import EXIT_ACCURACY, main

# Actuals: (s1, i1) has a closed day on 01-02 (no row inside its span: 0 sales) and a return on 01-04
# (-3: clipped to 0); (s2, i1) ends on 01-02, so its 01-03 point is pending, as is anything after 01-04.
ACTUALS = """date,store_id,item_id,sales
2024-01-01,s1,i1,10
2024-01-03,s1,i1,5
2024-01-04,s1,i1,-3
2024-01-01,s2,i1,4
2024-01-02,s2,i1,6
"""
# (store, origin, date, horizon, yhat, q0.1, q0.9)
RUN_1 = [
    ("s1", "2023-12-31", "2024-01-01", 1, 8.0, 6.0, 12.0),  # actual 10: error -2, inside
    ("s1", "2023-12-31", "2024-01-02", 2, 1.0, 0.0, 2.0),  # actual 0 (closed): +1, inside
    ("s1", "2023-12-31", "2024-01-03", 3, 7.0, 6.0, 9.0),  # actual 5: +2, outside
    ("s2", "2023-12-31", "2024-01-01", 1, 5.0, 4.0, 5.0),  # actual 4: +1, inside
    ("s2", "2023-12-31", "2024-01-02", 2, 3.0, 1.0, 4.0),  # actual 6: -3, outside
    ("s2", "2023-12-31", "2024-01-03", 3, 6.0, 5.0, 7.0),  # pending
]
RUN_2 = [
    ("s1", "2024-01-02", "2024-01-03", 1, 4.0, 3.0, 6.0),  # actual 5: -1, inside
    ("s1", "2024-01-02", "2024-01-04", 2, 1.0, 0.0, 1.0),  # actual 0 (return clipped): +1, inside
    ("s1", "2024-01-02", "2024-01-05", 3, 2.0, 1.0, 3.0),  # pending
]


def write_run(path: Path, version: str, rows: list[tuple[str, str, str, int, float, float, float]],
              wape: float, by_horizon: list[float],
              coverage: dict[str, object] | None = None,
              levels: tuple[str, ...] = ("q0.1", "q0.9")) -> str:  # fmt: skip
    """`levels` names the run's two quantile columns (the rows' last two values); () writes none."""
    fields = [*KEY_FIELDS, *(pa.field(level, pa.float32()) for level in levels)]
    scores = {"wape": wape, "mase": 1.0, "rmsse": 1.0, "bias": 0.0}
    metadata = {
        "model_name": "demand",
        "model_version": version,
        "freq": "D",
        "metrics": json.dumps({"model": scores, "seasonal_naive": scores}),
        "metrics_by_horizon": json.dumps(by_horizon),
    }
    if coverage is not None:  # a model with quantiles: its holdout coverage (manifest.quantiles.metrics)
        metadata["quantile_metrics"] = json.dumps(coverage)
    columns = list(zip(*rows, strict=True))
    table = pa.table(
        {
            "store_id": list(columns[0]),
            "item_id": ["i1"] * len(rows),
            "origin": pa.array([dt.date.fromisoformat(d) for d in columns[1]]),
            "date": pa.array([dt.date.fromisoformat(d) for d in columns[2]]),
            "horizon": pa.array(columns[3], pa.int32()),
            "yhat": pa.array(columns[4], pa.float32()),
            **{level: pa.array(columns[5 + i], pa.float32()) for i, level in enumerate(levels)},
        },
        schema=pa.schema(fields, metadata=metadata),
    )
    pq.write_table(table, path)
    return str(path)


@pytest.fixture
def case(tmp_path: Path) -> tuple[list[str], Path]:
    actuals = tmp_path / "actuals.csv"
    actuals.write_text(ACTUALS)
    runs = [
        write_run(
            tmp_path / "v1.parquet",
            "1",
            RUN_1,
            0.3,
            [0.25, 0.3, 0.35],
            {"coverage": 0.8, "coverage_by_horizon": [0.85, 0.8, 0.75], "interval": [0.1, 0.9]},
        ),
        write_run(tmp_path / "v2.parquet", "2", RUN_2, 0.5, []),
    ]
    return runs, actuals


def test_figures_by_version_horizon_and_store(case: tuple[list[str], Path]) -> None:
    runs, actuals = case
    result = evaluate([pq.read_table(run) for run in runs], actuals)
    assert (result.evaluated, result.pending) == (7, 2)
    assert {f.interval for f in result.figures} == {"q0.1-q0.9"}
    got = {(f.group, f.version, f.key): f for f in result.figures}

    def check(key: tuple[str, str, str], points: int, wape: float, bias: float, coverage: float,
              backtest: float | None) -> None:  # fmt: skip
        f: Figures = got.pop(key)
        assert f.points == points, key
        assert f.wape == pytest.approx(wape) and f.bias == pytest.approx(bias), key
        assert f.coverage == pytest.approx(coverage) and f.backtest_wape == backtest, key

    check(("version", "1", ""), 5, 9 / 25, -1 / 25, 3 / 5, 0.3)
    check(("horizon", "1", "1"), 2, 3 / 14, -1 / 14, 1.0, 0.25)
    check(("horizon", "1", "2"), 2, 4 / 6, -2 / 6, 1 / 2, 0.3)
    check(("horizon", "1", "3"), 1, 2 / 5, 2 / 5, 0.0, 0.35)
    check(("store_id", "1", "s1"), 3, 5 / 15, 1 / 15, 2 / 3, None)
    check(("store_id", "1", "s2"), 2, 4 / 10, -2 / 10, 1 / 2, None)
    check(("version", "2", ""), 2, 2 / 5, 0.0, 1.0, 0.5)
    check(("horizon", "2", "1"), 1, 1 / 5, -1 / 5, 1.0, None)
    check(("store_id", "2", "s1"), 2, 2 / 5, 0.0, 1.0, None)
    backtest_coverage = {(f.group, f.version, f.key): f.backtest_coverage for f in result.figures}
    assert backtest_coverage == {
        ("version", "1", ""): 0.8,
        ("horizon", "1", "1"): 0.85,
        ("horizon", "1", "2"): 0.8,
        ("horizon", "1", "3"): 0.75,
        ("store_id", "1", "s1"): None,
        ("store_id", "1", "s2"): None,
        ("version", "2", ""): None,  # its run carries no quantile metrics
        ("horizon", "2", "1"): None,
        ("horizon", "2", "2"): None,
        ("store_id", "2", "s1"): None,
    }
    assert got.keys() == {("horizon", "2", "2")}  # actual 0: WAPE undefined, reported as None
    assert got["horizon", "2", "2"].wape is None


def test_command_exports_metrics_and_fails_above_the_threshold(
    case: tuple[list[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs, actuals = case
    metrics = tmp_path / "evaluate.prom"
    args = ["evaluate", "--forecasts", runs[0], "--forecasts", runs[1], "--actuals", str(actuals)]
    assert main([*args, "--metrics-out", str(metrics), "--fail-above", "0.38"]) == EXIT_ACCURACY
    assert "live WAPE above 0.38: 2 0.4000" in capsys.readouterr().err
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.read_text())
        for s in family.samples
    }
    v1 = (("model", "demand"), ("version", "1"))
    assert samples["forecast_live_wape", v1] == pytest.approx(0.36)
    assert samples["forecast_backtest_wape", v1] == pytest.approx(0.3)
    assert samples["forecast_live_bias", v1] == pytest.approx(-0.04)
    assert samples["forecast_live_points", v1] == 5
    assert samples["forecast_live_interval_coverage", (("interval", "q0.1-q0.9"), *v1)] == pytest.approx(0.6)
    assert samples["forecast_backtest_interval_coverage", (("interval", "q0.1-q0.9"), *v1)] == 0.8
    assert samples["forecast_live_wape_by_horizon", (("horizon", "2"), *v1)] == pytest.approx(4 / 6)
    assert main([*args, "--fail-above", "0.45"]) == 0
    out = capsys.readouterr().out
    assert "| version | 1 |  | 5 | 0.3600 | 0.3000 | -0.0400 | 0.6000 | 0.8000 | q0.1-q0.9 |" in out
    assert "evaluated 7 forecast points; 2 have no actual yet" in out


def test_command_pushes_the_figures_to_a_pushgateway(
    case: tuple[list[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A loopback HTTP server stands where the Pushgateway would: what arrives is prometheus-client's
    real push (PUT of the text exposition under the job's path)."""
    received: list[tuple[str, str, bytes]] = []

    class Gateway(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.command, self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        runs, actuals = case
        gateway = ["--pushgateway", f"http://127.0.0.1:{server.server_port}"]
        assert main(["evaluate", "--forecasts", runs[0], "--actuals", str(actuals), *gateway]) == 0
    finally:
        server.shutdown()
        server.server_close()
    ((method, path, body),) = received
    assert (method, path) == ("PUT", "/metrics/job/forecast-evaluate")
    assert 'forecast_live_wape{model="demand",version="1"} 0.36' in body.decode()


def test_runs_of_models_with_other_levels_are_each_scored_on_their_own_interval(
    case: tuple[list[str], Path], tmp_path: Path
) -> None:
    """A P5–P95 model and a point-only model beside a P10–P90 one: the union of their columns must not
    leak into another run's coverage (a point-only run has none; the others each their own)."""
    runs, actuals = case
    wide = write_run(tmp_path / "v2.parquet", "2", RUN_2, 0.5, [], levels=("q0.05", "q0.95"))
    point_only = [(*row[:5], 0.0, 0.0) for row in RUN_1]
    plain = write_run(tmp_path / "v3.parquet", "3", point_only, 0.4, [], levels=())
    result = evaluate([pq.read_table(run) for run in (runs[0], wide, plain)], actuals)
    versions = {f.version: f for f in result.figures if f.group == "version"}
    assert versions["1"].interval == "q0.1-q0.9"
    assert versions["1"].coverage == pytest.approx(3 / 5)
    assert (versions["2"].interval, versions["2"].coverage) == ("q0.05-q0.95", 1.0)
    assert (versions["3"].interval, versions["3"].coverage) == (None, None)
    assert versions["3"].wape == pytest.approx(9 / 25)
