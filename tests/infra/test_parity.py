"""Terraform and Bicep deploy the same platform: the same resources, the same security settings, the same
role assignments, diagnostic settings, private endpoints, alerts and names, and the outputs the pipeline
reads. Each table below maps one side to the other; a change on one side only fails here."""

from __future__ import annotations

import json
import re
from typing import Any, Final

import pytest
import yaml

from tests.infra.iac import (
    REPO,
    bicep_template,
    terraform_blocks,
    terraform_names,
    terraform_resources,
    unwrap,
)

MISSING: Final = object()

# Terraform resource type -> the Bicep resource type that deploys the same thing.
SAME_RESOURCE = {
    # Deliberate difference (infra/README.md): Bicep deploys into a group made with `az group create`
    # (a resource-group-scoped template can be previewed with what-if on that group) and sets its tags.
    "azurerm_resource_group": "Microsoft.Resources/tags",
    "azurerm_log_analytics_workspace": "Microsoft.OperationalInsights/workspaces",
    "azurerm_application_insights": "Microsoft.Insights/components",
    "azurerm_virtual_network": "Microsoft.Network/virtualNetworks",
    "azurerm_network_security_group": "Microsoft.Network/networkSecurityGroups",
    "azurerm_kubernetes_cluster": "Microsoft.ContainerService/managedClusters",
    "azurerm_kubernetes_cluster_node_pool": "Microsoft.ContainerService/managedClusters/agentPools",
    "azurerm_container_registry": "Microsoft.ContainerRegistry/registries",
    "azurerm_role_assignment": "Microsoft.Authorization/roleAssignments",
    "azurerm_role_definition": "Microsoft.Authorization/roleDefinitions",
    "azurerm_storage_account": "Microsoft.Storage/storageAccounts",
    "azurerm_storage_container": "Microsoft.Storage/storageAccounts/blobServices/containers",
    "azurerm_storage_management_policy": "Microsoft.Storage/storageAccounts/managementPolicies",
    "azurerm_monitor_diagnostic_setting": "Microsoft.Insights/diagnosticSettings",
    "azurerm_key_vault": "Microsoft.KeyVault/vaults",
    "azurerm_user_assigned_identity": "Microsoft.ManagedIdentity/userAssignedIdentities",
    "azurerm_federated_identity_credential": (
        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"
    ),
    "azurerm_machine_learning_workspace": "Microsoft.MachineLearningServices/workspaces",
    "azurerm_machine_learning_compute_cluster": "Microsoft.MachineLearningServices/workspaces/computes",
    "azurerm_private_dns_zone": "Microsoft.Network/privateDnsZones",
    "azurerm_private_dns_zone_virtual_network_link": "Microsoft.Network/privateDnsZones/virtualNetworkLinks",
    "azurerm_private_endpoint": "Microsoft.Network/privateEndpoints",
    "azurerm_monitor_action_group": "Microsoft.Insights/actionGroups",
    "azurerm_monitor_metric_alert": "Microsoft.Insights/metricAlerts",
    "azurerm_monitor_scheduled_query_rules_alert_v2": "Microsoft.Insights/scheduledQueryRules",
    "azurerm_monitor_data_collection_rule": "Microsoft.Insights/dataCollectionRules",
    "azurerm_monitor_data_collection_rule_association": "Microsoft.Insights/dataCollectionRuleAssociations",
}
# What one side declares as a resource and the other inline in its parent.
TERRAFORM_INLINE_IN_BICEP = {
    "azurerm_subnet": "virtualNetworks properties.subnets",
    "azurerm_subnet_network_security_group_association": "virtualNetworks subnets[].networkSecurityGroup",
}
BICEP_INLINE_IN_TERRAFORM = {
    "Microsoft.Storage/storageAccounts/blobServices": "azurerm_storage_account blob_properties",
    "Microsoft.Network/privateEndpoints/privateDnsZoneGroups": "azurerm_private_endpoint dns_zone_group",
}

