"""One forecast run = one Parquet file, which appears whole or not at all, and is never overwritten.

Local paths: the file is written under a hidden temporary name in the target's folder, synced, then
hard-linked to its name (atomic, and refused if the name exists) and the temporary name removed.
`azureblob://<container>/<path>`: the Parquet bytes are uploaded as staged blocks while chunks are
written, and the blob comes into being only when the block list is committed at the end, on the condition
that no blob of that name exists; staged blocks of a failed run are never visible (Azure drops them after
a week). Memory holds one chunk's table and one block.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq
from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobBlock, BlobClient

from retail_forecast.core.store import StoreError, azure_errors, container_client, split_azureblob

BLOCK_BYTES: Final = 8 << 20


class OutputExistsError(StoreError):
    """A run's output is written once: the target already exists."""


def _is_blob(target: str) -> bool:
    return target.startswith("azureblob://")


def _local_path(target: str) -> Path:
    return Path(target.removeprefix("file://")) if target.startswith("file://") else Path(target)


def _blob(target: str, *, create_container: bool = False) -> BlobClient:
    container, path = split_azureblob(target)
    if not path:
        raise StoreError(f"{target}: name a blob, azureblob://<container>/<path>.parquet")
    client = container_client(target, container)
    if create_container:
        with _azure_errors(target), contextlib.suppress(ResourceExistsError):
            client.create_container()
    return client.get_blob_client(path)


@contextlib.contextmanager
def _azure_errors(target: str) -> Iterator[None]:
    """The store's translation (unreachable, access denied, credentials never shown), plus one of ours: a
    blob that exists already, or appeared while the run was written, is a run that must not be replaced."""
    with azure_errors(target):
        try:
            yield
        except (ResourceExistsError, ResourceModifiedError):
            raise OutputExistsError(f"{target} already exists; a forecast run is written once") from None


class _StagedBlocks(io.RawIOBase):
    """A write-only stream that stages its bytes as blocks of one blob; `commit` makes the blob."""

    def __init__(self, blob: BlobClient, target: str) -> None:
        self._blob = blob
        self._target = target
        self._buffer = bytearray()
        self._blocks: list[BlobBlock] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._buffer += data
        self._position += len(data)
        if len(self._buffer) >= BLOCK_BYTES:
            self._stage()
        return len(data)

    def _stage(self) -> None:
        if not self._buffer:
            return
        block_id = base64.b64encode(f"{len(self._blocks):08d}".encode()).decode()
        with _azure_errors(self._target):
            self._blob.stage_block(block_id, bytes(self._buffer))
        self._blocks.append(BlobBlock(block_id=block_id))
        self._buffer.clear()

    def commit(self, metadata: dict[str, str]) -> None:
        self._stage()
        with _azure_errors(self._target):
            self._blob.commit_block_list(
                self._blocks, metadata=metadata, match_condition=MatchConditions.IfMissing
            )


def write_forecasts(target: str, schema: pa.Schema, tables: Iterable[pa.Table]) -> int:
    """Write the tables as one Parquet file (a row group each) to `target`; return the rows written.

    Nothing is visible at `target` unless every table was written (see the module docstring).
    """
    metadata = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    rows = 0
    if _is_blob(target):
        blob = _blob(target, create_container=True)
        with _azure_errors(target):
            if blob.exists():
                raise OutputExistsError(f"{target} already exists; a forecast run is written once")
        sink = _StagedBlocks(blob, target)
        with pq.ParquetWriter(sink, schema) as writer:
            for table in tables:
                writer.write_table(table)
                rows += table.num_rows
        sink.commit({k: v for k, v in metadata.items() if k.startswith("model_")})
        return rows
    path = _local_path(target)
    if path.exists():
        raise OutputExistsError(f"{path} already exists; a forecast run is written once")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            with pq.ParquetWriter(handle, schema) as writer:
                for table in tables:
                    writer.write_table(table)
                    rows += table.num_rows
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(0o644)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise OutputExistsError(f"{path} already exists; a forecast run is written once") from None
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def read_forecasts(target: str) -> pa.Table:
    """A complete forecast run, local or in Azure (a failed run does not exist)."""
    if _is_blob(target):
        blob = _blob(target)
        with _azure_errors(target):
            try:
                data = blob.download_blob().readall()
            except ResourceNotFoundError:
                raise StoreError(f"{target}: no such forecast run") from None
        return pq.read_table(pa.BufferReader(data))
    path = _local_path(target)
    if not path.is_file():
        raise StoreError(f"{path}: no such forecast run")
    return pq.read_table(path)
