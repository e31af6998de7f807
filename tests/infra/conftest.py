"""checkov is slow (seconds per framework): it runs once per session, the tests read its reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import pytest

from tests.infra.iac import DOCKERFILES, REPO, run_checkov


def render_chart(into: Path) -> None:
    """The operator chart as Helm would install it with default values (CRDs are plain files)."""
    chart = helm_python.Chart.load(str(REPO / "charts" / "forecast-operator"))
    rendered = chart.render({}, name="forecast-operator", namespace="forecast-system", is_install=True)
    for name, text in rendered.items():
        if name.endswith(".yaml") and text.strip():
            (into / name.replace("/", "_")).write_text(text)


@pytest.fixture(scope="session")
def checkov_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """{"terraform", "bicep", "dockerfile", "kubernetes" (the rendered chart): report}."""
    reports: dict[str, dict[str, Any]] = {}
    infra, infra_err = run_checkov("-d", "infra")
    files = [arg for name in DOCKERFILES for arg in ("-f", name)]
    images, images_err = run_checkov(*files)
    chart = tmp_path_factory.mktemp("chart")
    render_chart(chart)
    manifests, manifests_err = run_checkov("-d", str(chart), "--framework", "kubernetes")
    for stderr in (infra_err, images_err, manifests_err):
        # A crashing check is logged and left out of the counts: that must fail, not pass quietly.
        assert "Traceback" not in stderr, stderr[-4000:]
    for report in [*infra, *images, *manifests]:
        reports[report["check_type"]] = report
    return reports
