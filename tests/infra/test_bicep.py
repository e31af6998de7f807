"""Bicep, offline: parsed with pycep (no bicep CLI here), the same security properties as Terraform,
parameter files that set only declared parameters, and the outputs the pipeline reads."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.infra.iac import BICEP, bicep_resources_of_type, bicep_template, terraform_names

READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"  # Storage Blob Data Reader
CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"  # Storage Blob Data Contributor


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return bicep_template()


def one(template: dict[str, Any], rtype: str) -> dict[str, Any]:
    found = bicep_resources_of_type(template, rtype)
    assert len(found) == 1, f"{rtype}: {sorted(found)}"
    return next(iter(found.values()))


def test_aks(template: dict[str, Any]) -> None:
    props = one(template, "Microsoft.ContainerService/managedClusters")["properties"]
    assert props["oidcIssuerProfile"]["enabled"] is True
    assert props["securityProfile"]["workloadIdentity"]["enabled"] is True
    assert props["disableLocalAccounts"] is True
    (system,) = props["agentPoolProfiles"]
    assert system["mode"] == "System" and system["enableAutoScaling"] is True
    user = one(template, "Microsoft.ContainerService/managedClusters/agentPools")["properties"]
    assert user["mode"] == "User" and user["enableAutoScaling"] is True
    assert props["addonProfiles"]["azureKeyvaultSecretsProvider"]["config"]["enableSecretRotation"] == "true"
    assert "autoScalerProfile" in props


def test_acr_admin_disabled(template: dict[str, Any]) -> None:
    props = one(template, "Microsoft.ContainerRegistry/registries")["properties"]
    assert props["adminUserEnabled"] is False
    assert props["publicNetworkAccess"] == "publicNetworkAccess"


def test_storage(template: dict[str, Any]) -> None:
    props = one(template, "Microsoft.Storage/storageAccounts")["properties"]
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["allowBlobPublicAccess"] is False
    assert props["allowSharedKeyAccess"] is False
    assert props["networkAcls"]["defaultAction"] == "Deny"
    blob = one(template, "Microsoft.Storage/storageAccounts/blobServices")["properties"]
    assert blob["isVersioningEnabled"] is True
    assert blob["deleteRetentionPolicy"]["enabled"] is True
    assert blob["containerDeleteRetentionPolicy"]["enabled"] is True


def test_key_vault(template: dict[str, Any]) -> None:
    props = one(template, "Microsoft.KeyVault/vaults")["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enablePurgeProtection"] is True


def test_aml_compute_scales_to_zero(template: dict[str, Any]) -> None:
    props = one(template, "Microsoft.MachineLearningServices/workspaces/computes")["properties"]
    assert props["properties"]["scaleSettings"]["minNodeCount"] == 0
    assert props["disableLocalAuth"] is True


def test_role_assignments(template: dict[str, Any]) -> None:
    assignments = bicep_resources_of_type(template, "Microsoft.Authorization/roleAssignments")
    by_principal: dict[str, str] = {}
    for config in assignments.values():
        props = config["properties"]
        role_args = json.dumps(props["roleDefinitionId"])
        if config.get("scope") == "modelsContainer" and "storageBlobData" in role_args:
            by_principal[json.dumps(props["principalId"])] = role_args
    assert len(by_principal) == 2
    roles = json.loads(json.dumps(template["variables"]["roles"]["value"]))
    assert roles["storageBlobDataReader"] == READER
    assert roles["storageBlobDataContributor"] == CONTRIBUTOR
    expected = {"inferenceIdentity": "storageBlobDataReader", "operatorIdentity": "storageBlobDataReader"}
    for identity, role in expected.items():
        matches = [args for principal, args in by_principal.items() if identity in principal]
        assert len(matches) == 1, identity
        assert role in matches[0], (identity, matches[0])


def test_training_identity_pulls_images_and_uses_the_workspace_storage(template: dict[str, Any]) -> None:
    assignments = bicep_resources_of_type(template, "Microsoft.Authorization/roleAssignments")
    training = {
        (config["scope"], role)
        for config in assignments.values()
        if "trainingIdentity" in json.dumps(config["properties"]["principalId"])
        for role in ("acrPull", "storageBlobDataContributor", "monitoringMetricsPublisher")
        if role in json.dumps(config["properties"]["roleDefinitionId"])
    }
    assert training == {
        ("acr", "acrPull"),
        ("storage", "storageBlobDataContributor"),
        ("appInsights", "monitoringMetricsPublisher"),
    }


def test_aml_workspace_datastores_use_identities(template: dict[str, Any]) -> None:
    (workspace,) = [
        r
        for r in template["resources"].values()
        if r["type"] == "Microsoft.MachineLearningServices/workspaces"
    ]
    assert workspace["api_version"] >= "2025-06-01", (
        "systemDatastoresAuthMode is not in older stable versions"
    )
    props = workspace["config"]["properties"]
    assert props["systemDatastoresAuthMode"] == "Identity"
    assert "outboundRules" not in props["managedNetwork"], "the workspace's own storage needs no user rule"


def test_no_settings_azure_refuses_or_ignores(template: dict[str, Any]) -> None:
    acr = one(template, "Microsoft.ContainerRegistry/registries")["properties"]
    assert "trustPolicy" not in acr["policies"] and "anonymousPullEnabled" not in acr
    aks = one(template, "Microsoft.ContainerService/managedClusters")["properties"]
    assert "kubeDashboard" not in aks["addonProfiles"]


def test_container_insights_has_its_data_collection_rule(template: dict[str, Any]) -> None:
    rule = one(template, "Microsoft.Insights/dataCollectionRules")["properties"]
    (extension,) = rule["dataSources"]["extensions"]
    assert extension["extensionName"] == "ContainerInsights"
    assert extension["extensionSettings"]["dataCollectionSettings"]["enableContainerLogV2"] is True
    streams = template["variables"]["containerInsightsStreams"]["value"]
    assert extension["streams"] == rule["dataFlows"][0]["streams"] == "containerInsightsStreams"
    assert {"Microsoft-ContainerLogV2", "Microsoft-KubeEvents", "Microsoft-InsightsMetrics"} <= set(streams)
    association = one(template, "Microsoft.Insights/dataCollectionRuleAssociations")
    assert association["name"] == "ContainerInsightsExtension" and association["scope"] == "aks"


def test_audit_logs_of_key_vault_and_aks_control_plane(template: dict[str, Any]) -> None:
    settings = {
        config["scope"]: config["properties"]
        for config in bicep_resources_of_type(template, "Microsoft.Insights/diagnosticSettings").values()
    }
    assert settings["keyVault"]["logs"] == [{"categoryGroup": "audit", "enabled": True}]
    assert {log["category"] for log in settings["aks"]["logs"]} == {"kube-audit-admin", "guard"}


def test_api_server_ranges_must_be_given(template: dict[str, Any]) -> None:
    """A public API server sees only public addresses: no default range, and no parameter file guesses one."""
    parameter = template["parameters"]["apiServerAuthorizedIpRanges"]
    assert parameter["default"] is None
    assert {"type": "min_length", "argument": 1} in parameter["decorators"]
    for env in ("dev", "prod"):
        assert "apiServerAuthorizedIpRanges" not in (BICEP / f"main.parameters.{env}.json").read_text()


def test_aml_private_endpoint_has_its_notebooks_zone(template: dict[str, Any]) -> None:
    zones = template["variables"]["privateDnsZoneNames"]["value"]
    targets = {t["key"]: t for t in template["variables"]["endpointTargets"]["value"]}
    assert [zones[i] for i in targets["amlworkspace"]["zones"]] == [
        "privatelink.api.azureml.ms",
        "privatelink.notebooks.azure.net",
    ]


def test_federated_credentials(template: dict[str, Any]) -> None:
    creds = bicep_resources_of_type(
        template, "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"
    )
    assert len(creds) == 3
    for config in creds.values():
        assert config["properties"]["audiences"] == ["api://AzureADTokenExchange"]
        assert "system:serviceaccount:" in json.dumps(config["properties"]["subject"])


def test_storage_name_fits_the_24_character_limit(template: dict[str, Any]) -> None:
    """CKV_AZURE_43 is skipped (checkov cannot evaluate the name): 'st' + prefix + env + 6 chars <= 24."""
    prefix_max = next(
        d["argument"] for d in template["parameters"]["namePrefix"]["decorators"] if d["type"] == "max_length"
    )
    assert 2 + int(prefix_max) + len("prod") + 6 <= 24


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_parameter_files(template: dict[str, Any], env: str) -> None:
    parameters = json.loads((BICEP / f"main.parameters.{env}.json").read_text())
    assert parameters["$schema"].endswith("deploymentParameters.json#")
    values = parameters["parameters"]
    assert set(values) <= set(template["parameters"]), set(values) - set(template["parameters"])
    assert values["environment"]["value"] == env


def test_outputs_match_terraform(template: dict[str, Any]) -> None:
    assert set(template["outputs"]) <= terraform_names("output")
    assert {"AZURE_STORAGE_ACCOUNT_URL", "models_container", "inference_client_id"} <= set(
        template["outputs"]
    )


def test_alerts_load_the_shared_kql(template: dict[str, Any]) -> None:
    text = (BICEP / "main.bicep").read_text()
    for name in ("http_5xx_ratio", "p95_latency", "rollbacks", "live_wape", "feature_drift"):
        assert f"loadTextContent('../monitor/kql/alerts/{name}.kql')" in text
    assert len(bicep_resources_of_type(template, "Microsoft.Insights/metricAlerts")) == 1
