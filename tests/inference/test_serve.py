"""`forecast serve` and `forecast fetch-model` as processes against a real Azurite: the init-container path.

A fetched model is verified before anything uses it; a tampered blob or a dead store fails with a clear
message and a distinct exit code, and leaves nothing behind that a retry (or the server) could pick up.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Final

import httpx
import numpy as np
import pytest
from azure.storage.blob import ContainerClient

from retail_forecast.core.manifest import MANIFEST_FILE, MODEL_FILE, Manifest, sha256_bytes, sha256_file
from retail_forecast.core.store import open_store
from tests.azurite import Azurite

from .live import Service, free_port, infer_body, run_cli
from .test_model import copy_with_manifest, with_other_spec_version

NAME: Final = "demand"
VERSION: Final = "7"
EXIT_USAGE: Final = 2
EXIT_STORE: Final = 4
EXIT_STARTUP: Final = 3  # uvicorn's


@pytest.fixture
def published(azure_store_uri: str, model_dir: Path) -> str:
    """The trained model published as demand/7 in a fresh Azurite container; returns the store URI."""
    open_store(azure_store_uri).publish(model_dir, NAME, VERSION)
    return azure_store_uri


@pytest.fixture
def azure_env(azurite: Azurite) -> dict[str, str]:
    return {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}


def _blob(uri: str) -> str:
    return f"{uri}/{NAME}/{VERSION}/{MODEL_FILE}"


def _tamper(azurite: Azurite, uri: str, data: bytes) -> None:
    container, prefix = uri.removeprefix("azureblob://").split("/", 1)
    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    with client:
        client.upload_blob(f"{prefix}/{NAME}/{VERSION}/{MODEL_FILE}", data, overwrite=True)


def _leftovers(parent: Path, dest: Path) -> list[str]:
    """`dest` itself and any temp sibling a failed fetch could have left."""
    if not parent.exists():
        return []
    return sorted(
        p.name for p in parent.iterdir() if p.name == dest.name or p.name.startswith(f".{dest.name}.")
    )


def test_serve_fetches_verifies_and_serves_a_store_model(
    published: str, azure_env: dict[str, str], model_dir: Path, tmp_path: Path
) -> None:
    fetch_dir = tmp_path / "fetched"
    args = ["--model-uri", published, "--name", NAME, "--version", VERSION, "--fetch-dir", str(fetch_dir)]
    with Service(args, tmp_path / "serve.log", azure_env) as service:
        service.wait_ready()
        manifest = Manifest.load(model_dir)
        rows = np.asarray(manifest.golden.inputs, dtype=np.float32)
        response = httpx.post(f"{service.url}/v2/models/{NAME}/infer", json=infer_body(rows), timeout=60)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == VERSION
        np.testing.assert_allclose(body["outputs"][0]["data"], manifest.golden.outputs, rtol=1e-6)
        assert sha256_file(fetch_dir / NAME / VERSION / MODEL_FILE) == manifest.sha256
        assert service.terminate() == 0, service.output()


def test_fetch_model_writes_a_verified_version(
    published: str, azure_env: dict[str, str], model_dir: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "out" / "model"
    result = run_cli(["fetch-model", published, NAME, VERSION, str(dest)], azure_env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dest.iterdir()) == [MANIFEST_FILE, MODEL_FILE]
    fetched = Manifest.load(dest)
    expected = Manifest.load(model_dir).sha256
    assert fetched.sha256 == expected == sha256_file(dest / MODEL_FILE)
    assert (fetched.name, fetched.version) == (NAME, VERSION)
    assert expected in result.stdout
    assert _leftovers(dest.parent, dest) == ["model"]


def test_a_tampered_blob_is_refused_by_fetch_and_serve(
    published: str, azure_env: dict[str, str], azurite: Azurite, model_dir: Path, tmp_path: Path
) -> None:
    tampered = b"not the model that was published"
    _tamper(azurite, published, tampered)
    expected = Manifest.load(model_dir).sha256

    dest = tmp_path / "out" / "model"
    result = run_cli(["fetch-model", published, NAME, VERSION, str(dest)], azure_env)
    assert result.returncode == EXIT_STORE, result.stderr
    message = result.stderr
    assert _blob(published) in message and sha256_bytes(tampered) in message and expected in message
    assert not dest.exists() and _leftovers(dest.parent, dest) == []

    fetch_dir = tmp_path / "fetched"
    source = ["--model-uri", published, "--name", NAME, "--version", VERSION, "--fetch-dir", str(fetch_dir)]
    serve = run_cli(
        ["serve", *source, "--host", "127.0.0.1", "--port", str(free_port())],
        azure_env,
    )
    assert serve.returncode == EXIT_STORE, serve.stdout + serve.stderr
    assert _blob(published) in serve.stderr and sha256_bytes(tampered) in serve.stderr
    assert "Uvicorn running" not in serve.stdout + serve.stderr
    version_dir = fetch_dir / NAME / VERSION
    assert _leftovers(version_dir.parent, version_dir) == []


def test_fetch_refuses_a_model_trained_on_other_features(
    azure_store_uri: str, azure_env: dict[str, str], model_dir: Path, tmp_path: Path
) -> None:
    """The serving pods' init container: a model this image cannot feed (here an older feature spec) is
    refused before any server starts, with the reason as its last line, and nothing is left in DIR."""
    older = copy_with_manifest(model_dir, tmp_path / "older", with_other_spec_version)
    open_store(azure_store_uri).publish(older, NAME, VERSION)
    dest = tmp_path / "out" / "model"
    result = run_cli(["fetch-model", azure_store_uri, NAME, VERSION, str(dest)], azure_env)
    assert result.returncode == EXIT_STORE, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert f"model {NAME} {VERSION}: model built with feature spec fs0, this code computes" in last
    assert not dest.exists() and _leftovers(dest.parent, dest) == []


def test_an_unreachable_store_fails_fetch_cleanly(
    published: str, azure_env: dict[str, str], azurite: Azurite, tmp_path: Path
) -> None:
    dest = tmp_path / "out" / "model"
    azurite.stop()
    try:
        result = run_cli(["fetch-model", published, NAME, VERSION, str(dest)], azure_env)
    finally:
        azurite.start()
    assert result.returncode == EXIT_STORE, result.stderr
    assert "unreachable" in result.stderr and published in result.stderr
    assert "AccountKey" not in result.stderr
    assert not dest.exists() and _leftovers(dest.parent, dest) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give exactly one of --model-dir or --model-uri"),
        (["--model-uri", "azureblob://models/x", "--name", NAME], "--model-uri needs --name and --version"),
    ],
    ids=["no-model", "uri-without-version"],
)
def test_serve_without_a_usable_model_source_is_a_usage_error(args: list[str], message: str) -> None:
    result = run_cli(["serve", *args, "--host", "127.0.0.1", "--port", "1"])
    assert result.returncode == EXIT_USAGE, result.stdout + result.stderr
    assert message in result.stderr


def test_a_port_already_taken_is_a_startup_failure_that_says_so(model_dir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(["serve", "--model-dir", str(model_dir), "--host", "127.0.0.1", "--port", str(port)])
    assert result.returncode == EXIT_STARTUP, result.stdout + result.stderr
    assert "address already in use" in result.stdout
