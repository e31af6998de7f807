"""`forecast predict --data`: a local path, or an `azureblob://<container>/<path>` CSV or Parquet file.

A blob is read through a local copy so that the reading, validation and gap policy stay those of a local
file (`predict.read_window`): its size is checked against a limit before any byte is downloaded, the
download is pinned to the checked version (ETag), and the copy lives in the process's temp dir only while
it is read; it is removed afterwards, also on failure. Credentials and URI rules are the model store's
(`core/store.py`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Final

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError

from retail_forecast.core.schema import DataError
from retail_forecast.core.store import StoreError, azure_errors, container_client, split_azureblob

CSV_SUFFIXES: Final = frozenset({".csv"})
PARQUET_SUFFIXES: Final = frozenset({".parquet", ".pq"})
DEFAULT_MAX_INPUT_BYTES: Final = 20 << 30


def is_blob(data: str | Path) -> bool:
    return str(data).startswith("azureblob://")


def unsupported_suffix(source: str, suffix: str) -> DataError:
    return DataError(f"{source}: unsupported file type {suffix!r}; use .csv, .parquet or an M5 folder")


@contextlib.contextmanager
def local_input(data: str | Path, max_bytes: int | None = None) -> Iterator[Path]:
    """The path to read `data` from: `data` itself when local, else a temporary copy of the blob of at
    most `max_bytes` (default `DEFAULT_MAX_INPUT_BYTES`)."""
    if not is_blob(data):
        yield Path(data)
        return
    uri = str(data)
    container, name = split_azureblob(uri)
    suffix = PurePosixPath(name).suffix.lower()
    if not name:
        raise DataError(f"{uri}: name a blob, azureblob://<container>/<path>.csv or .parquet")
    if suffix not in CSV_SUFFIXES | PARQUET_SUFFIXES:
        raise unsupported_suffix(uri, suffix)
    blob = container_client(uri, container).get_blob_client(name)
    with azure_errors(f"input {uri}"):
        try:
            properties = blob.get_blob_properties()
        except ResourceNotFoundError:
            raise StoreError(f"input {uri}: no such blob") from None
    limit = DEFAULT_MAX_INPUT_BYTES if max_bytes is None else max_bytes
    if properties.size > limit:
        raise DataError(
            f"{uri}: {properties.size} bytes is more than --max-input-bytes {limit}; nothing downloaded"
        )
    fd, tmp_name = tempfile.mkstemp(prefix="forecast-input-", suffix=suffix)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle, azure_errors(f"input {uri}"):
            try:
                # pinned to the version whose size was checked: a blob replaced meanwhile fails (412)
                stream = blob.download_blob(
                    etag=properties.etag, match_condition=MatchConditions.IfNotModified
                )
            except ResourceNotFoundError:
                raise StoreError(f"input {uri}: no such blob") from None
            stream.readinto(handle)
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)
