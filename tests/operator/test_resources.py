"""What the operator's scoring pods promise the service they run."""

from __future__ import annotations

from pathlib import Path

import yaml

from retail_forecast.inference.settings import ServeSettings
from retail_forecast.operator import resources as res

EXAMPLE = Path(__file__).resolve().parents[2] / "k8s" / "examples" / "forecastmodel-demand.yaml"


def test_termination_grace_outlasts_the_services_shutdown_delay_and_drain() -> None:
    """Kubernetes kills the pod when the grace period ends: the service must be done by then."""
    spec = res.ForecastModelSpec.model_validate(yaml.safe_load(EXAMPLE.read_text())["spec"])
    pod = res.deployment("demand", res.Color.BLUE, spec, version="1", sha256="0" * 64, replicas=1)["spec"][
        "template"
    ]["spec"]
    defaults = ServeSettings.model_fields
    needed = defaults["shutdown_delay_seconds"].default + defaults["graceful_shutdown_seconds"].default
    assert pod["terminationGracePeriodSeconds"] > needed
