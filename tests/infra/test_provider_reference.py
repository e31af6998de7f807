"""Every Terraform argument and block against the azurerm argument reference, every Bicep property against
the published type definitions (infra/reference/*.json, see tests/infra/provider_reference.py), and the
provider floor derived from what the templates use."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hcl2.api import loads as load_hcl

from tests.infra.iac import BICEP_FILES, TERRAFORM, bicep_template, terraform_blocks
from tests.infra.provider_reference import (
    AZURERM_REFERENCE,
    BICEP_REFERENCE,
    bicep_findings,
    deprecated_in_4x,
    documented_arguments,
    documented_since,
    removed_next_major,
    terraform_findings,
    version_key,
)

# Preview API versions allowed, each with why no stable version does.
PREVIEW_API_VERSIONS = {
    # The newest stable version (2016-09-01) has no categoryGroup (the Key Vault "audit" group) and no
    # logAnalyticsDestinationType; 2021-05-01-preview is what Azure's own templates use.
    "Microsoft.Insights/diagnosticSettings@2021-05-01-preview",
}


@pytest.fixture(scope="module")
def azurerm() -> dict[str, Any]:
    reference: dict[str, Any] = json.loads(AZURERM_REFERENCE.read_text())
    return reference


@pytest.fixture(scope="module")
def bicep_types() -> dict[str, Any]:
    reference: dict[str, Any] = json.loads(BICEP_REFERENCE.read_text())
    return reference


def pinned_floor() -> tuple[str, str]:
    """(constraint, floor) of azurerm in versions.tf: `~> 4.78` pins 4.78.0 up to, not including, 5.0."""
    text = (TERRAFORM / "versions.tf").read_text()
    (constraint,) = re.findall(r'source\s*=\s*"hashicorp/azurerm"\s*\n\s*version\s*=\s*"([^"]+)"', text)
    match = re.fullmatch(r"~>\s*(\d+)\.(\d+)", constraint)
    assert match, f"azurerm must be pinned as `~> MAJOR.MINOR` (a floor within one major): {constraint}"
    return constraint, f"{match[1]}.{match[2]}.0"


def test_the_references_say_where_they_come_from(
    azurerm: dict[str, Any], bicep_types: dict[str, Any]
) -> None:
    for commit in (azurerm["newest"]["commit"], azurerm["deprecations"]["commit"], bicep_types["commit"]):
        assert re.fullmatch(r"[0-9a-f]{40}", commit)
    assert azurerm["source"].endswith("/hashicorp/terraform-provider-azurerm")
    assert bicep_types["source"].endswith("/Azure/bicep-types-az")
    _, floor = pinned_floor()
    # The reference covers every release the constraint admits: from the floor to the newest of the major.
    assert version_key(azurerm["oldest"]) <= version_key(floor) <= version_key(azurerm["newest"]["version"])
    assert version_key(azurerm["newest"]["version"])[0] == version_key(floor)[0]
    assert version_key(azurerm["deprecations"]["version"])[0] == version_key(floor)[0] + 1


def test_every_terraform_argument_is_documented_and_not_deprecated(azurerm: dict[str, Any]) -> None:
    findings, used = terraform_findings(terraform_blocks(), azurerm)
    assert not findings, "\n".join(map(str, findings))
    assert len(used) > 200  # the walk reached the nested blocks, not only the top level


def test_the_provider_floor_is_the_newest_argument_used(azurerm: dict[str, Any]) -> None:
    """`~> X.Y` must admit no release that lacks an argument used here, and be no higher than that."""
    _, used = terraform_findings(terraform_blocks(), azurerm)
    newest = max(used.values(), key=version_key)
    needing = sorted(argument for argument, since in used.items() if since == newest)
    constraint, floor = pinned_floor()
    assert floor == newest, (
        f"{constraint} but the newest argument used, {needing}, is documented since {newest}"
    )


@pytest.mark.parametrize("path", BICEP_FILES, ids=[p.name for p in BICEP_FILES])
def test_every_bicep_property_is_in_the_published_types(bicep_types: dict[str, Any], path: Path) -> None:
    findings = bicep_findings(bicep_template(path), bicep_types)
    assert not findings, "\n".join(map(str, findings))


def test_bicep_api_versions_are_stable() -> None:
    used = {
        f"{r['type']}@{r['api_version']}"
        for p in BICEP_FILES
        for r in bicep_template(p)["resources"].values()
    }
    previews = {version for version in used if "preview" in version}
    assert previews <= PREVIEW_API_VERSIONS, previews - PREVIEW_API_VERSIONS
    assert len(used) == len({version.split("@")[0].lower() for version in used}), "one API version per type"


# --------------------------------------------------------------------- the checks can fail (and how)

REGISTRY = """
resource "azurerm_container_registry" "main" {
  name                 = "acr"
  location             = "westeurope"
  resource_group_name  = "rg"
  sku                  = "Premium"
  trust_policy_enabled = true
  admin_enable         = false
  georeplications {
    location                  = "northeurope"
    regional_endpoint_enabled = true
    zone_redundancy           = true
  }
  dynamic "network_rule_set" {
    for_each = [1]
    content {
      default_action = "Deny"
      ip_rule_typo   = []
    }
  }
  lifecycle {
    prevent_destroy = true
  }
}