# (setting, Terraform resource, argument path, value) and (Bicep resource, property path, value): the
# security settings of the issue (TLS, public access, local auth, RBAC mode, purge protection, network
# rules) and the workload identity and scale-to-zero settings. MISSING: not set, the service default.
PUBLIC_ACCESS_TF = "${var.enable_private_endpoints ? False : True}"
SECURITY: list[tuple[str, str, str, Any, str, str, Any]] = [
    ("storage TLS",
     "azurerm_storage_account.models", "min_tls_version", "TLS1_2",
     "storage", "properties.minimumTlsVersion", "TLS1_2"),
    ("storage HTTPS only",
     "azurerm_storage_account.models", "https_traffic_only_enabled", True,
     "storage", "properties.supportsHttpsTrafficOnly", True),
    ("storage public blobs",
     "azurerm_storage_account.models", "allow_nested_items_to_be_public", False,
     "storage", "properties.allowBlobPublicAccess", False),
    ("storage shared keys",
     "azurerm_storage_account.models", "shared_access_key_enabled", False,
     "storage", "properties.allowSharedKeyAccess", False),
    ("storage Entra ID default",
     "azurerm_storage_account.models", "default_to_oauth_authentication", True,
     "storage", "properties.defaultToOAuthAuthentication", True),
    ("storage cross-tenant replication",
     "azurerm_storage_account.models", "cross_tenant_replication_enabled", False,
     "storage", "properties.allowCrossTenantReplication", False),
    ("storage double encryption",
     "azurerm_storage_account.models", "infrastructure_encryption_enabled", True,
     "storage", "properties.encryption.requireInfrastructureEncryption", True),
    ("storage public network",
     "azurerm_storage_account.models", "public_network_access_enabled", PUBLIC_ACCESS_TF,
     "storage", "properties.publicNetworkAccess", "publicNetworkAccess"),
    ("storage firewall",
     "azurerm_storage_account.models", "network_rules.default_action", "Deny",
     "storage", "properties.networkAcls.defaultAction", "Deny"),
    ("storage SAS expiry",
     "azurerm_storage_account.models", "sas_policy.expiration_period", "00.01:00:00",
     "storage", "properties.sasPolicy.sasExpirationPeriod", "00.01:00:00"),
    ("blob versioning",
     "azurerm_storage_account.models", "blob_properties.versioning_enabled", True,
     "blobService", "properties.isVersioningEnabled", True),
    ("container private",
     "azurerm_storage_container.models", "container_access_type", "private",
     "modelsContainer", "properties.publicAccess", "None"),
    ("key vault RBAC mode",
     "azurerm_key_vault.main", "rbac_authorization_enabled", True,
     "keyVault", "properties.enableRbacAuthorization", True),
    ("key vault purge protection",
     "azurerm_key_vault.main", "purge_protection_enabled", True,
     "keyVault", "properties.enablePurgeProtection", True),
    ("key vault soft delete",
     "azurerm_key_vault.main", "soft_delete_retention_days", 90,
     "keyVault", "properties.softDeleteRetentionInDays", 90),
    ("key vault public network",
     "azurerm_key_vault.main", "public_network_access_enabled", PUBLIC_ACCESS_TF,
     "keyVault", "properties.publicNetworkAccess", "publicNetworkAccess"),
    ("key vault firewall",
     "azurerm_key_vault.main", "network_acls.default_action", "Deny",
     "keyVault", "properties.networkAcls.defaultAction", "Deny"),
    ("ACR admin user",
     "azurerm_container_registry.main", "admin_enabled", False,
     "acr", "properties.adminUserEnabled", False),
    ("ACR anonymous pull",
     "azurerm_container_registry.main", "anonymous_pull_enabled", False,
     "acr", "properties.anonymousPullEnabled", MISSING),
    ("ACR content trust",
     "azurerm_container_registry.main", "trust_policy_enabled", MISSING,
     "acr", "properties.policies.trustPolicy", MISSING),
    ("ACR public network",
     "azurerm_container_registry.main", "public_network_access_enabled", PUBLIC_ACCESS_TF,
     "acr", "properties.publicNetworkAccess", "publicNetworkAccess"),
    ("App Insights local auth",
     "azurerm_application_insights.main", "local_authentication_enabled", False,
     "appInsights", "properties.DisableLocalAuth", True),
    ("AKS local accounts",
     "azurerm_kubernetes_cluster.main", "local_account_disabled", True,
     "aks", "properties.disableLocalAccounts", True),
    ("AKS Kubernetes RBAC",
     "azurerm_kubernetes_cluster.main", "role_based_access_control_enabled", True,
     "aks", "properties.enableRBAC", True),
    ("AKS Azure RBAC",
     "azurerm_kubernetes_cluster.main",
     "azure_active_directory_role_based_access_control.azure_rbac_enabled", True,
     "aks", "properties.aadProfile.enableAzureRBAC", True),
    ("AKS OIDC issuer",
     "azurerm_kubernetes_cluster.main", "oidc_issuer_enabled", True,
     "aks", "properties.oidcIssuerProfile.enabled", True),
    ("AKS workload identity",
     "azurerm_kubernetes_cluster.main", "workload_identity_enabled", True,
     "aks", "properties.securityProfile.workloadIdentity.enabled", True),
    ("AKS authorized ranges",
     "azurerm_kubernetes_cluster.main", "api_server_access_profile.authorized_ip_ranges",
     "${var.api_server_authorized_ip_ranges}",
     "aks", "properties.apiServerAccessProfile.authorizedIPRanges", "apiServerAuthorizedIpRanges"),
    ("AKS network policy",
     "azurerm_kubernetes_cluster.main", "network_profile.network_policy", "cilium",
     "aks", "properties.networkProfile.networkPolicy", "cilium"),
    ("AKS Container Insights managed identity",
     "azurerm_kubernetes_cluster.main", "oms_agent.msi_auth_for_monitoring_enabled", True,
     "aks", "properties.addonProfiles.omsagent.config.useAADAuth", "true"),
    ("AKS host encryption (system)",
     "azurerm_kubernetes_cluster.main", "default_node_pool.host_encryption_enabled", True,
     "aks", "properties.agentPoolProfiles[0].enableEncryptionAtHost", True),
    ("AKS host encryption (user)",
     "azurerm_kubernetes_cluster_node_pool.user", "host_encryption_enabled", True,
     "userPool", "properties.enableEncryptionAtHost", True),
    ("AKS user pool scales to zero",
     "azurerm_kubernetes_cluster_node_pool.user", "min_count", "${var.user_node_min_count}",
     "userPool", "properties.minCount", "userNodeMinCount"),
    ("AML public network",
     "azurerm_machine_learning_workspace.main", "public_network_access_enabled", PUBLIC_ACCESS_TF,
     "amlWorkspace", "properties.publicNetworkAccess", "publicNetworkAccess"),
    ("AML identity datastores",
     "azurerm_machine_learning_workspace.main", "storage_account_access_type", "Identity",
     "amlWorkspace", "properties.systemDatastoresAuthMode", "Identity"),
    ("AML managed VNet",
     "azurerm_machine_learning_workspace.main", "managed_network.isolation_mode", "AllowInternetOutbound",
     "amlWorkspace", "properties.managedNetwork.isolationMode", "AllowInternetOutbound"),
    ("AML compute local auth",
     "azurerm_machine_learning_compute_cluster.training", "local_auth_enabled", False,
     "amlCompute", "properties.disableLocalAuth", True),
    ("AML compute public IP",
     "azurerm_machine_learning_compute_cluster.training", "node_public_ip_enabled", False,
     "amlCompute", "properties.properties.enableNodePublicIp", False),
    ("AML compute SSH",
     "azurerm_machine_learning_compute_cluster.training", "ssh_public_access_enabled", False,
     "amlCompute", "properties.properties.remoteLoginPortPublicAccess", "Disabled"),
    ("AML compute scales to zero",
     "azurerm_machine_learning_compute_cluster.training", "scale_settings.min_node_count", 0,
     "amlCompute", "properties.properties.scaleSettings.minNodeCount", 0),
]  # fmt: skip

