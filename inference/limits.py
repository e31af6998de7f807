"""What one request may cost and how much the server takes on at once: every bound, in one place.

The settings give the numbers (`ServeSettings.limits()`); the served model adds what only it knows (its
width for the infer body, its `min_history` against the history limit). Each bound is checked before the
work it bounds starts, and each refusal names its limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from retail_forecast.core.features import SPECS
from retail_forecast.core.manifest import Manifest

# An infer body may take this many bytes per value of its largest allowed batch: a float printed at full
# precision with its separator ("-1.2345678901234567e-05, ") takes 25.
JSON_BYTES_PER_VALUE: Final = 32
# Room for everything in an infer body besides its numbers (names, shape, id, parameters).
INFER_ENVELOPE_BYTES: Final = 65536
# The features read at most `min_history` periods before an origin; a few times that is plenty of
# context for a client, and keeps the panel a request builds (series x periods) small.
HISTORY_LIMIT_MULTIPLE: Final = 4
DEFAULT_MAX_HISTORY_PERIODS: Final = HISTORY_LIMIT_MULTIPLE * max(spec.min_history for spec in SPECS.values())
MIB: Final = 1 << 20
# What a client refused as overloaded is told to wait before it retries, in seconds.
RETRY_AFTER_SECONDS: Final = 1


@dataclass(frozen=True)
class Limits:
    """The serving limits; defaults are the settings' defaults."""

    # per request
    max_batch_rows: int = 8192
    max_forecast_series: int = 1000
    max_history_periods: int = DEFAULT_MAX_HISTORY_PERIODS
    max_forecast_bytes: int = 4 * MIB
    # a client slower than this with its body holds an admission slot no longer (408)
    body_timeout_seconds: float = 30.0
    # at once
    max_concurrency: int = 64
    max_inflight_bytes: int = 64 * MIB
    max_concurrent_forecasts: int = 1
    max_queue_rows: int = 32768

    def infer_body_bytes(self, n_features: int) -> int:
        """Bytes an infer body may take: generous JSON for the largest batch the limit allows."""
        return self.max_batch_rows * n_features * JSON_BYTES_PER_VALUE + INFER_ENVELOPE_BYTES

    def check_model(self, manifest: Manifest) -> None:
        """Refuse a model this configuration could never forecast with (a history limit below its needs)."""
        if self.max_history_periods < manifest.min_history:
            raise ValueError(
                f"max_history_periods {self.max_history_periods} is below the model's min_history "
                f"{manifest.min_history}: no forecast request could be served"
            )
