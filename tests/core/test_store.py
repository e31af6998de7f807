"""The model store contract, proven for the local directory and for Azure Blob (a real Azurite)."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient

from retail_forecast.core.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    FeatureSchema,
    Golden,
    Manifest,
    ManifestError,
    Scores,
    TrainingData,
    sha256_bytes,
)
from retail_forecast.core.store import (
    LIFECYCLE_TAG,
    IntegrityError,
    Lifecycle,
    ModelStore,
    StoreAccessDeniedError,
    StoreConfigError,
    StoreError,
    StoreUnavailableError,
    VersionExistsError,
    VersionNotFoundError,
    open_store,
)
from tests.azurite import ACCOUNT_KEY, Azurite

NAME = "demand"
VERSION = "20240102T030405Z"


def write_model(directory: Path, payload: bytes = b"onnx model bytes", *, version: str = VERSION) -> Manifest:
    """A model folder as training writes it; the store never parses ONNX, so any bytes will do."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MODEL_FILE).write_bytes(payload)
    scores = Scores(wape=0.2, mase=0.9, rmsse=0.8, bias=0.01)
    manifest = Manifest(
        name=NAME,
        version=version,
        created_at="2024-01-02T03:04:05Z",
        sha256=sha256_bytes(payload),
        onnx_opset=17,
        freq="D",
        horizon=7,
        min_history=28,
        features=FeatureSchema(spec_version="1", names=["lag_7", "lag_14"]),
        metrics={"model": scores, "seasonal_naive": scores, "moving_average": scores},
        golden=Golden(inputs=[[1.0, 2.0]], outputs=[1.5], tolerance=1e-5),
        training_data=TrainingData(
            fingerprint="abc", rows=10, series=1, start="2024-01-01", end="2024-01-10"
        ),
        library_versions={"onnx": "1.17.0"},
    )
    (directory / MANIFEST_FILE).write_text(manifest.to_json())
    return manifest


class Raw:
    """Writes straight into the storage behind a store URI, bypassing the store, to stage faults."""

    def __init__(self, uri: str) -> None:
        parts = urlsplit(uri)
        self._root: Path | None = None
        self._client: ContainerClient | None = None
        if parts.scheme == "file":
            self._root = Path(unquote(parts.path))
        else:
            self._client = ContainerClient.from_connection_string(
                os.environ["AZURE_STORAGE_CONNECTION_STRING"], parts.netloc
            )
            self._prefix = parts.path.strip("/") + "/"

    def put(self, key: str, data: bytes) -> None:
        if self._root is not None:
            path = self._root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            assert self._client is not None
            with contextlib.suppress(ResourceExistsError):
                self._client.create_container()
            self._client.upload_blob(self._prefix + key, data, overwrite=True)

    def get(self, key: str) -> bytes:
        if self._root is not None:
            return (self._root / key).read_bytes()
        assert self._client is not None
        return self._client.download_blob(self._prefix + key).readall()

    def exists(self, key: str) -> bool:
        if self._root is not None:
            return (self._root / key).is_file()
        assert self._client is not None
        return self._client.get_blob_client(self._prefix + key).exists()


