"""The KQL queries and alert rules read names that the running system must emit.

Nothing here reads source text: the scoring service is run with a real model and its `/metrics` and JSON
log lines are captured; the operator's rollout is driven step by step and its Events collected. Every
metric, label, log field, log message and event reason a query reads must be among what they produced.
"""

from __future__ import annotations

import io
import logging
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from retail_forecast.batch.evaluate import evaluate, metrics_registry
from retail_forecast.batch.output import read_forecasts
from retail_forecast.core.drift import MIN_ROWS
from retail_forecast.core.manifest import Manifest
from retail_forecast.inference.app import create_app
from retail_forecast.inference.observability import JsonFormatter
from retail_forecast.operator import resources as res
from tests.batch.runs import forecast_run
from tests.inference.conftest import wait_ready
from tests.infra.iac import KQL, REPO
from tests.operator.test_rollout import Cluster, make_spec


def kql_files() -> list[Path]:
    files = sorted(KQL.rglob("*.kql"))
    assert len(files) >= 8, files
    return files


@dataclass(frozen=True)
class Emitted:
    """What a running scoring service exposed: metric samples with their label names, and log lines."""

    metric_labels: dict[str, set[str]]
    log_lines: list[dict[str, Any]]

    def lines_with(self, message: str) -> list[dict[str, Any]]:
        return [line for line in self.log_lines if line["message"] == message]


