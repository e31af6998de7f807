"""checkov is slow (seconds per framework): it runs once per session, the tests read its reports."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.iac import DOCKERFILES, run_checkov


@pytest.fixture(scope="session")
def checkov_reports() -> dict[str, dict[str, Any]]:
    """{"terraform": report, "bicep": report, "dockerfile": report}; stderr must be free of tracebacks."""
    reports: dict[str, dict[str, Any]] = {}
    infra, infra_err = run_checkov("-d", "infra")
    files = [arg for name in DOCKERFILES for arg in ("-f", name)]
    images, images_err = run_checkov(*files)
    for stderr in (infra_err, images_err):
        # A crashing check is logged and left out of the counts: that must fail, not pass quietly.
        assert "Traceback" not in stderr, stderr[-4000:]
    for report in [*infra, *images]:
        reports[report["check_type"]] = report
    return reports
