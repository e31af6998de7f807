"""Shared fixtures: a real Azurite for everything that talks to Azure Blob Storage."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.azurite import Azurite, find_azurite_blob


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """One emulator per session; a missing Azurite fails (not skips) so CI can never pass silently."""
    try:
        binary = find_azurite_blob()
    except FileNotFoundError as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:
        pytest.fail(missing, pytrace=False)
    with Azurite(tmp_path_factory.mktemp("azurite"), binary=binary) as server:
        yield server


@pytest.fixture
def azure_store_uri(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> str:
    """An `azureblob://` URI in a fresh (not yet created) container, credentials set in the env."""
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_URL", raising=False)
    return f"azureblob://t-{uuid.uuid4().hex[:24]}/models"
