"""`forecast predict --data azureblob://…`: a real Azurite blob read like the same local file, bounded, and
its temporary copy gone afterwards whatever happened."""

from __future__ import annotations

import base64
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from azure.storage.blob import ContainerClient

from retail_forecast.batch.input import local_input
from retail_forecast.batch.predict import predict
from retail_forecast.cli import EXIT_STORE, EXIT_USAGE, main
from retail_forecast.core.schema import DataError
from retail_forecast.core.store import StoreAccessDeniedError, StoreError
from retail_forecast.inference.model import load_model
from tests.azurite import ACCOUNT_KEY, Azurite
from tests.batch.runs import ORIGIN, sales


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The process's temp dir, watched: a test fails if a copy of the input is left in it."""
    folder = tmp_path / "process-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def container(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[ContainerClient]:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_URL", raising=False)
    client = ContainerClient.from_connection_string(azurite.connection_string, f"in-{uuid.uuid4().hex[:20]}")
    client.create_container()
    yield client
    client.delete_container()


def _uri(container: ContainerClient, name: str) -> str:
    return f"azureblob://{container.container_name}/{name}"


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_blob_forecasts_exactly_like_the_same_local_file(
    suffix: str, model_dir: Path, container: ContainerClient, temp_dir: Path, tmp_path: Path
) -> None:
    local = tmp_path / f"sales{suffix}"
    sales(local)
    container.upload_blob(f"daily/sales{suffix}", local.read_bytes())
    model = load_model(model_dir)

    from_file = predict(local, model, str(tmp_path / "file.parquet"), origin=ORIGIN)
    from_blob = predict(
        _uri(container, f"daily/sales{suffix}"), model, str(tmp_path / "blob.parquet"), origin=ORIGIN
    )

    assert from_blob.rows == from_file.rows > 0
    assert pq.read_table(tmp_path / "blob.parquet").equals(pq.read_table(tmp_path / "file.parquet"))
    assert list(temp_dir.iterdir()) == []


def test_a_missing_blob_is_a_clear_store_error(
    model_dir: Path, container: ContainerClient, temp_dir: Path, tmp_path: Path
) -> None:
    uri = _uri(container, "nowhere/sales.csv")
    with pytest.raises(StoreError, match="no such blob"):
        predict(uri, load_model(model_dir), str(tmp_path / "run.parquet"))
    assert list(temp_dir.iterdir()) == []
    assert not (tmp_path / "run.parquet").exists()


def test_a_wrong_key_is_access_denied_without_leaking_it(
    container: ContainerClient, temp_dir: Path, azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    container.upload_blob("sales.csv", b"date,store_id,item_id,sales\n")
    wrong = base64.b64encode(b"not the account key of this account").decode()
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string.replace(ACCOUNT_KEY, wrong)
    )
    with (
        pytest.raises(StoreAccessDeniedError, match="refused the credentials") as caught,
        local_input(_uri(container, "sales.csv")),
    ):
        pytest.fail("no copy of a blob read with a wrong key")
    assert wrong not in str(caught.value) and ACCOUNT_KEY not in str(caught.value)
    assert list(temp_dir.iterdir()) == []


def test_a_blob_that_fails_validation_names_the_uri_and_leaves_no_copy(
    model_dir: Path, container: ContainerClient, temp_dir: Path, tmp_path: Path
) -> None:
    container.upload_blob("bad.csv", b"date,store_id,item_id,sales\nnot-a-date,s1,i1,3\n")
    uri = _uri(container, "bad.csv")
    with pytest.raises(DataError, match=f"^{uri}"):
        predict(uri, load_model(model_dir), str(tmp_path / "run.parquet"))
    assert list(temp_dir.iterdir()) == []


def test_the_cli_refuses_a_large_blob_before_downloading_and_exits_by_convention(
    model_dir: Path,
    container: ContainerClient,
    temp_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    container.upload_blob("sales.csv", b"date,store_id,item_id,sales\n" + b"2022-01-03,s1,i1,3\n" * 100)
    args = ["predict", "--model-dir", str(model_dir), "--out", str(tmp_path / "run.parquet"), "--no-progress"]

    assert main([*args, "--data", _uri(container, "sales.csv"), "--max-input-bytes", "1000"]) == EXIT_USAGE
    assert "more than --max-input-bytes 1000; nothing downloaded" in capsys.readouterr().err
    assert main([*args, "--data", _uri(container, "missing.parquet")]) == EXIT_STORE
    assert "no such blob" in capsys.readouterr().err
    assert main([*args, "--data", _uri(container, "sales.json")]) == EXIT_USAGE
    assert "unsupported file type '.json'" in capsys.readouterr().err
    assert list(temp_dir.iterdir()) == []
