"""Submit the packaged Azure ML training jobs (`aml/*.yml`) to a workspace.

`azure-ai-ml` is the optional extra `retail-forecast[aml]` and takes seconds to import, so it is
imported inside the functions that need it: `forecast --help` and the rest of the package never pay for
it, and a missing extra is reported as an `AmlError` instead of a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

JobKind = Literal["command", "sweep", "partition"]

_AML_DIR = Path(__file__).resolve().with_name("aml")
_JOB_FILES: dict[str, str] = {
    "command": "train-job.yml",
    "sweep": "sweep-job.yml",
    "partition": "partition-job.yml",  # a pipeline of one parallel step: a model per store
}

# (keyword argument, environment variable, CLI flag) for each part of the workspace address
_WORKSPACE_SETTINGS = (
    ("subscription_id", "AZURE_SUBSCRIPTION_ID", "--subscription"),
    ("resource_group", "AZURE_RESOURCE_GROUP", "--resource-group"),
    ("workspace", "AZUREML_WORKSPACE_NAME", "--workspace"),
)

# Override keys that set a job attribute rather than a job input.
_JOB_ATTRIBUTES = ("compute", "experiment_name", "display_name")

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REMOTE_PATH = re.compile(r"^(azureml:|[A-Za-z][A-Za-z0-9+.-]*://)")
_FINAL_OK = "Completed"


class AmlError(RuntimeError):
    """A problem the user can fix (configuration, missing extra, bad override); no traceback needed."""


class AmlJobFailedError(AmlError):
    """The job ran (so it has a studio page worth showing) but did not complete."""

    def __init__(self, name: str, status: str, url: str | None) -> None:
        super().__init__(f"Azure ML job {name} ended with status {status}" + (f": {url}" if url else ""))
        self.name = name
        self.status = status
        self.url = url


def job_path(kind: JobKind) -> Path:
    """The packaged job YAML, so callers need not know where package data lands."""
    try:
        return _AML_DIR / _JOB_FILES[kind]
    except KeyError:
        raise ValueError(f"unknown job kind {kind!r}; expected one of {sorted(_JOB_FILES)}") from None


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """Turn repeated `--set key=value` arguments into a dict, rejecting typos early and by name."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise ValueError(f"malformed override {pair!r}: expected key=value, e.g. horizon=14")
        if key in result:
            raise ValueError(f"override {key!r} given more than once")
        result[key] = value
    return result


