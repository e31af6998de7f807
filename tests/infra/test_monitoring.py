"""The KQL queries and alert rules read names that the code must emit: Prometheus metrics and labels and
JSON log fields of the scoring service (read from inference/*.py), and the operator's Event reasons
(the contract below, until the operator exists)."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from retail_forecast.inference.app import create_app
from retail_forecast.operator import resources as res
from tests.infra.iac import KQL, REPO

OPERATOR = REPO / "operator" / "src"


def operator_event_reasons() -> set[str]:
    """Event reasons the operator emits: the string literals its Event(...) calls and reasons use."""
    source = "\n".join(p.read_text() for p in OPERATOR.glob("*.py"))
    reasons = set(re.findall(r'Event\(\s*"(?:Normal|Warning)",\s*"(\w+)"', source))
    reasons |= set(re.findall(r'reason = "(\w+)"', source))
    return reasons


def operator_message_fields() -> set[str]:
    """`field=` keys the operator writes into its Promoted event messages (read by the KQL)."""
    return set(re.findall(r"\b(active\w+)=\{", (OPERATOR / "rollout.py").read_text()))


OPERATOR_EVENT_REASONS = ("RolloutStarted", "Promoted", "RolledBack", "ModelVerificationFailed")
OPERATOR_STATUS_FIELDS = ("activeVersion", "activeColor")


def test_the_queried_event_reasons_and_fields_are_what_the_operator_emits() -> None:
    assert set(OPERATOR_EVENT_REASONS) <= operator_event_reasons()
    assert set(OPERATOR_STATUS_FIELDS) <= operator_message_fields()


INFERENCE = REPO / "inference"
SUFFIXES = {"Counter": ("_total",), "Histogram": ("_bucket", "_sum", "_count"), "Gauge": ("",)}
SUFFIXES |= {"Summary": ("", "_sum", "_count"), "Enum": ("",), "Info": ("_info",)}


def inference_metrics() -> dict[str, set[str]]:
    """Exposition names of the metrics the scoring service declares, with their label names."""
    metrics: dict[str, set[str]] = {}
    info_labels: set[str] = set()  # an Info's labels are the keys of its .info({...}) calls
    for path in sorted(INFERENCE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "info"
            ):
                for arg in node.args:
                    if isinstance(arg, ast.Dict):
                        info_labels |= {str(k.value) for k in arg.keys if isinstance(k, ast.Constant)}
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            kind = node.func.id
            if kind not in SUFFIXES or not node.args or not isinstance(node.args[0], ast.Constant):
                continue
            name = str(node.args[0].value)
            labels: set[str] = set()
            for arg in [*node.args[2:3], *(k.value for k in node.keywords if k.arg == "labelnames")]:
                if isinstance(arg, ast.List | ast.Tuple):
                    labels |= {str(e.value) for e in arg.elts if isinstance(e, ast.Constant)}
            if kind == "Enum":
                labels.add(name)  # prometheus_client labels an Enum's state with the metric's own name
            if kind == "Histogram":
                labels.add("le")
            for suffix in SUFFIXES[kind]:
                metrics[name + suffix] = labels
    return {
        name: labels | info_labels if name.endswith("_info") else labels for name, labels in metrics.items()
    }


def inference_string_literals() -> set[str]:
    """Every string constant in inference/*.py: log messages, logger names and JSON field names."""
    return {
        node.value
        for path in sorted(INFERENCE.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def kql_files() -> list[Path]:
    files = sorted(KQL.rglob("*.kql"))
    assert len(files) >= 8, files
    return files


def test_the_code_declares_the_documented_metrics() -> None:
    metrics = inference_metrics()
    assert metrics["forecast_http_requests_total"] == {"route", "method", "status"}
    assert metrics["forecast_http_request_duration_seconds_bucket"] == {"route", "method", "le"}
    assert metrics["forecast_model_state"] == {"forecast_model_state"}
    assert metrics["forecast_model_info"] == {"name", "version", "sha256"}


@pytest.mark.parametrize("path", kql_files(), ids=lambda p: p.name)
def test_metric_names_and_labels_exist_in_the_code(path: Path) -> None:
    text = path.read_text()
    metrics = inference_metrics()
    used = set(re.findall(r"\bforecast_[a-z0-9_]+", text))
    unknown = used - set(metrics)
    assert not unknown, f"{path.name}: metrics not in inference/*.py: {unknown}"
    labels = set(re.findall(r"\btags\.([A-Za-z_][A-Za-z0-9_]*)", text))
    known_labels = set().union(*(metrics[name] for name in used)) if used else set()
    assert labels <= known_labels, f"{path.name}: labels not on its metrics: {labels - known_labels}"


@pytest.mark.parametrize("path", kql_files(), ids=lambda p: p.name)
def test_log_fields_and_messages_exist_in_the_code(path: Path) -> None:
    text = path.read_text()
    literals = inference_string_literals() | {"time", "level", "logger", "message", "request_id"}
    fields = set(re.findall(r"\blog\.([A-Za-z_][A-Za-z0-9_]*)", text))
    assert fields <= literals, f"{path.name}: log fields not in inference/*.py: {fields - literals}"
    compared = set(re.findall(r"tostring\(log\.(?:message|logger)\)\s*==\s*\"([^\"]+)\"", text))
    assert compared <= literals, f"{path.name}: log messages not in inference/*.py: {compared - literals}"


@pytest.mark.parametrize("path", kql_files(), ids=lambda p: p.name)
def test_event_reasons_follow_the_operator_contract(path: Path) -> None:
    text = path.read_text()
    reasons = set(re.findall(r"Reason\s*==\s*\"(\w+)\"", text))
    for group in re.findall(r"Reason\s+in\s*\(([^)]*)\)", text):
        reasons |= set(re.findall(r"\"(\w+)\"", group))
    assert reasons <= set(OPERATOR_EVENT_REASONS), reasons - set(OPERATOR_EVENT_REASONS)
    for field in re.findall(r"(\w+)=\(\\S\+\)", text):
        assert field in OPERATOR_STATUS_FIELDS, field


def test_queries_cover_the_required_views() -> None:
    texts = {p.stem: p.read_text() for p in kql_files()}
    assert "forecast_http_requests_total" in texts["error_rate"]
    assert "model_version" in texts["latency_by_model_version"]
    assert "percentiles(duration_ms" in texts["latency_by_model_version"]
    assert all(reason in texts["rollouts"] for reason in OPERATOR_EVENT_REASONS)
    assert all(field in texts["served_versions"] for field in OPERATOR_STATUS_FIELDS)
    assert "ContainerLogV2" in texts["served_versions"]


def test_a_misspelt_name_would_fail() -> None:
    """The name checks can fail: a metric or field absent from the code is reported."""
    assert "forecast_http_requests_total_typo" not in inference_metrics()
    assert "duration_msec" not in inference_string_literals()


def test_alert_queries_have_their_measure_columns() -> None:
    columns = {"http_5xx_ratio": "error_ratio", "p95_latency": "p95_ms", "rollbacks": "events"}
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
