from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper

from retail_forecast.core.data import Panel
from retail_forecast.core.manifest import Manifest, sha256_file
from retail_forecast.inference.admission import REASONS
from retail_forecast.inference.app import create_app
from retail_forecast.inference.limits import Limits
from retail_forecast.inference.observability import JsonFormatter

from .conftest import wait_ready
from .live import forecast_series
from .test_model import copy_with_manifest, with_other_spec_version


def infer_body(rows: list[list[float]], name: str = "features") -> dict[str, object]:
    return {"inputs": [{"name": name, "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": rows}]}


def test_golden_rows_are_scored_exactly(client: TestClient, model_dir: Path) -> None:
    manifest = Manifest.load(model_dir)
    response = client.post("/v2/models/demand/infer", json={"id": "r1", **infer_body(manifest.golden.inputs)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "demand" and body["model_version"] == "7" and body["id"] == "r1"
    assert manifest.quantiles is not None
    expected = {"forecast": manifest.golden.outputs} | {
        q.output: q.golden for q in manifest.quantiles.outputs
    }
    assert [output["name"] for output in body["outputs"]] == list(expected)
    for output in body["outputs"]:
        assert output["shape"] == [len(manifest.golden.outputs)] and output["datatype"] == "FP32"
        np.testing.assert_array_equal(
            np.array(output["data"], dtype=np.float32), np.array(expected[output["name"]], dtype=np.float32)
        )


def test_a_model_without_quantiles_has_one_output(point_model_dir: Path) -> None:
    manifest = Manifest.load(point_model_dir)
    with TestClient(create_app(point_model_dir)) as point_client:
        wait_ready(point_client)
        meta = point_client.get("/v2/models/demand").json()
        body = point_client.post("/v2/models/demand/infer", json=infer_body(manifest.golden.inputs)).json()
    assert meta["outputs"] == [{"name": "forecast", "datatype": "FP32", "shape": [-1]}]
    assert meta["parameters"]["quantiles"] == {}
    (output,) = body["outputs"]
    np.testing.assert_array_equal(
        np.array(output["data"], dtype=np.float32), np.array(manifest.golden.outputs, dtype=np.float32)
    )


def test_flat_data_is_accepted(client: TestClient, model_dir: Path) -> None:
    manifest = Manifest.load(model_dir)
    rows = manifest.golden.inputs[:2]
    body = {
        "inputs": [
            {
                "name": "features",
                "shape": [2, len(rows[0])],
                "datatype": "FP32",
                "data": [v for row in rows for v in row],
            }
        ]
    }
    response = client.post("/v2/models/demand/infer", json=body)
    assert response.json()["outputs"][0]["data"] == pytest.approx(manifest.golden.outputs[:2], rel=1e-6)


def test_nesting_does_not_matter_and_integers_are_numbers(client: TestClient, model_dir: Path) -> None:
    """As the protocol says, data is taken flat in row-major order; `shape` alone gives the tensor."""
    manifest = Manifest.load(model_dir)
    rows = np.asarray(manifest.golden.inputs[:2], dtype=np.float32)
    rows[:, 0] = np.round(rows[:, 0])
    flat = [int(v) if i % rows.shape[1] == 0 else float(v) for i, v in enumerate(rows.reshape(-1))]
    regrouped = [flat[i : i + 2] for i in range(0, len(flat), 2)] if len(flat) % 2 == 0 else [flat]
    expected = client.post("/v2/models/demand/infer", json=infer_body(rows.tolist())).json()["outputs"]
    for data in (flat, regrouped, [[flat]]):
        body = infer_body(rows.tolist())
        body["inputs"][0]["data"] = data  # type: ignore[index]
        response = client.post("/v2/models/demand/infer", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"] == expected


def test_metadata_names_the_input_tensor(client: TestClient, model_dir: Path) -> None:
    manifest = Manifest.load(model_dir)
    meta = client.get("/v2/models/demand").json()
    assert meta["inputs"] == [
        {"name": "features", "datatype": "FP32", "shape": [-1, len(manifest.features.names)]}
    ]
    assert meta["versions"] == ["7"]
    assert [o["name"] for o in meta["outputs"]] == ["forecast", "q0.1", "q0.5", "q0.9"]
    assert all(o["datatype"] == "FP32" and o["shape"] == [-1] for o in meta["outputs"])
    assert meta["parameters"]["quantiles"] == {"q0.1": 0.1, "q0.5": 0.5, "q0.9": 0.9}
    assert client.get("/v2/models/demand/ready").json() == {"name": "demand", "ready": True}
    assert client.get("/v2/health/live").json() == {"live": True}


@pytest.mark.parametrize(
    ("mutate", "status", "message"),
    [
        (lambda b: b["inputs"][0].update(name="x"), 400, "unknown input 'x'"),
        (lambda b: b["inputs"][0].update(datatype="FP64"), 400, "datatype must be FP32"),
        (lambda b: b["inputs"][0].update(shape=[1, 3]), 400, "shape must be [N, "),
        (lambda b: b["inputs"][0]["data"][0].__setitem__(0, "1.5"), 400, "only numbers"),
        (lambda b: b["inputs"][0]["data"][0].__setitem__(0, None), 400, "only numbers"),
        (lambda b: b["inputs"][0]["data"][0].__setitem__(0, True), 400, "only numbers"),
        (lambda b: b["inputs"][0]["data"][0].__setitem__(0, [1.0, {}]), 400, "only numbers"),
        (lambda b: b["inputs"][0].update(data={"a": 1}), 400, "list of numbers"),
        (lambda b: b["inputs"][0]["data"].pop(), 400, "holds"),
        (lambda b: b["inputs"][0]["data"][0].__setitem__(0, 1e39), 400, "beyond float32"),
        (lambda b: b.update(inputs=[]), 400, "exactly one tensor"),
        (lambda b: b["inputs"][0].update(shape=[3000, 43]), 413, "exceeds the limit of 2048"),
    ],
)
def test_bad_infer_input_is_a_4xx_that_says_why(
    client: TestClient, model_dir: Path, mutate: object, status: int, message: str
) -> None:
    manifest = Manifest.load(model_dir)
    body = infer_body([list(r) for r in manifest.golden.inputs[:2]])
    mutate(body)  # type: ignore[operator]
    response = client.post("/v2/models/demand/infer", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_nan_and_malformed_json_are_refused(client: TestClient) -> None:
    response = client.post("/v2/models/demand/infer", content=b'{"inputs": [{"data": [NaN]')
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
    assert client.post("/v2/models/other/infer", json={}).status_code == 404
    assert "unknown model" in client.get("/v2/models/other").json()["error"]


def test_numbers_no_double_holds_are_refused(client: TestClient, model_dir: Path) -> None:
    manifest = Manifest.load(model_dir)
    text = json.dumps(infer_body([list(r) for r in manifest.golden.inputs[:1]]))
    first = text.index("[[") + 2
    body = text[:first] + "1e400" + text[text.index(",", first) :]
    response = client.post("/v2/models/demand/infer", content=body.encode())
    assert response.status_code == 400 and "number" in response.json()["error"]


def test_a_body_beyond_the_largest_allowed_batch_is_refused_unread(
    client: TestClient, model_dir: Path
) -> None:
    manifest = Manifest.load(model_dir)
    limit = 2048 * len(manifest.features.names) * 32 + 65536  # the client fixture's max_batch_rows
    body = json.dumps(infer_body([list(r) for r in manifest.golden.inputs[:1]])).encode()
    response = client.post("/v2/models/demand/infer", content=body + b" " * limit)
    assert response.status_code == 413
    assert f"exceeds the limit of {limit} bytes" in response.json()["error"]
    assert client.post("/v2/models/demand/infer", content=body + b" " * 1000).status_code == 200


def test_metrics_report_requests_rows_and_model(client: TestClient, model_dir: Path) -> None:
    manifest = Manifest.load(model_dir)
    client.post("/v2/models/demand/infer", json=infer_body(manifest.golden.inputs))
    client.post("/v2/models/demand/infer", json={})
    text = client.get("/metrics").text
    assert f'forecast_rows_scored_total{{api="v2"}} {float(len(manifest.golden.inputs))}' in text
    assert f"forecast_model_batch_rows_sum {float(len(manifest.golden.inputs))}" in text
    assert "forecast_model_batch_rows_count 1.0" in text
    assert (
        'forecast_http_requests_total{method="POST",route="/v2/models/{name}/infer",status="200"} 1.0' in text
    )
    assert (
        'forecast_http_requests_total{method="POST",route="/v2/models/{name}/infer",status="400"} 1.0' in text
    )
    assert "forecast_http_request_duration_seconds_bucket" in text
    assert 'forecast_model_state{forecast_model_state="ready"} 1.0' in text
    assert "forecast_model_golden_max_deviation 0.0" in text
    assert f'forecast_model_info{{name="demand",sha256="{manifest.sha256}",version="7"}} 1.0' in text
    assert "forecast_model_load_seconds" in text


def test_request_duration_is_the_requests_own(client: TestClient) -> None:
    """The latency histogram and the access log time each request from its arrival (once, they timed
    it from the clock's epoch: hours per request). The bound is the test's own time around the call."""
    before = client.get("/metrics").text
    started = time.perf_counter()
    client.get("/v2/health/live")
    outside = time.perf_counter() - started
    after = client.get("/metrics").text
    route = 'method="GET",route="/v2/health/live"'

    def duration_sum(text: str) -> float:
        prefix = f"forecast_http_request_duration_seconds_sum{{{route}}} "
        lines = [line for line in text.splitlines() if line.startswith(prefix)]
        return float(lines[0].removeprefix(prefix)) if lines else 0.0

    assert 0 < duration_sum(after) - duration_sum(before) <= outside


def test_request_id_is_echoed(client: TestClient) -> None:
    response = client.get("/v2/health/live", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert len(client.get("/v2/health/live").headers["x-request-id"]) == 32


def wait_until_load_failed(test_client: TestClient) -> None:
    """The model loads in the background: wait (up to 10 s) until the service reports it failed."""
    for _ in range(400):
        if 'forecast_model_state{forecast_model_state="failed"} 1.0' in test_client.get("/metrics").text:
            return
        time.sleep(0.025)


def test_a_model_failing_its_self_check_never_becomes_ready(model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["golden"]["outputs"][0] += 1000.0  # the model no longer reproduces its golden sample
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with TestClient(create_app(broken)) as test_client:
        wait_until_load_failed(test_client)
        ready = test_client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert "golden sample row 0" in ready.json()["reason"]
        assert test_client.get("/v2/health/live").status_code == 200
        assert test_client.post("/v2/models/demand/infer", json={}).status_code == 503


def test_a_model_trained_on_other_features_never_becomes_ready(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rollback to an old model in a new image: not ready, and the probe's answer and the log say why;
    V2's raw rows are refused too (readiness is all or nothing, and no client's rows can be vouched for)."""
    older = copy_with_manifest(model_dir, tmp_path, with_other_spec_version)
    with caplog.at_level(logging.ERROR), TestClient(create_app(older)) as test_client:
        wait_until_load_failed(test_client)
        ready = test_client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert "model built with feature spec fs0, this code computes" in ready.json()["reason"]
        assert test_client.post("/v2/models/demand/infer", json={}).status_code == 503
        assert test_client.post("/v1/forecast", json={}).status_code == 503
    logged = [r for r in caplog.records if r.getMessage() == "model self-check failed"]
    assert "feature spec fs0" in logged[0].fields["error"]  # type: ignore[attr-defined]


def test_tampered_model_bytes_are_refused_at_load(model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "tampered"
    shutil.copytree(model_dir, broken)
    with (broken / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    with TestClient(create_app(broken)) as test_client:
        wait_until_load_failed(test_client)
        assert "sha256" in test_client.get("/v2/health/ready").json()["reason"]


def test_ready_after_load(model_dir: Path) -> None:
    with TestClient(create_app(model_dir)) as test_client:
        wait_ready(test_client)
        assert test_client.get("/v2/health/ready").json() == {"ready": True}


def _model_failing_at_run_time(model_dir: Path, dest: Path) -> Path:
    """A real ONNX model that loads and reproduces its golden sample, then fails in onnxruntime on any
    other number of rows: it reshapes its input to the golden sample's shape before summing each row."""
    shutil.copytree(model_dir, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    golden = np.asarray(manifest["golden"]["inputs"], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["features", "golden_shape"], ["golden_rows"]),
            helper.make_node("ReduceSum", ["golden_rows", "row_axis"], ["forecast"], keepdims=0),
        ],
        "fails_off_the_golden_shape",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, golden.shape[1]])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, [None])],
        initializer=[
            numpy_helper.from_array(np.array(golden.shape, dtype=np.int64), "golden_shape"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "row_axis"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), dest / "model.onnx")
    manifest["golden"]["outputs"] = golden.astype(np.float64).sum(axis=1).tolist()
    manifest["sha256"] = sha256_file(dest / "model.onnx")
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


class _JsonLines(logging.Handler):
    """The service's log lines as its JSON formatter writes them, request id included."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def json_log() -> Iterator[_JsonLines]:
    handler = _JsonLines()
    logger = logging.getLogger("retail_forecast.inference")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def test_an_unexpected_failure_is_a_500_in_the_error_shape_with_the_request_id(
    point_model_dir: Path, tmp_path: Path, sales_panel: Panel, json_log: _JsonLines
) -> None:
    failing = _model_failing_at_run_time(point_model_dir, tmp_path / "failing")
    golden = Manifest.load(failing).golden.inputs
    forecast = {"series": [forecast_series(sales_panel, 0, Manifest.load(failing).min_history)]}
    with TestClient(create_app(failing)) as test_client:
        wait_ready(test_client)  # the self-check passed: the model works on its golden sample
        assert test_client.post("/v2/models/demand/infer", json=infer_body(golden)).status_code == 200
        for n, (path, body) in enumerate(
            [("/v2/models/demand/infer", infer_body(golden[:3])), ("/v1/forecast", forecast)]
        ):
            response = test_client.post(path, json=body, headers={"X-Request-ID": f"failing-{n}"})
            assert response.status_code == 500, response.text
            assert response.headers["x-request-id"] == f"failing-{n}"
            assert response.json() == {"error": "internal error", "request_id": f"failing-{n}"}
            (logged,) = [line for line in json_log.lines if line.get("request_id") == f"failing-{n}"]
            assert logged["message"] == "unhandled error" and logged["path"] == path
            assert "Traceback" in logged["exception"] and "Reshape" in logged["exception"]
        metrics = test_client.get("/metrics").text
        assert 'forecast_http_requests_total{method="POST",route="/v1/forecast",status="500"} 1.0' in metrics
        # the failure was the request's, not the server's
        assert test_client.get("/v2/health/ready").status_code == 200


def test_a_503_says_when_to_retry(model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "tampered"
    shutil.copytree(model_dir, broken)
    with (broken / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    with TestClient(create_app(broken)) as test_client:
        for method, path in [
            ("POST", "/v2/models/demand/infer"),
            ("POST", "/v1/forecast"),
            ("GET", "/v2/models/demand"),
        ]:
            response = test_client.request(method, path, json={} if method == "POST" else None)
            assert response.status_code == 503, (path, response.text)
            assert response.headers["retry-after"] == "1"
            assert isinstance(response.json()["error"], str)


def test_refusals_for_load_are_counted_from_zero(client: TestClient) -> None:
    metrics = client.get("/metrics").text
    for reason in REASONS:
        assert f'forecast_requests_rejected_total{{reason="{reason}"}} 0.0' in metrics


def test_a_history_limit_below_what_the_model_reads_keeps_it_from_ready(model_dir: Path) -> None:
    """No forecast request could ever be served: a configuration error, caught before traffic."""
    with TestClient(create_app(model_dir, limits=Limits(max_history_periods=10))) as test_client:
        wait_until_load_failed(test_client)
        ready = test_client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert "max_history_periods 10 is below the model's min_history 56" in ready.json()["reason"]


def test_the_openapi_schema_documents_only_the_error_shape_the_service_answers(client: TestClient) -> None:
    """FastAPI would document a 422 `{"detail": …}` on every route with a parameter; none answers it."""
    schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in str(schema)
    documented = {
        (method, path): sorted(operation["responses"])
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    assert documented[("get", "/v2/models/{name}")] == ["200", "404"]
    assert documented[("post", "/v2/models/{name}/infer")] == ["200", "400", "404", "408", "413", "503"]
    assert documented[("post", "/v1/forecast")] == ["200", "408", "413", "422", "503"]