# How each side names the principals and scopes of role assignments.
TF_PRINCIPALS = {
    "${azurerm_kubernetes_cluster.main.kubelet_identity[0].object_id}": "kubelet",
    "${azurerm_machine_learning_workspace.main.identity[0].principal_id}": "workspace",
    **{
        f"${{azurerm_user_assigned_identity.{w}.principal_id}}": w
        for w in ("operator", "inference", "training")
    },
}
BICEP_PRINCIPALS = {
    "aks.properties.identityProfile.kubeletidentity.objectId": "kubelet",
    "amlWorkspace.identity.principalId": "workspace",
    **{f"{w}Identity.properties.principalId": w for w in ("operator", "inference", "training")},
}
TF_SCOPES = {
    "${azurerm_container_registry.main.id}": "registry",
    "${local.models_container_scope}": "models container",
    "${azurerm_storage_account.models.id}": "storage account",
    "${azurerm_application_insights.main.id}": "app insights",
}
BICEP_SCOPES = {
    "acr": "registry",
    "modelsContainer": "models container",
    "storage": "storage account",
    "appInsights": "app insights",
}
TF_CUSTOM_ROLES = {
    "${azurerm_role_definition.model_lifecycle_tagger.role_definition_resource_id}": "modelLifecycleTagger",
}
TF_ROLES = {
    "AcrPull": "acrPull",
    "Storage Blob Data Reader": "storageBlobDataReader",
    "Storage Blob Data Contributor": "storageBlobDataContributor",
    "Monitoring Metrics Publisher": "monitoringMetricsPublisher",
}

