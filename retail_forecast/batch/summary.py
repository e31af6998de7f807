"""A finished `forecast predict` run in one JSON line, and its parse.

The batch CronJob's container writes it to its termination message (`--summary-file`), where the kubelet
keeps it in the pod's `state.terminated.message`: the operator reads the run's outcome from the API, not
from logs. Pure and light (pydantic only): the operator imports it without the batch extras.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError

# Kubernetes' default terminationMessagePath; the kubelet keeps at most 4096 bytes of the message.
TERMINATION_LOG: Final = "/dev/termination-log"
MAX_MESSAGE_BYTES: Final = 4096


class RunSummary(BaseModel):
    """What a run wrote, with no secret: store credentials never appear in an output URI (no query)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    model: str
    version: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    output: str
    series: NonNegativeInt  # series in the history window
    forecast: NonNegativeInt  # series forecast (the others were skipped, `PredictReport` says why)
    rows: NonNegativeInt

    def message(self) -> str:
        return self.model_dump_json()


def parse_summary(message: str | None) -> RunSummary | None:
    """The summary a termination message holds; None when it holds none (absent, truncated, a log tail)."""
    if not message or len(message.encode()) > MAX_MESSAGE_BYTES:
        return None
    try:
        return RunSummary.model_validate_json(message)
    except ValidationError:
        return None