@pytest.fixture(scope="module")
def emitted(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emitted]:
    """Serve a real model, make a good and a bad request, then scrape `/metrics` and keep the log; add
    what `forecast evaluate` exports for a real forecast run of the same model."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    service_logger = logging.getLogger("retail_forecast.inference")
    service_logger.addHandler(handler)
    level = service_logger.level
    service_logger.setLevel(logging.INFO)
    manifest = Manifest.model_validate_json((model_dir / "manifest.json").read_text())
    try:
        with TestClient(create_app(model_dir)) as client:
            wait_ready(client)
            # enough rows for the drift scores to be reported
            rows = [manifest.golden.inputs[i % len(manifest.golden.inputs)] for i in range(MIN_ROWS)]
            body = {
                "inputs": [
                    {
                        "name": "features",
                        "datatype": "FP32",
                        "shape": [len(rows), len(rows[0])],
                        "data": rows,
                    }
                ]
            }
            assert client.post(f"/v2/models/{manifest.name}/infer", json=body).status_code == 200
            assert client.get("/v2/models/not-this-one").status_code == 404
            exposition = client.get("/metrics").text
    finally:
        service_logger.removeHandler(handler)
        service_logger.setLevel(level)
    # `forecast evaluate` on a real forecast run: the figures it pushes for the accuracy alert
    run, data = forecast_run(model_dir, tmp_path_factory.mktemp("evaluate"))
    evaluation = evaluate([read_forecasts(run)], data)
    exposition += generate_latest(metrics_registry(evaluation)).decode()
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    yield Emitted(labels, lines)


def test_the_service_exposes_the_documented_metrics(emitted: Emitted) -> None:
    metrics = emitted.metric_labels
    assert metrics["forecast_http_requests_total"] == {"route", "method", "status"}
    assert metrics["forecast_http_request_duration_seconds_bucket"] == {"route", "method", "le"}
    assert metrics["forecast_model_state"] == {"forecast_model_state"}
    assert metrics["forecast_model_info"] == {"name", "version", "sha256"}
    assert metrics["forecast_feature_drift_psi"] == {"feature"}
    assert metrics["forecast_feature_drift_window_rows"] == set()


@pytest.mark.parametrize("path", kql_files(), ids=lambda p: p.name)
def test_metric_names_and_labels_are_exposed(path: Path, emitted: Emitted) -> None:
    text = path.read_text()
    used = set(re.findall(r"\bforecast_[a-z0-9_]+", text))
    unknown = used - set(emitted.metric_labels)
    assert not unknown, f"{path.name}: metrics the service does not expose: {unknown}"
    labels = set(re.findall(r"\btags\.([A-Za-z_][A-Za-z0-9_]*)", text))
    known = set().union(*(emitted.metric_labels[name] for name in used)) if used else set()
    assert labels <= known, f"{path.name}: labels not on its metrics: {labels - known}"


@pytest.mark.parametrize("path", kql_files(), ids=lambda p: p.name)
def test_log_fields_are_in_the_lines_the_query_selects(path: Path, emitted: Emitted) -> None:
    """A query selects lines by logger and message; every `log.<field>` it reads must be in those lines."""
    text = path.read_text()
    fields = set(re.findall(r"\blog\.([A-Za-z_][A-Za-z0-9_]*)", text))
    if not fields:
        return
    loggers = set(re.findall(r"tostring\(log\.logger\)\s*==\s*\"([^\"]+)\"", text))
    assert loggers, f"{path.name}: reads log fields without selecting a logger"
    assert loggers <= {line["logger"] for line in emitted.log_lines}, loggers
    messages = set(re.findall(r"tostring\(log\.message\)\s*==\s*\"([^\"]+)\"", text))
    assert messages, f"{path.name}: reads log fields without selecting a message"
    for message in messages:
        assert emitted.lines_with(message), f"{path.name}: the service never logs {message!r}"
    present = set().union(*(set(line) for m in messages for line in emitted.lines_with(m)))
    assert fields <= present, f"{path.name}: fields in none of its selected lines: {fields - present}"


def rollout_events() -> list[tuple[str, str]]:
    """Reason and message of every Event of a first deploy, an upgrade, a failed upgrade and a redeploy."""
    cluster = Cluster(broken={"3"})
    for version in ("1", "2", "3", "1"):
        spec = make_spec(version)
        cluster.reconcile(spec)
        for _ in range(20):  # 100 s: past the progress deadline and the scale-down delay
            cluster.tick()
            cluster.reconcile(spec)
    assert cluster.status.active_version == "1"
    return [(event.reason, event.message) for event in cluster.emitted]


QUERIES_WITH_EVENTS = ("rollouts.kql", "served_versions.kql", "alerts/rollbacks.kql")


@pytest.mark.parametrize("name", QUERIES_WITH_EVENTS)
def test_event_reasons_and_message_fields_are_what_a_rollout_emits(name: str) -> None:
    text = (KQL / name).read_text()
    events = rollout_events()
    reasons = set(re.findall(r"Reason\s*==\s*\"(\w+)\"", text))
    for group in re.findall(r"Reason\s+in\s*\(([^)]*)\)", text):
        reasons |= set(re.findall(r"\"(\w+)\"", group))
    assert reasons, name
    # ModelVerificationFailed comes from the reconciler, not the rollout: the operator tests emit it.
    emitted = {reason for reason, _ in events} | {"ModelVerificationFailed"}
    assert reasons <= emitted, f"{name}: reasons no rollout emits: {reasons - emitted}"
    # The query's own regular expressions, applied to the real Promoted messages, find the version and
    # colour that were promoted.
    extracts = dict(re.findall(r"(\w+)\s*=\s*extract\(@\"([^\"]+)\",\s*1,\s*Message\)", text))
    promoted = [message for reason, message in events if reason == "Promoted"]
    assert promoted
    for field, pattern in extracts.items():
        found = [m.group(1) for message in promoted if (m := re.search(pattern, message))]
        assert len(found) == len(promoted), f"{name}: {field} not found in {promoted}"
        if field == "activeVersion":
            assert found == ["1", "2", "1"], found
        if field == "activeColor":
            assert found == ["blue", "green", "blue"], found


def test_alert_queries_have_their_measure_columns() -> None:
    columns = {
        "http_5xx_ratio": "error_ratio",
        "p95_latency": "p95_ms",
        "rollbacks": "events",
        "live_wape": "wape_excess",
        "feature_drift": "psi",
    }
    for name, column in columns.items():
        text = (KQL / "alerts" / f"{name}.kql").read_text()
        assert re.search(rf"\b{column}\s*=", text), name


AGENT_CONFIG = REPO / "k8s" / "monitoring" / "container-azm-ms-agentconfig.yaml"


def test_container_insights_collects_what_the_queries_read() -> None:
    config = yaml.safe_load(AGENT_CONFIG.read_text())
    assert (config["kind"], config["metadata"]["name"], config["metadata"]["namespace"]) == (
        "ConfigMap",
        "container-azm-ms-agentconfig",
        "kube-system",
    )
    assert config["data"]["schema-version"] == "v1"
    logs = tomllib.loads(config["data"]["log-data-collection-settings"])["log_collection_settings"]
    assert logs["stdout"]["enabled"] is True  # JSON log lines
    assert logs["collect_all_kube_events"]["enabled"] is True  # Normal events: Promoted, RolloutStarted
    assert logs["schema"]["containerlog_schema_version"] == "v2"  # the queries read ContainerLogV2
    assert logs["env_var"]["enabled"] is False  # env may carry an emulator's connection string
    scraping = tomllib.loads(config["data"]["prometheus-data-collection-settings"])
    assert scraping["prometheus_data_collection_settings"]["cluster"]["monitor_kubernetes_pods"] is True


def test_scoring_pods_are_annotated_for_scraping_where_the_service_serves_metrics(tmp_path: Path) -> None:
    (example,) = yaml.safe_load_all((REPO / "k8s" / "examples" / "forecastmodel-demand.yaml").read_text())
    spec = res.ForecastModelSpec.model_validate(example["spec"])
    template = res.deployment("demand", res.Color.BLUE, spec, version="1", sha256="0" * 64, replicas=1)[
        "spec"
    ]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    (serve,) = template["spec"]["containers"]
    assert int(annotations["prometheus.io/port"]) in [port["containerPort"] for port in serve["ports"]]
    assert serve["args"][serve["args"].index("--port") + 1] == annotations["prometheus.io/port"]
    routes = {getattr(route, "path", None) for route in create_app(tmp_path).routes}
    assert annotations["prometheus.io/path"] in routes