# The pipeline's variable group holds these outputs of whichever template deployed the environment.
PIPELINE_VARIABLES = {
    "storageAccountUrl": "AZURE_STORAGE_ACCOUNT_URL",
    "acrName": "acr_name",
    "acrLoginServer": "acr_login_server",
    "aksName": "aks_name",
    "resourceGroup": "resource_group_name",
    "amlWorkspace": "aml_workspace_name",
    "operatorClientId": "operator_client_id",
}
PREDEFINED = re.compile(r"^(Build|Pipeline|System|Agent|Environment|Release)\.")


def get(value: Any, path: str) -> Any:
    """A dotted path into parsed HCL or Bicep, `name[0]` indexing a list; MISSING where absent."""
    for part in path.split("."):
        name, _, index = part.partition("[")
        if not isinstance(value, dict) or name not in value:
            return MISSING
        value = value[name]
        if index:
            items = value if isinstance(value, list) else [value]
            value = items[int(index.rstrip("]"))]
    return value


def dotted(value: Any) -> str:
    """A pycep expression as Bicep source would write it: `a.b.c` for property access, else JSON."""
    if isinstance(value, str):
        return value
    if (
        isinstance(value, dict)
        and set(value) == {"operator"}
        and value["operator"]["type"] == "property_accessor"
    ):
        operands = value["operator"]["operands"]
        return f"{dotted(operands['operand_1'])}.{dotted(operands['operand_2'])}"
    return json.dumps(value, sort_keys=True)


def as_list(value: Any) -> list[Any]:
    """bc-python-hcl2 unwrapped to a single value where HCL has a one-element list or a single block."""
    return value if isinstance(value, list) else [value]


@pytest.fixture(scope="module")
def tf() -> dict[str, dict[str, Any]]:
    return terraform_resources()


@pytest.fixture(scope="module")
def bicep() -> dict[str, Any]:
    return bicep_template()


