"""The model store: immutable model versions in Azure Blob Storage or a local directory.

A version is `<prefix>/<name>/<version>/{model.onnx,manifest.json}`. The store logic lives once in
`ModelStore`; each backend only knows how to create a key that must not exist yet, read, test and list
keys, so the immutability and integrity rules cannot drift between Azure and the local directory.

In Azure every blob carries the blob index tag `LIFECYCLE_TAG`: `servable` from publish on, `retired` once
`forecast retire` says no ForecastModel can serve or roll back to the version. The storage lifecycle policy
(infra/terraform/storage.tf, infra/bicep/main.bicep) tiers only `retired` blobs: an archived blob takes
hours to read, so tiering anything else would fail the next scoring pod that fetches it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import unquote, urlsplit

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import DefaultAzureCredential
from azure.storage.blob import ContainerClient, LinearRetry

from retail_forecast.core.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    SHA256_PATTERN,
    Manifest,
    ManifestError,
    check_name,
    check_version,
    sha256_bytes,
    sha256_file,
)

__all__ = [
    "LIFECYCLE_TAG",
    "IntegrityError",
    "Lifecycle",
    "ModelStore",
    "StoreAccessDeniedError",
    "StoreConfigError",
    "StoreError",
    "StoreUnavailableError",
    "VersionExistsError",
    "VersionNotFoundError",
    "azure_errors",
    "open_store",
]

CONNECTION_STRING_ENV: Final = "AZURE_STORAGE_CONNECTION_STRING"
ACCOUNT_URL_ENV: Final = "AZURE_STORAGE_ACCOUNT_URL"

# A dead endpoint must fail fast enough for an init container or a CLI user to see why, not hang for
# minutes in the SDK's default retries (15 s+ exponential backoff): 3 attempts ~2 s apart, so a refused
# connection fails in ~4 s and an unanswered one in under 20 s.
_CONNECTION_TIMEOUT_S: Final = 5
_READ_TIMEOUT_S: Final = 20
_RETRY_TOTAL: Final = 2
_RETRY_BACKOFF_S: Final = 2

_CONTAINER_PATTERN: Final = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")

LIFECYCLE_TAG: Final = "retail_forecast_lifecycle"


class Lifecycle(StrEnum):
    """Values of `LIFECYCLE_TAG`; the storage lifecycle policy matches `RETIRED` and nothing else."""

    SERVABLE = "servable"
    RETIRED = "retired"


class StoreError(Exception):
    """Base of every model store failure, so callers can catch the store as one thing."""


class StoreConfigError(StoreError, ValueError):
    """The store URI or the environment it needs is unusable; retrying will not help."""


class VersionExistsError(StoreError):
    """Versions are immutable: the version is already published (or taken by different bytes)."""


class VersionNotFoundError(StoreError, LookupError):
    """No complete version (one with a manifest) under that name and version."""


class IntegrityError(StoreError):
    """Model bytes differ from the digest that names them: corrupted or tampered, never to be used."""


class StoreAccessDeniedError(StoreError):
    """The store refused the credentials (a wrong key, a role not granted): retrying as is will not help."""


class StoreUnavailableError(StoreError):
    """The store could not be reached; unlike the other errors this one may pass on a retry."""


class _ExistsError(Exception):
    """Backend signal: the key already exists and was left untouched."""


class _NotFoundError(Exception):
    """Backend signal: the key does not exist."""


class _Backend(Protocol):
    """What a storage service must offer; keys are '/'-separated and relative to the store URI."""

    def put_new(self, key: str, data: bytes, tags: Mapping[str, str]) -> None:
        """Create `key` atomically with its index `tags`, raising `_ExistsError` if it exists: there is no
        overwrite at all."""
        ...

    def set_tags(self, key: str, tags: Mapping[str, str]) -> None:
        """Replace the index tags of an existing `key`; raise `_NotFoundError` when missing."""
        ...

    def get(self, key: str) -> bytes:
        """Raise `_NotFoundError` when missing."""
        ...

    def exists(self, key: str) -> bool: ...

    def keys(self, prefix: str) -> list[str]:
        """All keys below `prefix/`, recursively; empty when nothing (not even the container) exists."""
        ...


def _natural_key(version: str) -> tuple[tuple[int | str, ...], str]:
    # re.split with a capturing group alternates text and digit runs, so positions never mix str and int.
    parts = re.split(r"(\d+)", version)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), version


class ModelStore:
    """Publishes, lists and fetches immutable model versions; build one with `open_store`."""

    def __init__(self, uri: str, backend: _Backend) -> None:
        self._uri = uri
        self._backend = backend

    @property
    def uri(self) -> str:
        return self._uri

    def describe(self, name: str, version: str | None = None) -> str:
        """The full location, for messages and logs."""
        base = self._uri if self._uri.endswith("/") else f"{self._uri}/"  # only "file:///" ends in "/"
        location = base + check_name(name)
        return location if version is None else f"{location}/{check_version(version)}"

    def publish(self, model_dir: Path, name: str, version: str | None = None) -> Manifest:
        """Store `model_dir` as `name`/`version` (default: the manifest's version); return what was stored.

        The stored manifest always carries the name and version it is stored under. The model goes first
        and the manifest last, so a crash leaves an unlisted half-version that a retry with the same bytes
        completes and different bytes cannot take over.
        """
        check_name(name)
        local = Manifest.load(model_dir)
        version = check_version(version if version is not None else local.version)
        model_path = model_dir / MODEL_FILE
        try:
            # Upload exactly the bytes that were verified, not a second read of a file that may change.
            data = model_path.read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read {model_path}: {exc.strerror or exc}") from None
        actual = sha256_bytes(data)
        if actual != local.sha256:
            raise IntegrityError(f"{model_path} has sha256 {actual}, its manifest names {local.sha256}")
        stored = local
        if (local.name, local.version) != (name, version):
            stored = local.model_copy(update={"name": name, "version": version})

        location = self.describe(name, version)
        model_key, manifest_key = (
            self._key(name, version, MODEL_FILE),
            self._key(name, version, MANIFEST_FILE),
        )
        if self._backend.exists(manifest_key):
            raise VersionExistsError(f"{location} is already published; versions are immutable")
        servable = {LIFECYCLE_TAG: Lifecycle.SERVABLE.value}
        try:
            self._backend.put_new(model_key, data, servable)
        except _ExistsError:
            try:
                existing = sha256_bytes(self._backend.get(model_key))
            except _NotFoundError:
                existing = "<missing>"
            if existing != actual:
                raise VersionExistsError(
                    f"{location} holds {MODEL_FILE} from an unfinished publish with sha256 {existing}, "
                    f"this model has sha256 {actual}; publish under another version"
                ) from None
        try:
            self._backend.put_new(manifest_key, stored.to_json().encode(), servable)
        except _ExistsError:
            raise VersionExistsError(f"{location} is already published; versions are immutable") from None
        return stored

    def retire(self, name: str, version: str) -> None:
        """Mark a complete version as one no ForecastModel serves or may roll back to, so that the storage
        lifecycle policy may tier it (Cool, then Archive where the account supports it).

        The caller (`forecast retire`, run by the publishing pipeline, which may write) owns that decision.
        To serve a retired version again, rehydrate its blobs to Hot first and tag them servable again.
        """
        location = self.describe(name, version)
        if not self._backend.exists(self._key(name, version, MANIFEST_FILE)):
            raise VersionNotFoundError(f"{location} does not exist (no {MANIFEST_FILE})")
        retired = {LIFECYCLE_TAG: Lifecycle.RETIRED.value}
        for file in (MODEL_FILE, MANIFEST_FILE):
            try:
                self._backend.set_tags(self._key(name, version, file), retired)
            except _NotFoundError:
                raise IntegrityError(f"{location}/{file} is missing although its manifest exists") from None

    def versions(self, name: str) -> list[str]:
        """Complete versions only, oldest first: '2' before '10', timestamps chronologically."""
        prefix = check_name(name)
        found = set()
        for key in self._backend.keys(prefix):
            parts = key.split("/")
            if len(parts) == 3 and parts[2] == MANIFEST_FILE:
                with contextlib.suppress(ValueError):
                    found.add(check_version(parts[1]))
        return sorted(found, key=_natural_key)

    def manifest(self, name: str, version: str) -> Manifest:
        """The stored manifest, refused if it does not describe the version it is stored as."""
        location = self.describe(name, version)
        try:
            text = self._backend.get(self._key(name, version, MANIFEST_FILE))
        except _NotFoundError:
            raise VersionNotFoundError(f"{location} does not exist (no {MANIFEST_FILE})") from None
        manifest = Manifest.from_json(text, source=f"{location}/{MANIFEST_FILE}")
        if (manifest.name, manifest.version) != (name, version):
            raise ManifestError(
                f"{location}/{MANIFEST_FILE} describes {manifest.name}/{manifest.version}, "
                f"not {name}/{version}"
            )
        return manifest

    def fetch(self, name: str, version: str, dest: Path, expected_sha256: str | None = None) -> Manifest:
        """Download a version into the new directory `dest`, verified before any byte lands there.

        `dest` appears complete or not at all (built in a sibling temp dir, then renamed). A `dest` that
        already holds this exact verified version is accepted as is, so a restarted init container works.
        """
        if expected_sha256 is not None:
            expected_sha256 = expected_sha256.lower()
            if not SHA256_PATTERN.fullmatch(expected_sha256):
                raise ValueError(f"expected sha256 {expected_sha256!r} is not 64 hex digits")
        manifest = self.manifest(name, version)
        blob = f"{self.describe(name, version)}/{MODEL_FILE}"
        if expected_sha256 is not None and manifest.sha256 != expected_sha256:
            raise IntegrityError(
                f"{blob}: the manifest names sha256 {manifest.sha256}, the caller expects {expected_sha256}"
            )
        manifest_text = manifest.to_json().encode()
        if _holds(dest, manifest, manifest_text):
            return manifest
        try:
            data = self._backend.get(self._key(name, version, MODEL_FILE))
        except _NotFoundError:
            raise IntegrityError(f"{blob} is missing although its manifest exists") from None
        actual = sha256_bytes(data)
        if actual != manifest.sha256:
            raise IntegrityError(f"{blob} has sha256 {actual}, the manifest names {manifest.sha256}")

        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        except OSError as exc:
            raise StoreError(f"cannot create a directory next to {dest}: {exc.strerror or exc}") from None
        try:
            try:
                _write_synced(tmp / MODEL_FILE, data)
                _write_synced(tmp / MANIFEST_FILE, manifest_text)
                tmp.chmod(0o755)  # mkdtemp makes it 0700; serving may run as another user
            except OSError as exc:
                raise StoreError(f"cannot write {tmp}: {exc.strerror or exc}") from None
            try:
                tmp.rename(dest)  # atomic; replaces only an empty directory
            except OSError as exc:
                raise StoreError(
                    f"cannot create {dest}: {exc.strerror or exc} (it must be absent or empty)"
                ) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return manifest

    @staticmethod
    def _key(name: str, version: str, file: str) -> str:
        return f"{check_name(name)}/{check_version(version)}/{file}"


def _holds(dest: Path, manifest: Manifest, manifest_text: bytes) -> bool:
    """Whether `dest` already is this version, verified."""
    try:
        return (dest / MANIFEST_FILE).read_bytes() == manifest_text and sha256_file(
            dest / MODEL_FILE
        ) == manifest.sha256
    except OSError:
        return False


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


class _LocalBackend:
    """A directory tree; a key is a file path below `root`. Nothing tiers a directory, so it keeps no tags."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def _path(self, key: str) -> Path:
        return self._root.joinpath(*key.split("/"))

    def put_new(self, key: str, data: bytes, tags: Mapping[str, str]) -> None:
        path = self._path(key)
        with _os_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                tmp.chmod(0o644)
                # A hard link publishes the complete file atomically and fails if the name exists,
                # which is the local equivalent of Azure's If-None-Match: * upload.
                os.link(tmp, path)
            except FileExistsError:
                raise _ExistsError(key) from None
            finally:
                tmp.unlink(missing_ok=True)

    def set_tags(self, key: str, tags: Mapping[str, str]) -> None:
        if not self.exists(key):
            raise _NotFoundError(key)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        with _os_errors(path):
            try:
                return path.read_bytes()
            except FileNotFoundError:
                raise _NotFoundError(key) from None

    def exists(self, key: str) -> bool:
        path = self._path(key)
        with _os_errors(path):
            return path.is_file()

    def keys(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        with _os_errors(base):
            if not base.is_dir():
                return []
            return [
                path.relative_to(self._root).as_posix()
                for path in base.rglob("*")
                if path.is_file() and not path.name.startswith(".")
            ]


@contextlib.contextmanager
def _os_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except (_ExistsError, _NotFoundError):
        raise
    except OSError as exc:
        raise StoreError(f"model store file {path}: {exc.strerror or exc}") from None


def container_client(uri: str, container: str) -> ContainerClient:
    """A client for one container, credentials from the environment (module docstring of `open_store`),
    with timeouts and retries that fail fast; `uri` only names the target in errors."""
    options: dict[str, Any] = {
        "connection_timeout": _CONNECTION_TIMEOUT_S,
        "read_timeout": _READ_TIMEOUT_S,
        "retry_policy": LinearRetry(
            backoff=_RETRY_BACKOFF_S, random_jitter_range=1, retry_total=_RETRY_TOTAL
        ),
    }
    connection_string = os.environ.get(CONNECTION_STRING_ENV, "").strip()
    account_url = os.environ.get(ACCOUNT_URL_ENV, "").strip()
    if connection_string:
        try:
            return ContainerClient.from_connection_string(connection_string, container, **options)
        except ValueError:
            # The SDK's message is safe today, but the string holds a key: never risk echoing it.
            raise StoreConfigError(
                f"{CONNECTION_STRING_ENV} is not a valid storage connection string (for {uri})"
            ) from None
    if account_url:
        try:
            return ContainerClient(account_url, container, credential=DefaultAzureCredential(), **options)
        except ValueError as exc:
            raise StoreConfigError(f"{ACCOUNT_URL_ENV} is unusable for {uri}: {exc}") from None
    raise StoreConfigError(
        f"{uri} needs a storage account: set {CONNECTION_STRING_ENV} (e.g. for Azurite) or "
        f"{ACCOUNT_URL_ENV} (https://<account>.blob.core.windows.net, with workload identity)"
    )


class _AzureBackend:
    """One blob container; a key is a blob name below `prefix`."""

    def __init__(self, uri: str, container: str, prefix: str) -> None:
        self._uri = uri
        self._prefix = f"{prefix}/" if prefix else ""
        self._client = container_client(uri, container)

    def put_new(self, key: str, data: bytes, tags: Mapping[str, str]) -> None:
        with self._errors():
            try:
                self._upload_new(key, data, tags)
                return
            except ResourceNotFoundError as exc:
                if _error_code(exc) != "ContainerNotFound":
                    raise
            try:
                self._client.create_container()
            except ResourceExistsError as exc:
                if _error_code(exc) != "ContainerAlreadyExists":  # e.g. ContainerBeingDeleted
                    raise
            self._upload_new(key, data, tags)

    def _upload_new(self, key: str, data: bytes, tags: Mapping[str, str]) -> None:
        try:
            # overwrite=False sends If-None-Match: *, so the service itself enforces immutability; the tags
            # travel in the same request, so no blob is ever untagged.
            self._client.upload_blob(self._prefix + key, data, overwrite=False, tags=dict(tags))
        except ResourceExistsError as exc:
            if _error_code(exc) != "BlobAlreadyExists":
                raise
            raise _ExistsError(key) from None

    def get(self, key: str) -> bytes:
        with self._errors():
            try:
                return self._client.download_blob(self._prefix + key).readall()
            except ResourceNotFoundError as exc:
                # Only the service's own verdict counts: a bare 404 (wrong endpoint, a proxy) is an error.
                if _error_code(exc) not in ("BlobNotFound", "ContainerNotFound"):
                    raise
                raise _NotFoundError(key) from None

    def set_tags(self, key: str, tags: Mapping[str, str]) -> None:
        with self._errors():
            try:
                self._client.get_blob_client(self._prefix + key).set_blob_tags(dict(tags))
            except ResourceNotFoundError as exc:
                if _error_code(exc) not in ("BlobNotFound", "ContainerNotFound"):
                    raise
                raise _NotFoundError(key) from None

    def exists(self, key: str) -> bool:
        with self._errors():
            return self._client.get_blob_client(self._prefix + key).exists()

    def keys(self, prefix: str) -> list[str]:
        start = f"{self._prefix}{prefix}/"
        with self._errors():
            try:
                names = self._client.list_blob_names(name_starts_with=start)
                return [name[len(self._prefix) :] for name in names]
            except ResourceNotFoundError as exc:
                if _error_code(exc) != "ContainerNotFound":
                    raise
                return []

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return azure_errors(f"model store {self._uri}")


@contextlib.contextmanager
def azure_errors(subject: str) -> Iterator[None]:
    """Translate SDK errors into store errors that name `subject` and never carry credentials."""
    try:
        yield
    except (_ExistsError, _NotFoundError):
        raise
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise StoreUnavailableError(f"{subject} is unreachable: {_redact(exc)}") from None
    except ClientAuthenticationError as exc:
        raise StoreAccessDeniedError(f"{subject} refused the credentials: {_redact(exc)}") from None
    except HttpResponseError as exc:
        if exc.status_code in {401, 403}:  # a wrong key (a bad signature) or a role not granted
            raise StoreAccessDeniedError(
                f"{subject} refused the credentials: HTTP {exc.status_code} {_error_code(exc) or exc.reason}"
            ) from None
        raise StoreError(
            f"{subject} failed: HTTP {exc.status_code} {_error_code(exc) or exc.reason}"
        ) from None
    except AzureError as exc:
        raise StoreError(f"{subject} failed: {_redact(exc)}") from None


def _error_code(exc: HttpResponseError) -> str | None:
    # The storage SDK attaches the service's error code at runtime; it is not in the type stubs.
    code = getattr(exc, "error_code", None)
    return str(code) if code else None


def _redact(exc: BaseException) -> str:
    """First line of an SDK message with URL queries removed: a SAS token would sit in the query."""
    lines = str(exc).strip().splitlines()
    text = re.sub(r"\?[^\s'\"]*", "?<redacted>", lines[0] if lines else "")
    return f"{type(exc).__name__}: {text}"[:300]


def open_store(uri: str) -> ModelStore:
    """Open `file:///abs/dir` or `azureblob://<container>/<prefix>`; no network traffic happens here."""
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise StoreConfigError(f"model store URI {uri!r} is malformed: {exc}") from None
    if parts.query or parts.fragment:
        raise StoreConfigError(f"model store URI {uri!r} must not have a query or fragment")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise StoreConfigError(f"model store URI {uri!r} must be file:///absolute/path")
        root = Path(unquote(parts.path))
        if ".." in root.parts:
            raise StoreConfigError(f"model store URI {uri!r} must not contain '..'")
        return ModelStore(f"file://{root.as_posix()}", _LocalBackend(root))
    if parts.scheme == "azureblob":
        container, prefix = split_azureblob(uri)
        normal = f"azureblob://{container}" + (f"/{prefix}" if prefix else "")
        return ModelStore(normal, _AzureBackend(normal, container, prefix))
    raise StoreConfigError(
        f"model store URI {uri!r} is not supported: use file:///absolute/path or azureblob://<container>/<prefix>"
    )


def split_azureblob(uri: str) -> tuple[str, str]:
    """`azureblob://<container>[/<path>]` as (container, path without surrounding '/'), checked."""
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise StoreConfigError(f"URI {uri!r} is malformed: {exc}") from None
    if parts.scheme != "azureblob" or parts.query or parts.fragment:
        raise StoreConfigError(
            f"URI {uri!r} must be azureblob://<container>/<path>, without query or fragment"
        )
    container = parts.netloc
    if not _CONTAINER_PATTERN.fullmatch(container):
        raise StoreConfigError(
            f"URI {uri!r} must be azureblob://<container>[/<prefix>] with a container "
            "name of 3-63 lower-case letters, digits and single '-'"
        )
    path = parts.path.strip("/")
    if any(s in ("", ".", "..") for s in (path.split("/") if path else [])):
        raise StoreConfigError(f"URI {uri!r} has an empty, '.' or '..' path segment")
    return container, path
