"""The managed online endpoint (infra/aml-endpoint), offline: the YAMLs load with azure.ai.ml and describe
the AKS path's container (same image, probes, port and routes); the endpoint's configuration, `forecast
serve` driven by environment variables only, really serves a model; the pipeline's endpoint stage parses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from azure.ai.ml import load_online_deployment, load_online_endpoint
from azure.ai.ml.entities import ManagedOnlineDeployment, ManagedOnlineEndpoint

from retail_forecast.core.manifest import Manifest
from retail_forecast.inference.app import create_app
from retail_forecast.inference.settings import ServeSettings
from retail_forecast.operator import resources as res
from tests.inference.live import FORECAST, READY_TIMEOUT_S, cli_env, free_port
from tests.infra.iac import AML_ENDPOINT, REPO

COLOURS = ("blue", "green")
MODEL_DIR = re.compile(r"^/var/azureml-app/azureml-models/(?P<name>[\w-]+)/(?P<version>[\w.-]+)/model$")


@pytest.fixture(scope="module")
def endpoint() -> ManagedOnlineEndpoint:
    loaded = load_online_endpoint(AML_ENDPOINT / "endpoint.yml")
    assert isinstance(loaded, ManagedOnlineEndpoint)
    return loaded


def deployment(colour: str) -> Any:
    """The loaded deployment (Any: the SDK types every field Optional, the assertions below check them)."""
    loaded = load_online_deployment(AML_ENDPOINT / f"{colour}.yml")
    assert isinstance(loaded, ManagedOnlineDeployment)
    return loaded


def operator_container() -> dict[str, Any]:
    """The scoring container the operator puts in every AKS Deployment, for the example ForecastModel."""
    (example,) = yaml.safe_load_all((REPO / "k8s" / "examples" / "forecastmodel-demand.yaml").read_text())
    spec = res.ForecastModelSpec.model_validate(example["spec"])
    pod = res.deployment("demand", res.Color.BLUE, spec, version="1", sha256="0" * 64, replicas=1)
    (serve,) = pod["spec"]["template"]["spec"]["containers"]
    container: dict[str, Any] = serve
    return container


def test_endpoint_uses_entra_id_and_no_public_access(endpoint: ManagedOnlineEndpoint) -> None:
    assert endpoint.auth_mode == "aad_token"  # no keys
    assert endpoint.identity is not None and endpoint.identity.type == "system_assigned"
    assert endpoint.public_network_access == "disabled"


@pytest.mark.parametrize("colour", COLOURS)
def test_deployment_runs_the_aks_container_with_its_probes(
    colour: str, endpoint: ManagedOnlineEndpoint
) -> None:
    loaded = deployment(colour)
    assert loaded.name == colour and loaded.endpoint_name == endpoint.name
    serve = operator_container()
    port = serve["ports"][0]["containerPort"]
    config = loaded.environment.inference_config
    assert {config.liveness_route.path, config.readiness_route.path} == {
        serve["livenessProbe"]["httpGet"]["path"],
        serve["readinessProbe"]["httpGet"]["path"],
    }
    assert config.liveness_route.path == serve["livenessProbe"]["httpGet"]["path"]
    assert config.readiness_route.path == serve["readinessProbe"]["httpGet"]["path"]
    assert {config.liveness_route.port, config.readiness_route.port, config.scoring_route.port} == {port}
    assert loaded.environment_variables["FORECAST_PORT"] == str(port)
    for probe, kubernetes in (
        (loaded.liveness_probe, "livenessProbe"),
        (loaded.readiness_probe, "readinessProbe"),
    ):
        assert probe.period == serve[kubernetes]["periodSeconds"], kubernetes
        assert probe.failure_threshold == serve[kubernetes]["failureThreshold"], kubernetes
        assert probe.initial_delay == serve[kubernetes].get("initialDelaySeconds", 0), kubernetes
    # The scoring route is the V2 infer route of the registered model's name.
    reference = re.fullmatch(r"([\w-]+):([\w.-]+)", str(loaded.model))  # azure.ai.ml drops the azureml:
    assert reference, loaded.model
    name, version = reference.groups()
    assert config.scoring_route.path == f"/v2/models/{name}/infer"
    routes = {getattr(route, "path", None) for route in create_app(Path("/nonexistent")).routes}
    assert "/v2/models/{name}/infer" in routes
    # FORECAST_MODEL_DIR is where Azure ML mounts that model version's folder.
    mount = MODEL_DIR.fullmatch(loaded.environment_variables["FORECAST_MODEL_DIR"])
    assert mount and (mount["name"], mount["version"]) == (name, version)


@pytest.mark.parametrize("colour", COLOURS)
def test_deployment_bounds_each_request_and_scales(colour: str) -> None:
    loaded = deployment(colour)
    assert loaded.instance_count >= 2  # one instance may be upgraded at a time
    assert loaded.request_settings.request_timeout_ms <= 10_000
    assert 1 <= loaded.request_settings.max_concurrent_requests_per_instance <= 64
    assert loaded.app_insights_enabled is False
    # Every FORECAST_* variable is a real setting of the server (pydantic would refuse others at start).
    for variable in loaded.environment_variables:
        assert variable.startswith("FORECAST_")
        assert variable.removeprefix("FORECAST_").lower() in ServeSettings.model_fields, variable


def test_blue_and_green_differ_only_in_their_names() -> None:
    blue, green = ((AML_ENDPOINT / f"{c}.yml").read_text().splitlines() for c in COLOURS)
    assert [(b, g) for b, g in zip(blue, green, strict=True) if b != g] == [("name: blue", "name: green")]


def test_endpoint_image_is_the_inference_image_serving_by_default() -> None:
    text = (AML_ENDPOINT / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in text.splitlines() if line and not line.startswith("#")]
    assert [word for word, _ in instructions] == ["ARG", "FROM", "USER", "CMD"], "no layer beyond the image"
    assert instructions[1][1] == "${INFERENCE_IMAGE}"
    assert json.loads(instructions[3][1]) == ["serve"]
    assert instructions[2][1] == "10001:10001"  # the inference image's own user
    assert "USER 10001:10001" in (REPO / "Dockerfile.inference").read_text()
    hadolint = Path(os.environ.get("VIRTUAL_ENV", Path(FORECAST).parent.parent)) / "bin" / "hadolint"
    result = subprocess.run(
        [str(hadolint), str(AML_ENDPOINT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_endpoint_configuration_serves_a_model(model_dir: Path, tmp_path: Path) -> None:
    """What the endpoint runs: `forecast serve` (the image's CMD) configured by the deployment's
    environment variables alone, with the model folder where FORECAST_MODEL_DIR points. Only the port
    and the loopback address differ here."""
    loaded = deployment("blue")
    port = free_port()
    env = {**loaded.environment_variables, "FORECAST_MODEL_DIR": str(model_dir), "FORECAST_PORT": str(port)}
    env |= {"FORECAST_HOST": "127.0.0.1", "FORECAST_SHUTDOWN_DELAY_SECONDS": "0"}
    manifest = Manifest.load(model_dir)
    config = loaded.environment.inference_config
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [FORECAST, "serve"],
            env=cli_env(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client:
            _wait_ready(client, config.readiness_route.path, process, log)
            assert client.get(config.liveness_route.path).status_code == 200
            rows = manifest.golden.inputs
            tensor = {
                "name": "features",
                "shape": [len(rows), len(rows[0])],
                "datatype": "FP32",
                "data": rows,
            }
            # The route names the registered model; the server answers for the manifest's model name.
            path = config.scoring_route.path.replace("/demand/", f"/{manifest.name}/")
            answer = client.post(path, json={"inputs": [tensor]})
            assert answer.status_code == 200, answer.text
            got = answer.json()["outputs"][0]["data"]
            assert got == pytest.approx(manifest.golden.outputs, abs=manifest.golden.tolerance)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_ready(client: httpx.Client, path: str, process: subprocess.Popen[bytes], log: Path) -> None:
    attempts = int(READY_TIMEOUT_S / 0.2)
    for _ in range(attempts):
        assert process.poll() is None, (
            f"forecast serve exited {process.returncode}:\n{log.read_text()[-3000:]}"
        )
        try:
            if client.get(path).status_code == 200:
                return
        except httpx.TransportError:
            pass
        process_wait(process, 0.2)
    pytest.fail(f"not ready:\n{log.read_text()[-3000:]}")


def process_wait(process: subprocess.Popen[bytes], seconds: float) -> None:
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return


def endpoint_scripts() -> list[str]:
    pipeline = yaml.safe_load((REPO / "azure-pipelines.yml").read_text())
    (stage,) = [s for s in pipeline["stages"] if s["stage"] == "endpoint"]
    steps = stage["jobs"][0]["strategy"]["runOnce"]["deploy"]["steps"]
    return [step["inputs"]["inlineScript"] for step in steps if step.get("task") == "AzureCLI@2"]


def test_the_pipeline_switches_traffic_only_after_the_golden_sample() -> None:
    build, deploy = endpoint_scripts()
    assert "-f infra/aml-endpoint/Dockerfile" in build and "--build-arg INFERENCE_IMAGE=" in build
    order = [
        "az ml model create",
        "az ml online-endpoint create -f infra/aml-endpoint/endpoint.yml",
        'az ml online-deployment "$action" -f "infra/aml-endpoint/$idle.yml"',
        'az ml online-endpoint invoke --name "$endpoint" --deployment-name "$idle"',
        '--traffic "$idle=100 $live=0"',
        "-f infra/aml-endpoint/autoscale.bicep",
    ]
    positions = [deploy.index(step) for step in order]
    assert positions == sorted(positions)
    for setting in ("model=", "environment.image=", "environment_variables.FORECAST_MODEL_DIR="):
        assert setting in deploy, setting
    assert "/var/azureml-app/azureml-models/$(modelName)/$version/model" in deploy
    # The idle colour's autoscale setting goes: autoscale.bicep names it autoscale-<endpoint>-<deployment>.
    assert '--name "autoscale-$endpoint-$live"' in deploy
    assert (
        "name: 'autoscale-${endpointName}-${deploymentName}'"
        in (AML_ENDPOINT / "autoscale.bicep").read_text()
    )


def test_the_pipeline_scripts_parse() -> None:
    """bash -n on each script (Azure DevOps macros replaced) and compile() on its embedded Python."""
    for script in endpoint_scripts():
        text = re.sub(r"\$\((\w+(?:\.\w+)*)\)", "MACRO", script)
        result = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        for python in re.findall(r"<<'PY'\n(.*?)\nPY\n", text, flags=re.S) + re.findall(
            r"python3 -c '\n(.*?)'\)", text, flags=re.S
        ):
            compile(python, "<pipeline>", "exec")