@pytest.fixture(params=["file", "azureblob"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return (tmp_path / "store").as_uri()
    uri: str = request.getfixturevalue("azure_store_uri")
    return uri


@pytest.fixture
def store(store_uri: str) -> ModelStore:
    return open_store(store_uri)


@pytest.fixture
def raw(store_uri: str) -> Raw:
    return Raw(store_uri)


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --- the contract, for both backends ---------------------------------------------------------------


def test_publish_list_read_fetch_roundtrip(store: ModelStore, tmp_path: Path) -> None:
    local = write_model(tmp_path / "model")

    assert store.publish(tmp_path / "model", NAME) == local
    assert store.versions(NAME) == [VERSION]
    assert store.versions("other") == []
    assert store.manifest(NAME, VERSION) == local
    assert store.describe(NAME, VERSION) == f"{store.uri}/{NAME}/{VERSION}"

    dest = tmp_path / "out" / "current"
    assert store.fetch(NAME, VERSION, dest, expected_sha256=local.sha256.upper()) == local
    assert entries(dest.parent) == ["current"]  # no temp dir left next to it
    assert entries(dest) == [MANIFEST_FILE, MODEL_FILE]
    assert (dest / MODEL_FILE).read_bytes() == b"onnx model bytes"
    assert Manifest.load(dest) == local

    # A restarted init container finds the verified copy and accepts it.
    assert store.fetch(NAME, VERSION, dest) == local


def test_versions_are_complete_ones_in_natural_order(store: ModelStore, raw: Raw, tmp_path: Path) -> None:
    for version in ["10", "2", "1", "20240101T000000Z", "20231231T235959Z"]:
        write_model(tmp_path / version, version.encode(), version=version)
        store.publish(tmp_path / version, NAME)
    raw.put(f"{NAME}/3/{MODEL_FILE}", b"half published")  # no manifest: not a version
    raw.put(f"{NAME}/_junk/{MANIFEST_FILE}", b"{}")  # not a valid version name

    assert store.versions(NAME) == ["1", "2", "10", "20231231T235959Z", "20240101T000000Z"]


def test_versions_are_immutable(store: ModelStore, raw: Raw, tmp_path: Path) -> None:
    write_model(tmp_path / "a", b"first")
    write_model(tmp_path / "b", b"second")
    store.publish(tmp_path / "a", NAME)

    for model_dir in (tmp_path / "a", tmp_path / "b"):
        with pytest.raises(VersionExistsError, match=re.escape(store.describe(NAME, VERSION))):
            store.publish(model_dir, NAME)
    assert raw.get(f"{NAME}/{VERSION}/{MODEL_FILE}") == b"first"


def test_version_override_is_written_into_the_stored_manifest(store: ModelStore, tmp_path: Path) -> None:
    local = write_model(tmp_path / "model")

    stored = store.publish(tmp_path / "model", NAME, version="7")
    store.publish(tmp_path / "model", NAME, version="8")

    assert stored.version == "7"
    assert stored.model_dump(exclude={"version"}) == local.model_dump(exclude={"version"})
    assert store.manifest(NAME, "7") == stored
    assert store.versions(NAME) == ["7", "8"]
    assert Manifest.load(tmp_path / "model") == local  # the local folder is untouched


def test_publish_completes_a_crashed_publish_with_the_same_bytes(
    store: ModelStore, raw: Raw, tmp_path: Path
) -> None:
    local = write_model(tmp_path / "model")
    raw.put(f"{NAME}/{VERSION}/{MODEL_FILE}", b"onnx model bytes")  # crashed before the manifest

    assert store.versions(NAME) == []
    with pytest.raises(VersionNotFoundError):
        store.manifest(NAME, VERSION)
    with pytest.raises(VersionNotFoundError):
        store.fetch(NAME, VERSION, tmp_path / "dest")

    assert store.publish(tmp_path / "model", NAME) == local
    assert store.versions(NAME) == [VERSION]


def test_publish_refuses_a_crashed_publish_with_other_bytes(
    store: ModelStore, raw: Raw, tmp_path: Path
) -> None:
    write_model(tmp_path / "model")
    raw.put(f"{NAME}/{VERSION}/{MODEL_FILE}", b"someone else's model")

    with pytest.raises(VersionExistsError, match=sha256_bytes(b"someone else's model")):
        store.publish(tmp_path / "model", NAME)
    assert store.versions(NAME) == []
    assert not raw.exists(f"{NAME}/{VERSION}/{MANIFEST_FILE}")
    assert raw.get(f"{NAME}/{VERSION}/{MODEL_FILE}") == b"someone else's model"


def test_publish_refuses_a_local_model_that_differs_from_its_manifest(
    store: ModelStore, raw: Raw, tmp_path: Path
) -> None:
    write_model(tmp_path / "model")
    (tmp_path / "model" / MODEL_FILE).write_bytes(b"edited after training")

    with pytest.raises(IntegrityError, match=sha256_bytes(b"edited after training")):
        store.publish(tmp_path / "model", NAME)
    assert not raw.exists(f"{NAME}/{VERSION}/{MODEL_FILE}")


def test_fetch_refuses_a_tampered_model(store: ModelStore, raw: Raw, tmp_path: Path) -> None:
    local = write_model(tmp_path / "model")
    store.publish(tmp_path / "model", NAME)
    raw.put(f"{NAME}/{VERSION}/{MODEL_FILE}", b"tampered")
    dest = tmp_path / "out" / "current"

    with pytest.raises(IntegrityError) as caught:
        store.fetch(NAME, VERSION, dest)
    message = str(caught.value)
    assert f"{store.describe(NAME, VERSION)}/{MODEL_FILE}" in message
    assert sha256_bytes(b"tampered") in message
    assert local.sha256 in message
    assert entries(dest.parent) == []


def test_fetch_refuses_an_unexpected_digest(store: ModelStore, tmp_path: Path) -> None:
    local = write_model(tmp_path / "model")
    store.publish(tmp_path / "model", NAME)
    dest = tmp_path / "out" / "current"

    with pytest.raises(IntegrityError, match=local.sha256):
        store.fetch(NAME, VERSION, dest, expected_sha256="0" * 64)
    with pytest.raises(ValueError, match="64 hex digits"):
        store.fetch(NAME, VERSION, dest, expected_sha256="abc")
    assert entries(dest.parent) == []


def test_fetch_refuses_a_complete_version_without_its_model(
    store: ModelStore, raw: Raw, tmp_path: Path
) -> None:
    local = write_model(tmp_path / "model")
    raw.put(f"{NAME}/{VERSION}/{MANIFEST_FILE}", local.to_json().encode())
    dest = tmp_path / "out" / "current"

    with pytest.raises(IntegrityError, match="missing"):
        store.fetch(NAME, VERSION, dest)
    assert entries(dest.parent) == []


def test_fetch_never_replaces_other_content(store: ModelStore, tmp_path: Path) -> None:
    write_model(tmp_path / "model")
    store.publish(tmp_path / "model", NAME)
    dest = tmp_path / "out" / "current"
    dest.mkdir(parents=True)
    (dest / "other.txt").write_text("keep me")

    with pytest.raises(StoreError, match="absent or empty"):
        store.fetch(NAME, VERSION, dest)
    assert entries(dest.parent) == ["current"]
    assert entries(dest) == ["other.txt"]

    (dest / "other.txt").unlink()  # an empty directory (say, a fresh volume subdir) is fine
    store.fetch(NAME, VERSION, dest)
    assert entries(dest) == [MANIFEST_FILE, MODEL_FILE]


def test_retire_needs_a_complete_version_and_moves_no_bytes(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(VersionNotFoundError, match=re.escape(store.describe(NAME, VERSION))):
        store.retire(NAME, VERSION)
    local = write_model(tmp_path / "model")
    store.publish(tmp_path / "model", NAME)
    store.retire(NAME, VERSION)
    store.retire(NAME, VERSION)  # the operator may repeat itself
    assert store.versions(NAME) == [VERSION]
    assert store.fetch(NAME, VERSION, tmp_path / "out") == local


def test_missing_version(store: ModelStore, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "current"
    with pytest.raises(VersionNotFoundError, match=re.escape(store.describe(NAME, "9"))):
        store.manifest(NAME, "9")
    with pytest.raises(VersionNotFoundError):
        store.fetch(NAME, "9", dest)
    assert not dest.parent.exists()


def test_invalid_manifest(store: ModelStore, raw: Raw, tmp_path: Path) -> None:
    local = write_model(tmp_path / "model")
    raw.put(f"{NAME}/1/{MODEL_FILE}", b"onnx model bytes")
    raw.put(f"{NAME}/1/{MANIFEST_FILE}", b'{"name": "demand"}')
    # A manifest copied into another version's folder must not pass as that version.
    raw.put(f"{NAME}/2/{MODEL_FILE}", b"onnx model bytes")
    raw.put(f"{NAME}/2/{MANIFEST_FILE}", local.to_json().encode())
    dest = tmp_path / "out" / "current"

    with pytest.raises(ManifestError, match="not a valid model manifest"):
        store.manifest(NAME, "1")
    with pytest.raises(ManifestError, match=f"describes {NAME}/{VERSION}"):
        store.manifest(NAME, "2")
    for version in ("1", "2"):
        with pytest.raises(ManifestError):
            store.fetch(NAME, version, dest)
    assert not dest.parent.exists()


def test_invalid_names_and_versions_are_refused(store: ModelStore, tmp_path: Path) -> None:
    write_model(tmp_path / "model")
    with pytest.raises(ValueError, match="model name"):
        store.publish(tmp_path / "model", "Demand_EU")
    with pytest.raises(ValueError, match="model version"):
        store.publish(tmp_path / "model", NAME, version="../1")
    with pytest.raises(ValueError, match="model version"):
        store.fetch(NAME, "..", tmp_path / "dest")


# --- URIs and configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "/abs/dir",
        "s3://bucket/models",
        "file:relative/dir",
        "file://relative/dir",
        "file:///abs/../etc",
        "azureblob://",
        "azureblob:///models",
        "azureblob://Models/x",
        "azureblob://ab/x",
        "azureblob://my--models/x",
        "azureblob://models/a//b",
        "azureblob://models/a/../b",
        "azureblob://models/x?sv=1",
    ],
)
def test_bad_uris_are_refused_by_name(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_URL", "https://acct.blob.core.windows.net")
    with pytest.raises(StoreConfigError, match=re.escape(repr(uri))) as caught:
        open_store(uri)
    assert isinstance(caught.value, ValueError)


def test_uris_are_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_URL", "https://acct.blob.core.windows.net")
    assert open_store("file://localhost/srv/models/").uri == "file:///srv/models"
    assert open_store("azureblob://models").uri == "azureblob://models"
    assert open_store("azureblob://models/retail/eu/").describe(NAME, "3") == (
        "azureblob://models/retail/eu/demand/3"
    )


def test_every_blob_carries_its_lifecycle_state_in_the_blob_index(
    azure_store_uri: str, tmp_path: Path
) -> None:
    """What the lifecycle policy matches (infra/tests/infra/test_lifecycle.py): published versions are
    `servable` from their first byte on, a retired version's blobs are `retired`, nothing else changes."""
    store = open_store(azure_store_uri)
    for version in ("1", "2"):
        write_model(tmp_path / version, version.encode() * 8, version=version)
        store.publish(tmp_path / version, NAME)
    client = ContainerClient.from_connection_string(
        os.environ["AZURE_STORAGE_CONNECTION_STRING"], urlsplit(azure_store_uri).netloc
    )

    def indexed(state: Lifecycle) -> set[str]:
        found = client.find_blobs_by_tags(f"\"{LIFECYCLE_TAG}\" = '{state.value}'")
        return {blob.name for blob in found}

    blobs = {v: {f"models/{NAME}/{v}/{MODEL_FILE}", f"models/{NAME}/{v}/{MANIFEST_FILE}"} for v in ("1", "2")}
    assert indexed(Lifecycle.SERVABLE) == blobs["1"] | blobs["2"]
    assert indexed(Lifecycle.RETIRED) == set()

    store.retire(NAME, "1")
    assert indexed(Lifecycle.SERVABLE) == blobs["2"]
    assert indexed(Lifecycle.RETIRED) == blobs["1"]
    for name in blobs["1"]:
        assert client.get_blob_client(name).get_blob_tags() == {LIFECYCLE_TAG: "retired"}
    assert store.versions(NAME) == ["1", "2"]


def test_azure_needs_an_account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_URL", raising=False)
    with pytest.raises(StoreConfigError, match=r"AZURE_STORAGE_CONNECTION_STRING.*AZURE_STORAGE_ACCOUNT_URL"):
        open_store("azureblob://models/x")


def test_a_malformed_connection_string_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountKey=hunter2-secret;nonsense")
    with pytest.raises(StoreConfigError) as caught:
        open_store("azureblob://models/x")
    assert "hunter2" not in str(caught.value)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_account_is_unavailable_without_leaking_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = base64.b64encode(b"a very secret account key material").decode()
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        f"DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={secret};"
        f"BlobEndpoint=http://127.0.0.1:{_closed_port()}/acct;",
    )
    store = open_store("azureblob://models/x")

    with pytest.raises(StoreUnavailableError, match=re.escape("azureblob://models/x")) as caught:
        store.versions(NAME)
    assert secret not in str(caught.value)
    assert caught.value.__suppress_context__


# --- Azure outages, against a real Azurite ----------------------------------------------------------


def test_a_wrong_key_is_access_denied_without_leaking_it(
    azurite: Azurite, azure_store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = base64.b64encode(b"not the account key of this account").decode()
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string.replace(ACCOUNT_KEY, wrong)
    )
    with pytest.raises(StoreAccessDeniedError, match="refused the credentials: HTTP 403") as caught:
        open_store(azure_store_uri).versions(NAME)
    assert wrong not in str(caught.value)


def test_azurite_outage_fails_cleanly_and_recovers(
    azurite: Azurite, azure_store_uri: str, tmp_path: Path
) -> None:
    store = open_store(azure_store_uri)
    write_model(tmp_path / "v1", b"one", version="1")
    write_model(tmp_path / "v2", b"two", version="2")
    store.publish(tmp_path / "v1", NAME)
    dest = tmp_path / "out" / "current"

    azurite.stop()
    try:
        with pytest.raises(StoreUnavailableError, match=re.escape(store.uri)) as caught:
            store.publish(tmp_path / "v2", NAME)
        assert ACCOUNT_KEY not in str(caught.value)
        with pytest.raises(StoreUnavailableError):
            store.fetch(NAME, "1", dest)
        assert not dest.parent.exists()
    finally:
        azurite.start()

    store.publish(tmp_path / "v2", NAME)
    assert store.versions(NAME) == ["1", "2"]
    assert store.fetch(NAME, "1", dest).sha256 == sha256_bytes(b"one")
    assert (dest / MODEL_FILE).read_bytes() == b"one"


def test_azurite_dying_between_model_and_manifest(
    azurite: Azurite, azure_store_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(azure_store_uri)
    local = write_model(tmp_path / "model")
    backend = store._backend
    real_put = backend.put_new

    def put_then_die(key: str, data: bytes, tags: Mapping[str, str]) -> None:
        real_put(key, data, tags)
        if key.endswith(MODEL_FILE):
            azurite.stop()

    monkeypatch.setattr(backend, "put_new", put_then_die)
    try:
        with pytest.raises(StoreUnavailableError):
            store.publish(tmp_path / "model", NAME)
    finally:
        azurite.start()

    store = open_store(azure_store_uri)
    assert store.versions(NAME) == []  # the half-published version is invisible
    assert store.publish(tmp_path / "model", NAME) == local
    assert store.versions(NAME) == [VERSION]