def bicep_body(bicep: dict[str, Any], name: str) -> dict[str, Any]:
    config: dict[str, Any] = bicep["resources"][name]["config"]
    wrapped = set(config) in ({"loop_type", "condition", "config"}, {"condition", "config"})  # loop, `if (…)`
    return config["config"] if wrapped else config


def test_every_resource_has_its_counterpart(tf: dict[str, dict[str, Any]], bicep: dict[str, Any]) -> None:
    tf_types = {name.split(".")[0] for name in tf}
    bicep_types = {resource["type"] for resource in bicep["resources"].values()}
    assert tf_types - set(TERRAFORM_INLINE_IN_BICEP) == set(SAME_RESOURCE), "map each new Terraform type"
    missing_in_bicep = {t: b for t, b in SAME_RESOURCE.items() if b not in bicep_types}
    assert not missing_in_bicep, f"Bicep lacks {missing_in_bicep}"
    unmatched = bicep_types - set(SAME_RESOURCE.values()) - set(BICEP_INLINE_IN_TERRAFORM)
    assert not unmatched, f"Terraform lacks {unmatched}"
    subnets = get(bicep_body(bicep, "vnet"), "properties.subnets")
    assert {s["name"] for s in subnets} == {tf[n]["name"] for n in tf if n.startswith("azurerm_subnet.")}
    assert all("networkSecurityGroup" in s["properties"] for s in subnets)
    assert len([n for n in tf if n.startswith("azurerm_subnet_network_security_group_association.")]) == 2


@pytest.mark.parametrize("setting", SECURITY, ids=[s[0] for s in SECURITY])
def test_security_setting_is_the_same_on_both_sides(
    tf: dict[str, dict[str, Any]], bicep: dict[str, Any], setting: tuple[str, str, str, Any, str, str, Any]
) -> None:
    _, tf_name, tf_path, tf_value, bicep_name, bicep_path, bicep_value = setting
    assert get(tf[tf_name], tf_path) == tf_value, f"Terraform {tf_name} {tf_path}"
    assert get(bicep_body(bicep, bicep_name), bicep_path) == bicep_value, f"Bicep {bicep_name} {bicep_path}"


def terraform_role_assignments(tf: dict[str, dict[str, Any]]) -> set[tuple[str, str, str]]:
    found = set()
    for name, body in tf.items():
        if not name.startswith("azurerm_role_assignment."):
            continue
        principals = body["for_each"].values() if "for_each" in body else [body["principal_id"]]
        if "role_definition_name" in body:
            role = TF_ROLES[body["role_definition_name"]]
        else:
            role = TF_CUSTOM_ROLES[body["role_definition_id"]]
        for principal in principals:
            found.add((TF_PRINCIPALS[principal], role, TF_SCOPES[body["scope"]]))
    return found


def bicep_role_assignments(bicep: dict[str, Any]) -> set[tuple[str, str, str]]:
    found = set()
    for resource in bicep["resources"].values():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        config = resource["config"]
        definition = dotted(config["properties"]["roleDefinitionId"])
        if definition.endswith(".id"):  # a custom role defined in the template
            role = definition.removesuffix(".id")
        else:
            role = re.findall(r'"operand_2": "(\w+)"', definition)[-1]
        principal = BICEP_PRINCIPALS[dotted(config["properties"]["principalId"])]
        found.add((principal, role, BICEP_SCOPES[config["scope"]]))
    return found


def test_role_assignments_are_the_same(tf: dict[str, dict[str, Any]], bicep: dict[str, Any]) -> None:
    terraform = terraform_role_assignments(tf)
    assert terraform == bicep_role_assignments(bicep)
    assert ("inference", "storageBlobDataReader", "models container") in terraform  # the tables are read
    # The operator only reads models (retiring is `forecast retire`'s, run by the pipeline): no tags.
    assert {(role, scope) for who, role, scope in terraform if who == "operator"} == {
        ("storageBlobDataReader", "models container")
    }


