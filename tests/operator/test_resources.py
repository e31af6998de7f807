"""What the operator's scoring pods promise the service they run."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

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


OWNER = {"apiVersion": "retailforecast.io/v1alpha1", "kind": "ForecastModel", "name": "demand", "uid": "u"}


def _spec(**serving: Any) -> res.ForecastModelSpec:
    return res.ForecastModelSpec.model_validate(
        {
            "model": {"name": "demand", "version": "1", "storeUri": "azureblob://models"},
            "serving": {"image": "registry.local/inference:1", **serving},
        }
    )


def _intent(replicas: int | None = 2, **serving: Any) -> dict[str, Any]:
    spec = _spec(**serving)
    found = res.deployment("demand", res.Color.BLUE, spec, version="1", sha256="0" * 64, replicas=replicas)
    return res.owned(found, OWNER)


def _as_served(intent: dict[str, Any]) -> dict[str, Any]:
    """What the server returns: the intent plus defaults and bookkeeping; omitempty lists dropped."""
    served = copy.deepcopy(intent)
    meta = served["metadata"]
    meta["annotations"]["deployment.kubernetes.io/revision"] = "1"
    meta["resourceVersion"] = "7"
    spec = served["spec"]
    spec["revisionHistoryLimit"] = 10
    for container in spec["template"]["spec"]["containers"]:
        container.pop("env")  # `env: []` is not stored
        container["imagePullPolicy"] = "IfNotPresent"
    return served


def test_a_converged_child_needs_no_apply() -> None:
    assert not res.needs_apply(_intent(), _as_served(_intent()))


def test_a_changed_intent_is_applied_even_when_it_only_removes_a_field() -> None:
    """A removed field changes the digest: the apply then drops it (merge patches could not)."""
    before = _as_served(_intent(resources={"limits": {"cpu": "1"}}))
    assert res.needs_apply(_intent(), before)  # the live object holds all of the new intent, and more


def test_a_manual_edit_of_an_owned_field_is_applied_back() -> None:
    edited = _as_served(_intent())
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "someone/else:2"
    assert res.needs_apply(_intent(), edited)
    edited = _as_served(_intent())
    edited["spec"]["replicas"] = 5
    assert res.needs_apply(_intent(), edited)


def test_without_replicas_the_count_is_not_ours_to_compare() -> None:
    scaled = _as_served(_intent(replicas=None))
    scaled["spec"]["replicas"] = 7
    assert "replicas" not in _intent(replicas=None)["spec"]
    assert not res.needs_apply(_intent(replicas=None), scaled)


def test_replicas_handover_reads_our_managers_fields() -> None:
    def entry(manager: str, fields: dict[str, Any]) -> dict[str, Any]:
        return {"manager": manager, "operation": "Apply", "fieldsV1": {"f:spec": fields}}

    obj: dict[str, Any] = {"metadata": {"managedFields": [entry(res.MANAGER, {"f:replicas": {}})]}}
    assert res.manages_replicas(obj, res.MANAGER)
    obj = {
        "metadata": {
            "managedFields": [entry(res.MANAGER, {"f:selector": {}}), entry("kcm", {"f:replicas": {}})]
        }
    }
    assert not res.manages_replicas(obj, res.MANAGER)
    assert not res.manages_replicas(None, res.MANAGER)
