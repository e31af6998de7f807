"""A forecast run appears whole or not at all, locally and in Azure Blob Storage (a real Azurite)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from azure.storage.blob import ContainerClient

from retail_forecast.batch import output
from retail_forecast.batch.output import OutputExistsError, read_forecasts, write_forecasts
from retail_forecast.core.store import StoreAccessDeniedError, StoreError
from tests.azurite import ACCOUNT_KEY, Azurite

SCHEMA = pa.schema(
    [pa.field("store_id", pa.string()), pa.field("yhat", pa.float32())], metadata={"model_name": "demand"}
)


def chunks(count: int, rows: int = 20_000, fail_after: int | None = None) -> Iterator[pa.Table]:
    """`count` tables of random (incompressible: 80 KB a chunk) forecasts; the last value is the chunk's
    number."""
    random = np.random.default_rng(0)
    for k in range(count):
        if fail_after is not None and k == fail_after:
            raise RuntimeError("the job died here")
        yhat = random.random(rows, dtype=np.float32)
        yhat[-1] = k
        yield pa.table({"store_id": [f"s{k}"] * rows, "yhat": pa.array(yhat)}, schema=SCHEMA)


def test_local_run_is_complete_or_absent(tmp_path: Path) -> None:
    target = tmp_path / "runs" / "run.parquet"
    with pytest.raises(RuntimeError, match="died"):
        write_forecasts(str(target), SCHEMA, chunks(3, fail_after=2))
    assert list((tmp_path / "runs").iterdir()) == []  # neither the run nor its temporary file
    assert write_forecasts(str(target), SCHEMA, chunks(3)) == 60_000
    table = read_forecasts(str(target))
    assert table.num_rows == 60_000 and table.schema.metadata[b"model_name"] == b"demand"
    assert table.column("yhat").to_pylist()[-1] == 2.0
    with pytest.raises(OutputExistsError):
        write_forecasts(str(target), SCHEMA, chunks(1))
    assert read_forecasts(str(target)).num_rows == 60_000


@pytest.fixture
def container(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[ContainerClient]:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_URL", raising=False)
    monkeypatch.setattr(output, "BLOCK_BYTES", 64 << 10)  # several blocks per run
    client = ContainerClient.from_connection_string(azurite.connection_string, f"t-{uuid.uuid4().hex[:20]}")
    yield client


def test_blob_run_is_invisible_until_committed(container: ContainerClient) -> None:
    target = f"azureblob://{container.container_name}/forecasts/2024-01-01.parquet"
    with pytest.raises(RuntimeError, match="died"):
        write_forecasts(target, SCHEMA, chunks(4, fail_after=3))
    # blocks were staged (the upload was under way), but no reader can see a blob
    blob = container.get_blob_client("forecasts/2024-01-01.parquet")
    staged = [b.name for b in container.list_blobs(include=["uncommittedblobs"])]
    assert staged == ["forecasts/2024-01-01.parquet"], "nothing was staged: the failure came too early"
    assert list(container.list_blob_names()) == []
    with pytest.raises(StoreError, match="no such forecast run"):
        read_forecasts(target)

    assert write_forecasts(target, SCHEMA, chunks(4)) == 80_000  # a retry writes the whole run
    assert list(container.list_blob_names()) == ["forecasts/2024-01-01.parquet"]
    committed, _ = blob.get_block_list("committed")
    assert len(committed) > 1
    assert blob.get_blob_properties().metadata == {"model_name": "demand"}
    assert read_forecasts(target).column("store_id").to_pylist()[-1] == "s3"
    with pytest.raises(OutputExistsError):
        write_forecasts(target, SCHEMA, chunks(1))
    assert read_forecasts(target).num_rows == 80_000


def test_blob_run_never_replaces_one_that_appeared_meanwhile(container: ContainerClient) -> None:
    """Two runs racing for one name: the commit is conditional (If-None-Match: *), the other run stays."""
    name = "forecasts/race.parquet"

    def racing() -> Iterator[pa.Table]:
        # after write_forecasts found no blob of that name, before it staged anything
        container.upload_blob(name, b"the other run")
        yield from chunks(3)

    with pytest.raises(OutputExistsError):
        write_forecasts(f"azureblob://{container.container_name}/{name}", SCHEMA, racing())
    assert container.download_blob(name).readall() == b"the other run"


def test_a_wrong_key_for_the_output_is_access_denied_without_leaking_it(
    container: ContainerClient, azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's output is refused as the model store and the input are: access denied, key not shown."""
    wrong = base64.b64encode(b"not the account key of this account").decode()
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string.replace(ACCOUNT_KEY, wrong)
    )
    with pytest.raises(StoreAccessDeniedError, match="refused the credentials") as caught:
        write_forecasts(f"azureblob://{container.container_name}/forecasts/x.parquet", SCHEMA, chunks(1))
    assert wrong not in str(caught.value) and ACCOUNT_KEY not in str(caught.value)