def test_custom_roles_are_the_same(tf: dict[str, dict[str, Any]], bicep: dict[str, Any]) -> None:
    terraform = tf["azurerm_role_definition.model_lifecycle_tagger"]
    (permissions,) = bicep_body(bicep, "modelLifecycleTagger")["properties"]["permissions"]
    assert sorted(as_list(terraform["permissions"]["data_actions"])) == sorted(permissions["dataActions"])
    assert not terraform["permissions"].get("actions") and not permissions["actions"]
    assert (
        normalised_name(terraform["name"])
        == bicep_body(bicep, "modelLifecycleTagger")["properties"]["roleName"]
    )


def test_diagnostic_settings_are_the_same(tf: dict[str, dict[str, Any]], bicep: dict[str, Any]) -> None:
    targets = {
        "${azurerm_storage_account.models.id}/blobServices/default": "blobService",
        "${azurerm_key_vault.main.id}": "keyVault",
        "${azurerm_kubernetes_cluster.main.id}": "aks",
    }
    terraform = {}
    for name, body in tf.items():
        if name.startswith("azurerm_monitor_diagnostic_setting."):
            logs = {log.get("category") or log.get("category_group") for log in as_list(body["enabled_log"])}
            metrics = {m["category"] for m in as_list(body.get("enabled_metric", []))}
            terraform[targets[body["target_resource_id"]]] = (body["name"], logs, metrics)
    deployed = {}
    for resource in bicep["resources"].values():
        if resource["type"] == "Microsoft.Insights/diagnosticSettings":
            config = resource["config"]
            logs = {log.get("category") or log.get("categoryGroup") for log in config["properties"]["logs"]}
            metrics = {m["category"] for m in config["properties"].get("metrics", [])}
            deployed[config["scope"]] = (config["name"], logs, metrics)
    assert terraform == deployed
    assert set(deployed) == {"blobService", "keyVault", "aks"}


def test_private_endpoints_and_zones_are_the_same(bicep: dict[str, Any]) -> None:
    (endpoints,) = [
        unwrap(e["private_endpoints"]) for e in terraform_blocks()["locals"] if "private_endpoints" in e
    ]
    # `cond ? {...} : {}`: the parser keeps the expression as text; read the map back out of it.
    text = str(endpoints)
    terraform = {
        key: (subresource, sorted(json.loads(zones.replace("'", '"'))))
        for key, subresource, zones in re.findall(
            r"'(\w+)': \{'resource_id': '[^']+', 'subresource': '(\w+)', 'dns_zones': (\[[^\]]*\])", text
        )
    }
    zones = bicep["variables"]["privateDnsZoneNames"]["value"]
    storage_zone = "privatelink.blob.${az.environment().suffixes.storage}"
    assert storage_zone in zones  # the cloud's own suffix: core.windows.net in Azure public
    names = [z.replace(storage_zone, "privatelink.blob.core.windows.net") for z in zones]
    deployed = {
        t["key"]: (t["groupId"], sorted(names[i] for i in t["zones"]))
        for t in bicep["variables"]["endpointTargets"]["value"]
    }
    assert terraform == deployed
    assert len(terraform) == 4


def test_alerts_are_the_same(tf: dict[str, dict[str, Any]], bicep: dict[str, Any]) -> None:
    (alerts,) = [unwrap(e["log_alerts"]) for e in terraform_blocks()["locals"] if "log_alerts" in e]
    terraform = {
        f"alert-${{base}}-{key.replace('_', '-')}": (
            a["severity"],
            a["window"],
            a["column"],
            a["failing"],
            a["periods"],
            a["retrain"],
        )
        for key, a in alerts.items()
    }
    deployed = {
        f"alert-${{base}}-{a['key']}": (
            a["severity"],
            a["window"],
            a["column"],
            a["failing"],
            a["periods"],
            a["retrain"],
        )
        for a in bicep["variables"]["logAlerts"]["value"]
    }
    assert terraform == deployed
    tf_names = {tf["azurerm_monitor_metric_alert.pods_not_ready"]["name"].replace("local.", "")}
    assert tf_names == {bicep_body(bicep, "podsNotReady")["name"]}
    # the on-call group (every alert) and the retraining webhook's group (the alerts marked retrain)
    for group in ("oncall", "retrain"):
        terraform_group = tf[f"azurerm_monitor_action_group.{group}"]
        bicep_group = bicep_body(bicep, "actionGroup" if group == "oncall" else "retrainActionGroup")
        assert normalised_name(terraform_group["name"]) == bicep_group["name"]
        assert (
            terraform_group["short_name"].replace("var.", "") == bicep_group["properties"]["groupShortName"]
        )


