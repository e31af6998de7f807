"""The model store's lifecycle policy never tiers what a ForecastModel may serve or roll back to.

Both templates' rules are read into one form and evaluated on the blobs a real store writes (Azurite,
blob index tags and all): only versions retired through `ModelStore.retire` are tiered, Archive only
where the account's replication supports it, and noncurrent blob versions (never read) as before.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure.storage.blob import ContainerClient

from retail_forecast.core.store import LIFECYCLE_TAG, Lifecycle, open_store
from tests.core.test_store import write_model
from tests.infra.iac import BICEP, TERRAFORM, bicep_template, terraform_blocks, terraform_resources, unwrap

ARCHIVE_TIERS = {"LRS", "GRS", "RAGRS"}  # Azure: Archive is not supported on ZRS, GZRS or RA-GZRS accounts


@dataclass(frozen=True)
class Rule:
    """One lifecycle rule, as either template writes it."""

    name: str
    prefixes: tuple[str, ...]
    tags: frozenset[tuple[str, str]]  # blob index matches (lifecycle rules only support "==")
    current: frozenset[str]  # actions on current blobs: cool, archive, delete
    noncurrent: frozenset[str]  # actions on noncurrent blob versions
    archive_on: frozenset[str]  # the replication types on which the archive actions exist

    def actions(self, blob: str, tags: Mapping[str, str], *, current: bool, replication: str) -> set[str]:
        """What this rule does to `blob` (`<container>/<name>`) with index `tags` on such an account."""
        if not any(blob.startswith(prefix) for prefix in self.prefixes):
            return set()
        if any(tags.get(name) != value for name, value in self.tags):
            return set()
        chosen = set(self.current if current else self.noncurrent)
        return chosen if replication in self.archive_on else chosen - {"archive"}


def action_kind(name: str) -> str:
    return next(kind for kind in ("cool", "archive", "delete") if kind in name.lower())


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def terraform_rules() -> list[Rule]:
    (guard,) = [
        unwrap(e["archive_supported"]) for e in terraform_blocks()["locals"] if "archive_supported" in e
    ]
    match = re.fullmatch(r"\$\{contains\((\[[^\]]*\]),\s*var\.storage_replication_type\)\}", guard)
    assert match, guard
    archive_on = frozenset(json.loads(match.group(1).replace("'", '"')))
    container = variable_default("models_container_name")
    rules = []
    for rule in as_list(terraform_resources()["azurerm_storage_management_policy.models"]["rule"]):
        assert rule["enabled"] is True
        filters, actions = rule["filters"], rule["actions"]
        tags = frozenset(
            (tag["name"], tag["value"])
            for tag in as_list(filters.get("match_blob_index_tag", []))
            if tag["operation"] == "=="
        )
        kinds = {}
        for block in ("base_blob", "version"):
            arguments = actions.get(block, {})
            for name, value in arguments.items():
                # An archive action is either guarded by the replication check or absent.
                assert "archive" not in name or str(value).startswith("${local.archive_supported ? "), name
            kinds[block] = frozenset(action_kind(name) for name in arguments)
        rules.append(
            Rule(
                name=rule["name"],
                prefixes=tuple(
                    p.replace("${var.models_container_name}", container)
                    for p in as_list(filters["prefix_match"])
                ),
                tags=tags,
                current=kinds["base_blob"],
                noncurrent=kinds["version"],
                archive_on=archive_on,
            )
        )
    return rules


def variable_default(name: str) -> Any:
    (variable,) = [unwrap(e[name]) for e in terraform_blocks()["variable"] if name in e]
    return variable["default"]


def bicep_actions(value: Any, guard: str, variables: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """{"": unconditional action kinds, "<condition>": kinds only under it} of a `union(...)`, an object
    literal or a variable holding one."""
    if isinstance(value, str):
        return bicep_actions(variables[value]["value"], guard, variables)
    if isinstance(value, dict) and "function" in value:
        assert value["function"]["type"] == "union"
        found: dict[str, frozenset[str]] = {}
        for argument in value["function"]["parameters"].values():
            for condition, kinds in bicep_actions(argument, guard, variables).items():
                found[condition] = found.get(condition, frozenset()) | kinds
        return found
    if isinstance(value, dict) and "operator" in value:
        operands = value["operator"]["operands"]
        assert value["operator"]["type"] == "conditional" and operands["false_value"] == {}
        assert operands["condition"] == guard, operands["condition"]
        return {guard: frozenset(action_kind(name) for name in operands["true_value"])}
    return {"": frozenset(action_kind(name) for name in value)}


def bicep_rules() -> list[Rule]:
    template = bicep_template()
    guard = template["variables"]["archiveSupported"]["value"]["function"]
    assert guard["type"] == "contains" and guard["parameters"]["item_to_find"] == "storageSku"
    archive_on = frozenset(sku.removeprefix("Standard_") for sku in guard["parameters"]["container"])
    container = template["parameters"]["modelsContainerName"]["default"]
    (policy,) = [
        r["config"] for r in template["resources"].values() if r["type"].endswith("/managementPolicies")
    ]
    rules = []
    for rule in policy["properties"]["policy"]["rules"]:
        assert rule["enabled"] is True and rule["type"] == "Lifecycle"
        filters, actions = rule["definition"]["filters"], rule["definition"]["actions"]
        kinds = {}
        for block in ("baseBlob", "version"):
            split = bicep_actions(actions.get(block, {}), "archiveSupported", template["variables"])
            assert "archive" not in split.get("", frozenset()), f"{rule['name']}: unguarded archive"
            kinds[block] = split.get("", frozenset()) | split.get("archiveSupported", frozenset())
        rules.append(
            Rule(
                name=rule["name"],
                prefixes=tuple(
                    p.replace("${modelsContainerName}", container) for p in filters["prefixMatch"]
                ),
                tags=frozenset(
                    (m["name"], m["value"]) for m in filters.get("blobIndexMatch", []) if m["op"] == "=="
                ),
                current=kinds["baseBlob"],
                noncurrent=kinds["version"],
                archive_on=archive_on,
            )
        )
    return rules


TEMPLATES = {"terraform": terraform_rules, "bicep": bicep_rules}


def test_both_templates_have_the_same_rules() -> None:
    assert terraform_rules() == bicep_rules()


@pytest.mark.parametrize("template", TEMPLATES)
def test_current_blobs_are_tiered_only_once_retired(template: str) -> None:
    """The one decision both sides share with the publisher and the operator: the tag and its value."""
    retired = frozenset({(LIFECYCLE_TAG, Lifecycle.RETIRED.value)})
    for rule in TEMPLATES[template]():
        if rule.current:
            assert rule.tags == retired, rule.name


@pytest.mark.parametrize("template", TEMPLATES)
def test_archive_only_where_the_account_supports_it(template: str) -> None:
    for rule in TEMPLATES[template]():
        assert rule.archive_on == ARCHIVE_TIERS, rule.name
    assert {"archive"} <= {kind for rule in TEMPLATES[template]() for kind in rule.current | rule.noncurrent}


def environment_replication() -> dict[str, dict[str, str]]:
    """{template: {env: replication}} from dev/prod tfvars and Bicep parameter files."""
    terraform = {
        env: re.findall(
            r'^storage_replication_type\s*=\s*"(\w+)"', (TERRAFORM / f"{env}.tfvars").read_text(), re.M
        )[0]
        for env in ("dev", "prod")
    }
    bicep = {
        env: json.loads((BICEP / f"main.parameters.{env}.json").read_text())["parameters"]["storageSku"][
            "value"
        ].removeprefix("Standard_")
        for env in ("dev", "prod")
    }
    return {"terraform": terraform, "bicep": bicep}


@pytest.mark.parametrize("template", TEMPLATES)
def test_the_policy_on_the_blobs_a_real_store_writes(
    template: str, azure_store_uri: str, tmp_path: Path
) -> None:
    store = open_store(azure_store_uri)
    for version in ("1", "2", "3"):
        write_model(tmp_path / version, version.encode() * 8, version=version)
        store.publish(tmp_path / version, "demand")
    store.retire("demand", "1")  # `forecast retire`: neither served nor a rollback target any more
    container = urlsplit(azure_store_uri).netloc
    client = ContainerClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"], container)
    blobs = {blob.name: blob.tags or {} for blob in client.list_blobs(include=["tags"])}
    assert len(blobs) == 6
    rules = TEMPLATES[template]()
    replication = environment_replication()[template]
    assert replication == {"dev": "ZRS", "prod": "GRS"}
    for env, expected_retired in (("dev", {"cool"}), ("prod", {"cool", "archive"})):
        for name, tags in blobs.items():
            # Rules name blobs <container>/<blob>: the store's prefix `models/` stands for azureblob://models.
            done = {
                a for r in rules for a in r.actions(name, tags, current=True, replication=replication[env])
            }
            expected = expected_retired if name.startswith("models/demand/1/") else set()
            assert done == expected, (env, name, tags)
            old = {
                a for r in rules for a in r.actions(name, tags, current=False, replication=replication[env])
            }
            assert old == ({"cool", "delete"} if env == "dev" else {"cool", "archive", "delete"}), (env, name)