resource "azurerm_storage_account_typo" "x" {
  name = "x"
}

provider "azurerm" {
  features {
    storage {
      data_plane_available = false
      no_such_feature      = true
    }
  }
}
"""


def test_unknown_and_deprecated_terraform_arguments_are_found(azurerm: dict[str, Any]) -> None:
    findings, used = terraform_findings(load_hcl(REGISTRY), azurerm)
    found = {str(f).split(":")[0] for f in findings}
    assert found == {
        "azurerm_container_registry.main.trust_policy_enabled",  # deprecated: refused by the service
        "azurerm_container_registry.main.admin_enable",  # unknown
        "azurerm_container_registry.main.georeplications.zone_redundancy",  # unknown in the block
        "azurerm_container_registry.main.network_rule_set.ip_rule_typo",  # inside a dynamic block
        "azurerm_storage_account_typo",
        "provider.azurerm.features.storage.no_such_feature",
    }
    assert used["provider.azurerm.features.storage.data_plane_available"] == "4.49.0"


def test_wrong_bicep_properties_and_api_versions_are_found(bicep_types: dict[str, Any]) -> None:
    template = copy.deepcopy(bicep_template())
    resources = template["resources"]
    resources["storage"]["config"]["properties"]["primaryEndpoints"] = {}
    resources["amlCompute"]["config"]["properties"]["computeType"] = "AmlKompute"
    resources["amlCompute"]["config"]["properties"]["properties"]["enableNodePublicIpAddress"] = False
    resources["dnsZones"]["config"]["config"]["propertys"] = {}
    resources["podsNotReady"]["config"]["properties"]["criteria"]["'odata.type'"] = "Single"
    resources["amlWorkspace"]["api_version"] = "2024-04-01"  # systemDatastoresAuthMode is not in it
    found = {str(f).split(":")[0] for f in bicep_findings(template, bicep_types)}
    assert {
        "storage.properties.primaryEndpoints",  # read-only
        "amlCompute.properties.computeType",  # not a discriminator value
        "amlCompute.properties.properties.enableNodePublicIpAddress",
        "dnsZones.propertys",  # inside a resource loop
        "podsNotReady.properties.criteria.odata.type",
        "amlWorkspace",
    } <= found


PAGE = """
## Example Usage

A `not_arguments` block supports the following:

* `example` - (Required) Not in the argument reference.

## Arguments Reference

* `name` - (Required) The name.

* `rule` - (Optional) A `rule` block as defined below.

---

The `rule` block supports the following:

* `filters` - (Optional) A `filters` block as defined below.

---

A `filters` block within the `rule` block supports the following:

* `prefix_match` - (Optional) Prefixes.

## Attributes Reference

* `id` - The ID.
"""

GUIDE = "\n".join(
    [
        "## Breaking Changes in Resources",
        "### `azurerm_key_vault`",
        "* The deprecated `enable_rbac_authorization` property has been removed in favour of the"
        " `rbac_authorization_enabled` property.",
        "### `azurerm_subnet`",
        "* The deprecated `service_endpoints` property has been removed in favour of the"
        " `service_endpoint` block.",
        "### `azurerm_container_registry`",
        "* The deprecated `trust_policy_enabled` property has been removed as it is no longer supported"
        " by the service.",
        "* The deprecated `regional_endpoint_enabled` property in the `georeplications` block has been"
        " removed in favour of the `global_endpoint_routing_enabled` property.",
        "## Breaking Changes in Data Sources",
        "### `azurerm_key_vault`",
        "* The deprecated `enable_rbac_authorization` property has been removed.",
    ]
)


def test_documented_arguments_read_only_the_argument_reference() -> None:
    assert documented_arguments(PAGE) == {
        "": {"name", "rule"},
        "rule": {"filters"},
        "filters": {"prefix_match"},
    }


def test_deprecated_means_removed_next_with_a_replacement_already_here() -> None:
    removed = removed_next_major(GUIDE)
    assert set(removed) == {"azurerm_key_vault", "azurerm_subnet", "azurerm_container_registry"}
    assert set(removed["azurerm_container_registry"]) == {
        "trust_policy_enabled",
        "georeplications.regional_endpoint_enabled",
    }
    documented = {
        "azurerm_key_vault": {"": {"rbac_authorization_enabled": "4.42.0"}},
        "azurerm_subnet": {"": {"service_endpoints": "4.0.0"}},  # no service_endpoint block in 4.x yet
        "azurerm_container_registry": {"georeplications": {"location": "4.0.0"}},  # nor this replacement
    }
    assert {r: set(paths) for r, paths in deprecated_in_4x(removed, documented).items()} == {
        "azurerm_key_vault": {"enable_rbac_authorization"},
        "azurerm_container_registry": {"trust_policy_enabled"},
    }


def test_documented_since_is_the_start_of_the_last_unbroken_run() -> None:
    history = [
        ("4.0.0", {"": {"a", "b"}}),
        ("4.1.0", {"": {"a"}}),
        ("4.2.0", {"": {"a", "b", "c"}, "blk": {"x"}}),
    ]
    assert documented_since(history) == {
        "": {"a": "4.0.0", "b": "4.2.0", "c": "4.2.0"},
        "blk": {"x": "4.2.0"},
    }