def normalised_name(name: str) -> str:
    """`acr${local.compact}` and `acr${compact}` are the same name, `${var.x}` and `x` too; snake_case
    locals and variables become camelCase."""
    name = re.sub(r"\$\{(?:local|var)\.", "${", name)
    name = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
    whole = re.fullmatch(r"\$\{(\w+)\}", name)
    return whole.group(1) if whole else name


def test_resource_names_are_the_same(tf: dict[str, dict[str, Any]], bicep: dict[str, Any]) -> None:
    """Every resource declared once on each side has the same name (looped ones: their alert names above)."""
    singles = {}
    for tf_type, bicep_type in SAME_RESOURCE.items():
        tf_names = [
            body["name"] for name, body in tf.items() if name.split(".")[0] == tf_type and "name" in body
        ]
        bicep_names = [
            bicep_body(bicep, n).get("name") for n, r in bicep["resources"].items() if r["type"] == bicep_type
        ]
        if len(tf_names) == 1 and len(bicep_names) == 1 and "each." not in tf_names[0]:
            singles[tf_type] = (normalised_name(tf_names[0]), bicep_names[0])
    # Deliberate: Bicep deploys into `az group create -n rg-<prefix>-<env>` (infra/README.md).
    assert singles.pop("azurerm_resource_group") == ("rg-${base}", "default")
    singles.pop("azurerm_role_definition")  # Bicep names it by GUID; the role names: test_custom_roles_...
    mismatched = {t: names for t, names in singles.items() if names[0] != names[1]}
    assert not mismatched
    assert {"azurerm_container_registry", "azurerm_kubernetes_cluster", "azurerm_key_vault"} <= set(singles)
    tf_identities = {
        tf[f"azurerm_user_assigned_identity.{w}"]["name"] for w in ("operator", "inference", "training")
    }
    bicep_identities = {
        bicep_body(bicep, f"{w}Identity")["name"] for w in ("operator", "inference", "training")
    }
    assert {normalised_name(n) for n in tf_identities} == bicep_identities


def test_outputs_are_the_same_and_cover_what_the_pipeline_reads(bicep: dict[str, Any]) -> None:
    terraform = terraform_names("output")
    assert terraform == set(bicep["outputs"])
    pipeline = yaml.safe_load((REPO / "azure-pipelines.yml").read_text())
    defined = set()
    for node in _walk(pipeline):
        if isinstance(node, dict) and "variables" in node:
            variables = node["variables"]
            defined |= (
                set(variables)
                if isinstance(variables, dict)
                else {v["name"] for v in variables if "name" in v}
            )
        if isinstance(node, dict) and "matrix" in node:
            defined |= {key for entry in node["matrix"].values() for key in entry}
    used = set(re.findall(r"\$\((\w[\w.]*)\)", (REPO / "azure-pipelines.yml").read_text()))
    from_group = {name for name in used - defined if not PREDEFINED.match(name)}
    assert from_group == set(PIPELINE_VARIABLES), "map each variable-group variable to an output"
    assert set(PIPELINE_VARIABLES.values()) <= terraform


def _walk(node: Any) -> list[Any]:
    found = [node]
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        found += _walk(child)
    return found