def workspace_config(
    subscription_id: str | None = None,
    resource_group: str | None = None,
    workspace: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> tuple[str, str, str]:
    """Resolve the workspace address from arguments, then the environment, naming everything missing."""
    env = os.environ if environ is None else environ
    given = {"subscription_id": subscription_id, "resource_group": resource_group, "workspace": workspace}
    values: list[str] = []
    missing: list[str] = []
    for arg, var, flag in _WORKSPACE_SETTINGS:
        value = given[arg] or env.get(var, "").strip()
        if value:
            values.append(value)
        else:
            missing.append(f"{arg.replace('_', ' ')} ({flag} or ${var})")
    if missing:
        raise AmlError("Azure ML workspace not configured; missing " + ", ".join(missing))
    return values[0], values[1], values[2]


def _require_azure_ai_ml() -> Any:
    try:
        import azure.ai.ml as aml  # noqa: PLC0415  (optional and slow: imported on use)
    except ImportError as exc:
        raise AmlError(
            f"Azure ML support needs the optional extra: pip install 'retail-forecast[aml]' ({exc.msg})"
        ) from exc
    return aml


def load(job_yaml: Path, *, overrides: Mapping[str, str] | None = None, code: Path | None = None) -> Any:
    """Load a job YAML and apply overrides offline, so every mistake surfaces before any network call.

    `code` replaces the YAML's `code:` folder: the packaged YAMLs point at the repository root via
    `../..`, which only exists for a source checkout or an editable install.
    """
    aml = _require_azure_ai_ml()
    job_yaml = Path(job_yaml).resolve()
    if not job_yaml.is_file():
        raise AmlError(f"job file not found: {job_yaml}")
    job = aml.load_job(job_yaml)
    target = _code_owner(job)
    if code is not None:
        target.code = str(Path(code).resolve())
    code_dir = (job_yaml.parent / str(target.code)).resolve()
    if not (code_dir / "pyproject.toml").is_file():
        raise AmlError(
            f"code folder {code_dir} is not a retail-forecast source tree (no pyproject.toml);"
            " pass the repository root as code"
        )
    for key, value in (overrides or {}).items():
        _apply_override(aml, job, key, value)
    return job


def _code_owner(job: Any) -> Any:
    """What holds the job's `code:` folder: the job, a sweep's trial or a pipeline's one step's task."""
    if job.type == "sweep":
        return job.trial
    if job.type == "pipeline":
        (step,) = job.jobs.values()
        return step.task
    return job


def _apply_override(aml: Any, job: Any, key: str, value: str) -> None:
    if key in _JOB_ATTRIBUTES:
        setattr(job, key, value)
        return
    if key not in job.inputs:
        known = sorted([*job.inputs, *_JOB_ATTRIBUTES])
        raise AmlError(f"unknown override {key!r}; this job accepts {', '.join(known)}")
    current = job.inputs[key]
    current = getattr(current, "_data", current)  # command jobs wrap each input in a NodeInput
    new = _coerce(aml, key, current, value)
    if job.type == "sweep":
        job.inputs[key] = new
    else:
        setattr(job.inputs, key, new)  # attribute assignment re-wraps it; item assignment does not


def _coerce(aml: Any, key: str, current: Any, value: str) -> Any:
    """Keep each input's declared type: a string where an integer is declared fails only on Azure."""
    if isinstance(current, aml.Input):
        path = value
        if not _REMOTE_PATH.match(value):
            local = Path(value).expanduser().resolve()
            if not local.exists():
                raise AmlError(f"override {key}={value}: local path {local} does not exist")
            path = str(local)  # uploaded on submit
        return aml.Input(type=current.type, path=path, mode=current.mode)
    kind: type[Any] = type(current)
    if kind is bool:
        lowered = value.strip().lower()
        if lowered not in {"true", "false"}:
            raise AmlError(f"override {key}={value}: expected true or false")
        return lowered == "true"
    if kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            raise AmlError(
                f"override {key}={value}: expected {'an integer' if kind is int else 'a number'}"
            ) from None
    return value


def submit(
    job_yaml: Path,
    *,
    subscription_id: str | None = None,
    resource_group: str | None = None,
    workspace: str | None = None,
    overrides: Mapping[str, str] | None = None,
    code: Path | None = None,
    wait: bool = False,
) -> str:
    """Submit a job and return its studio URL (or its name when the service gives no URL).

    Workspace parameters fall back to AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and
    AZUREML_WORKSPACE_NAME. With `wait`, streams the logs and raises `AmlJobFailedError` unless the job
    completes, so a CI step can gate on it.
    """
    sub, group, ws = workspace_config(subscription_id, resource_group, workspace)
    job = load(job_yaml, overrides=overrides, code=code)
    aml = _require_azure_ai_ml()
    from azure.identity import DefaultAzureCredential  # noqa: PLC0415  (only needed on submit)

    client = aml.MLClient(
        DefaultAzureCredential(), subscription_id=sub, resource_group_name=group, workspace_name=ws
    )
    created = client.jobs.create_or_update(job)
    name: str = created.name
    url: str | None = getattr(created, "studio_url", None)
    if wait:
        try:
            client.jobs.stream(name)
        except Exception as exc:  # the SDK raises its own JobException on a failed run; report it as ours
            raise AmlJobFailedError(name, _status(client, name), url) from exc
        status = _status(client, name)
        if status != _FINAL_OK:
            raise AmlJobFailedError(name, status, url)
    return url or name


def _status(client: Any, name: str) -> str:
    try:
        return str(client.jobs.get(name).status)
    except Exception:  # a status lookup must not hide the failure being reported
        return "unknown"
