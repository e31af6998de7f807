"""What Azure and the azurerm provider accept, as data: the references and the checks against them.

checkov knows security rules, not what Azure accepts. This module holds the other half:

- `infra/reference/azurerm.json`: for every azurerm resource, data source and provider feature the
  Terraform files use, every argument and nested block the provider's own documentation
  (`website/docs/{r,d}/*.html.markdown`, `website/docs/guides/features-block.html.markdown`) lists at
  the newest 4.x release, each with the release since which it is documented without a gap, and the
  arguments the 5.0 upgrade guide names as deprecated in 4.x;
- `infra/reference/bicep-types.json`: for every `type@apiVersion` the Bicep files deploy, the writable
  property tree of Azure/bicep-types-az (`generated/**/types.json`), the definitions Bicep itself checks.

Both record the repository, release and commit they came from. Refresh them from local clones with
`python -m tests.infra.provider_reference azurerm <clone>` and `... bicep <clone>` (infra/README.md);
the tests only read the files.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.infra.iac import BICEP_FILES, INFRA, bicep_template, terraform_blocks, unwrap

REFERENCE = INFRA / "reference"
AZURERM_REFERENCE = REFERENCE / "azurerm.json"
BICEP_REFERENCE = REFERENCE / "bicep-types.json"

# Terraform's own meta-arguments and blocks, which no provider documents.
META_ARGUMENTS = frozenset({"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner"})
# Bicep keywords in a resource body that are not properties of the resource type.
BICEP_KEYWORDS = frozenset({"parent", "scope", "dependsOn"})
READ_ONLY = 2  # bicep-types TypePropertyFlags.ReadOnly

_SECTION = re.compile(r"^##\s+Arguments?\s+Reference\s*$", re.MULTILINE)
_NEXT_SECTION = re.compile(r"^##\s+(?!Arguments?\s+Reference)", re.MULTILINE)
_BLOCK_HEADING = re.compile(
    r"^(?:An?|The)\s+`(\w+)`\s+(?:block|object)\b[^:\n]*supports the following", re.MULTILINE
)
_ARGUMENT = re.compile(r"^\*\s+`(\w+)`\s+-", re.MULTILINE)
_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")


def version_key(version: str) -> tuple[int, int, int]:
    match = _VERSION.match(version)
    if not match:
        raise ValueError(f"not a release version: {version!r}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


# ------------------------------------------------------------------------------------------ azurerm docs


def documented_arguments(markdown: str) -> dict[str, set[str]]:
    """{"": top-level arguments, "<block>": its arguments} from a provider page's argument reference.

    Blocks are keyed by name only: the docs describe a nested block once, under its own name, wherever
    it appears ("A `upgrade_settings` block supports the following:").
    """
    start = _SECTION.search(markdown)
    if start is None:
        return {"": set()}
    end = _NEXT_SECTION.search(markdown, start.end())
    section = markdown[start.end() : end.start() if end else len(markdown)]
    arguments: dict[str, set[str]] = {"": set()}
    current = ""
    for line in section.splitlines():
        heading = _BLOCK_HEADING.match(line)
        if heading:
            current = heading.group(1)
            arguments.setdefault(current, set())
            continue
        argument = _ARGUMENT.match(line)
        if argument:
            arguments[current].add(argument.group(1))
    return arguments


def removed_next_major(upgrade_guide: str) -> dict[str, dict[str, tuple[str, str | None]]]:
    """{resource: {argument path: (the guide's sentence, its replacement or None)}}: what the next major
    release's upgrade guide says it removes after deprecation.

    Only the resources part: data sources are listed again under their own heading.
    """
    removed: dict[str, dict[str, tuple[str, str | None]]] = {}
    resource: str | None = None
    in_resources = False
    for line in upgrade_guide.splitlines():
        if line.startswith("## "):
            in_resources = "resource" in line.lower() and "data source" not in line.lower()
            resource = None
        elif line.startswith("### "):
            found = re.match(r"^###\s+`(azurerm_\w+)`", line)
            resource = found.group(1) if found and in_resources else None
        elif resource and "deprecated" in line:
            sentence = line.lstrip("* ").strip()
            replacement = re.search(
                r"(?:in favour of|renamed to) the `([\w.]+)` (?:property|block)", sentence
            )
            within = re.search(r"deprecated `[\w.]+` (?:property|block) in the `(\w+)` block", sentence)
            for name in re.findall(r"[Tt]he deprecated `([\w.]+)` (?:property|block|argument)", sentence):
                path = f"{within.group(1)}.{name}" if within else name
                removed.setdefault(resource, {})[path] = (
                    sentence,
                    replacement.group(1) if replacement else None,
                )
    return removed


def deprecated_in_4x(
    removed: Mapping[str, Mapping[str, tuple[str, str | None]]], documented: Mapping[str, Any]
) -> dict[str, dict[str, str]]:
    """What a 4.x template must not use: removed in 5.0, and either nothing replaces it or its replacement
    is already in 4.x (e.g. subnet `service_endpoints` stays: its `service_endpoint` block is 5.0-only)."""
    deprecated: dict[str, dict[str, str]] = {}
    for resource, paths in removed.items():
        known = {name for block in documented.get(resource, {}).values() for name in block}
        for path, (sentence, replacement) in paths.items():
            if replacement is None or replacement.split(".")[-1] in known:
                deprecated.setdefault(resource, {})[path] = sentence
    return deprecated


def documented_since(history: Iterable[tuple[str, dict[str, set[str]]]]) -> dict[str, dict[str, str]]:
    """For (version, documented arguments) oldest first: what the newest documents, each with the release
    since which it is documented without a gap (the floor a template using it needs)."""
    since: dict[str, dict[str, str]] = {}
    for version, arguments in history:
        for block in list(since):
            if block not in arguments:
                del since[block]
        for block, names in arguments.items():
            known = since.setdefault(block, {})
            for name in list(known):
                if name not in names:
                    del known[name]
            for name in names:
                known.setdefault(name, version)
    return {block: dict(sorted(names.items())) for block, names in sorted(since.items())}


# --------------------------------------------------------------------------------- Terraform checking


@dataclass(frozen=True)
class Finding:
    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


def _hcl_children(body: Mapping[str, Any]) -> Iterator[tuple[str, Any, bool]]:
    """(name, value, is_block) of an HCL body as bc-python-hcl2 parses it; `dynamic "x"` yields block x."""
    for name, value in body.items():
        if name.startswith("__"):  # the parser's own __start_line__ / __end_line__
            continue
        if name == "dynamic":
            for entry in value if isinstance(value, list) else [value]:
                for label, dynamic in entry.items():
                    yield label, unwrap(dynamic).get("content", {}), True
            continue
        items = value if isinstance(value, list) else [value]
        blocks = [item for item in items if isinstance(item, dict)]
        # An attribute whose value is an object literal parses as a one-element list holding a dict, like
        # a block; `tags = {...}` and friends are arguments, told apart by the reference below.
        yield name, blocks if blocks and len(blocks) == len(items) else value, bool(blocks)


@dataclass(frozen=True)
class _Page:
    """One documentation page's arguments and deprecations, and where the check stands in it."""

    documented: Mapping[str, Mapping[str, str]]
    deprecated: Mapping[str, str]


def check_hcl_body(
    body: Mapping[str, Any], block: str, where: str, path: str, page: _Page, used: dict[str, str]
) -> list[Finding]:
    """Check one resource or nested block body (`block` is its name in the docs, "" for the resource;
    `path` its dotted argument path); `used` collects {argument path: documented since}."""
    findings: list[Finding] = []
    known = page.documented.get(block, {})
    for name, value, is_block in _hcl_children(body):
        if name in META_ARGUMENTS and block == "":
            continue
        argument = f"{path}.{name}" if path else name
        if name not in known:
            findings.append(
                Finding(
                    f"{where}.{argument}", f"not in the argument reference of `{block or 'the resource'}`"
                )
            )
            continue
        used[argument] = known[name]
        if argument in page.deprecated:
            findings.append(Finding(f"{where}.{argument}", f"deprecated: {page.deprecated[argument]}"))
        if is_block and name in page.documented:
            for child in value if isinstance(value, list) else [value]:
                findings += check_hcl_body(unwrap(child), name, where, argument, page, used)
    return findings


def terraform_findings(
    blocks: Mapping[str, list[dict[str, Any]]], reference: Mapping[str, Any]
) -> tuple[list[Finding], dict[str, str]]:
    """Every resource, data source and provider feature of the Terraform files against the reference.

    Returns the findings and {what is used: documented since} (the provider floor is the newest of these).
    """
    findings: list[Finding] = []
    used: dict[str, str] = {}
    for kind, section in (("resource", "resources"), ("data", "data_sources")):
        for entry in blocks.get(kind, []):
            for rtype, named in entry.items():
                if not rtype.startswith("azurerm_"):
                    findings.append(Finding(rtype, "only the azurerm provider is referenced"))
                    continue
                documented = reference[section].get(rtype)
                if documented is None:
                    findings.append(Finding(rtype, f"no {section[:-1].replace('_', ' ')} of that name"))
                    continue
                page = _Page(documented, reference["deprecated"].get(rtype, {}) if kind == "resource" else {})
                for name, body in named.items():
                    per_resource: dict[str, str] = {}
                    findings += check_hcl_body(unwrap(body), "", f"{rtype}.{name}", "", page, per_resource)
                    used.update({f"{rtype}.{arg}": since for arg, since in per_resource.items()})
    for entry in blocks.get("provider", []):
        for provider, body in entry.items():
            if provider != "azurerm":
                findings.append(Finding(f"provider.{provider}", "only the azurerm provider is referenced"))
                continue
            features = unwrap(body).get("features", {})
            per_feature: dict[str, str] = {}
            page = _Page(reference["provider_features"], {})
            findings += check_hcl_body(
                unwrap(features), "features", "provider.azurerm", "features", page, per_feature
            )
            used.update({f"provider.azurerm.{arg}": since for arg, since in per_feature.items()})
    return findings, used


# -------------------------------------------------------------------------------------- Bicep types


def compact_types(types: list[dict[str, Any]], resource: str) -> dict[str, Any]:
    """The type graph of one `type@apiVersion` from a bicep-types `types.json`, reachable from its body,
    renumbered, without descriptions: {"root": index, "types": [node, ...]}."""
    wanted = resource.lower()
    (body,) = [
        entry["body"]["$ref"]
        for entry in types
        if entry["$type"] == "ResourceType" and entry["name"].lower() == wanted
    ]
    order: dict[int, int] = {}
    nodes: list[dict[str, Any]] = []

    def ref(pointer: str) -> int:
        index = int(pointer.removeprefix("#/"))
        if index not in order:
            order[index] = len(nodes)
            nodes.append({})
            nodes[order[index]] = convert(types[index])
        return order[index]

    def props(properties: Mapping[str, Any]) -> dict[str, list[int]]:
        return {
            name: [ref(p["type"]["$ref"]), int(p.get("flags", 0))] for name, p in sorted(properties.items())
        }

    def convert(node: Mapping[str, Any]) -> dict[str, Any]:
        kind = node["$type"]
        if kind == "ObjectType":
            converted: dict[str, Any] = {"object": props(node.get("properties", {}))}
            if "additionalProperties" in node:
                converted["additional"] = ref(node["additionalProperties"]["$ref"])
            return converted
        if kind == "DiscriminatedObjectType":
            return {
                "discriminator": node["discriminator"],
                "object": props(node.get("baseProperties", {})),
                "elements": {value: ref(r["$ref"]) for value, r in sorted(node["elements"].items())},
            }
        if kind == "ArrayType":
            return {"array": ref(node["itemType"]["$ref"])}
        if kind == "UnionType":
            return {"union": [ref(r["$ref"]) for r in node["elements"]]}
        if kind == "StringLiteralType":
            return {"literal": node["value"]}
        return {"scalar": kind.removesuffix("Type").lower()}

    root = ref(body)
    return {"root": root, "types": nodes}


_EXPRESSION_KEYS = ({"operator"}, {"function"})
_LOOP_KEYS = {"loop_type", "condition", "config"}
_CONDITION_KEYS = {"condition", "config"}


class BicepChecker:
    """Checks a pycep-parsed resource body against one compact type graph."""

    def __init__(self, graph: Mapping[str, Any], names: frozenset[str], variables: Mapping[str, Any]) -> None:
        self._types: list[dict[str, Any]] = graph["types"]
        self._root: int = graph["root"]
        # pycep renders a reference to a parameter or variable as a bare string: never an enum literal.
        self._names = names
        self._variables = variables

    def check(self, body: Mapping[str, Any], where: str) -> list[Finding]:
        return self._value(body, self._root, where, top=True)

    def _value(self, value: Any, index: int, where: str, top: bool = False) -> list[Finding]:
        node = self._types[index]
        if isinstance(value, str) and isinstance(self._variables.get(value), dict | list):
            value = self._variables[value]  # a variable holding an object or array literal: check its value
        if isinstance(value, dict) and set(value) == _LOOP_KEYS:
            # A loop: a resource loop yields bodies, a property loop the array's items.
            item = node.get("array", index)
            return self._value(value["config"], item, where, top)
        if top and isinstance(value, dict) and set(value) == _CONDITION_KEYS:
            return self._value(value["config"], index, where, top)  # a resource deployed `if (…)`
        if isinstance(value, dict) and set(value) in _EXPRESSION_KEYS:
            return self._expression(value, index, where)
        if "union" in node:
            return self._union(value, node["union"], where)
        if "array" in node:
            if isinstance(value, list):
                return [
                    f
                    for i, item in enumerate(value)
                    for f in self._value(item, node["array"], f"{where}[{i}]")
                ]
            return []
        if "object" in node:
            return self._object(value, node, where, top) if isinstance(value, dict) else []
        if (
            "literal" in node
            and isinstance(value, str)
            and self._is_literal(value)
            and value != node["literal"]
        ):
            return [Finding(where, f"{value!r} is not {node['literal']!r}")]
        return []

    def _expression(self, value: dict[str, Any], index: int, where: str) -> list[Finding]:
        """Object literals inside `cond ? a : b` and `union(a, b)` are checked as the same type."""
        if "operator" in value and value["operator"]["type"] == "conditional":
            operands = value["operator"]["operands"]
            return self._value(operands["true_value"], index, where) + self._value(
                operands["false_value"], index, where
            )
        if "function" in value and value["function"]["type"] == "union":
            parameters = value["function"]["parameters"]
            found: list[Finding] = []
            for argument in parameters.values() if isinstance(parameters, dict) else parameters:
                found += self._value(argument, index, where)
            return found
        return []

    def _union(self, value: Any, members: list[int], where: str) -> list[Finding]:
        literals = [self._types[m]["literal"] for m in members if "literal" in self._types[m]]
        open_ended = any("literal" not in self._types[m] for m in members)
        if isinstance(value, str) and self._is_literal(value) and literals and not open_ended:
            return (
                [] if value in literals else [Finding(where, f"{value!r} is not one of {sorted(literals)}")]
            )
        candidates = [
            self._value(value, member, where) for member in members if "literal" not in self._types[member]
        ]
        return min(candidates, key=len) if candidates else []

    def _object(self, value: dict[str, Any], node: dict[str, Any], where: str, top: bool) -> list[Finding]:
        value = {
            key.strip("'"): item for key, item in value.items()
        }  # pycep keeps the quotes of 'odata.type'
        properties: dict[str, list[int]] = dict(node["object"])
        findings: list[Finding] = []
        if "discriminator" in node:
            discriminator, elements = node["discriminator"], node["elements"]
            chosen = value.pop(discriminator, None)
            if isinstance(chosen, str) and self._is_literal(chosen) and chosen not in elements:
                findings.append(
                    Finding(f"{where}.{discriminator}", f"{chosen!r} is not one of {sorted(elements)}")
                )
            names = [chosen] if isinstance(chosen, str) and chosen in elements else list(elements)
            for name in names:
                properties.update(self._types[elements[name]]["object"])
            properties.pop(discriminator, None)
        for key, item in value.items():
            if top and key in BICEP_KEYWORDS:
                continue
            path = f"{where}.{key}"
            if key in properties:
                target, flags = properties[key]
                if flags & READ_ONLY:
                    findings.append(Finding(path, "read-only: Azure ignores it"))
                findings += self._value(item, target, path)
            elif "additional" in node:
                findings += self._value(item, node["additional"], path)
            else:
                findings.append(Finding(path, "not a property of this type at this API version"))
        return findings

    def _is_literal(self, value: str) -> bool:
        return "${" not in value and value not in self._names


def bicep_findings(template: Mapping[str, Any], reference: Mapping[str, Any]) -> list[Finding]:
    names = frozenset(
        [*template.get("parameters", {}), *template.get("variables", {}), *template.get("resources", {})]
    )
    findings: list[Finding] = []
    for name, resource in template["resources"].items():
        key = f"{resource['type']}@{resource['api_version']}"
        graph = reference["resources"].get(key)
        if graph is None:
            findings.append(
                Finding(name, f"{key} is not in {BICEP_REFERENCE.name}: a published type? (refresh it)")
            )
            continue
        variables = {key: var["value"] for key, var in template.get("variables", {}).items()}
        findings += BicepChecker(graph, names, variables).check(resource["config"], name)
    return findings


# --------------------------------------------------------------------------------- extraction (manual)


def _git_show(clone: Path, revision: str, path: str) -> str | None:
    result = subprocess.run(
        ["git", "-C", str(clone), "show", f"{revision}:{path}"], capture_output=True, text=True, check=False
    )
    return result.stdout if result.returncode == 0 else None


def _git(clone: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(clone), *args], capture_output=True, text=True, check=True).stdout


def _used_terraform_types() -> tuple[set[str], set[str]]:
    blocks = terraform_blocks()
    resources = {rtype for entry in blocks.get("resource", []) for rtype in entry}
    data = {rtype for entry in blocks.get("data", []) for rtype in entry}
    return resources, data


def extract_azurerm(clone: Path, major: int = 4) -> dict[str, Any]:
    """Walk every `v<major>.x.y` tag of a terraform-provider-azurerm clone (oldest first)."""
    tags = sorted(
        (tag for tag in _git(clone, "tag", "--list", f"v{major}.*").split() if _VERSION.match(tag)),
        key=version_key,
    )
    newest = tags[-1]
    resources, data = _used_terraform_types()
    pages = {
        ("resources", r): f"website/docs/r/{r.removeprefix('azurerm_')}.html.markdown" for r in resources
    }
    pages |= {("data_sources", d): f"website/docs/d/{d.removeprefix('azurerm_')}.html.markdown" for d in data}
    features_page = "website/docs/guides/features-block.html.markdown"
    histories: dict[tuple[str, str], list[tuple[str, dict[str, set[str]]]]] = {key: [] for key in pages}
    feature_history: list[tuple[str, dict[str, set[str]]]] = []
    for tag in tags:
        version = tag.removeprefix("v")
        for key, page in pages.items():
            text = _git_show(clone, tag, page)
            histories[key].append((version, documented_arguments(text) if text else {}))
        features = _git_show(clone, tag, features_page)
        feature_history.append((version, documented_arguments(features) if features else {}))
    next_major = sorted(
        (t for t in _git(clone, "tag", "--list", f"v{major + 1}.0.*").split() if _VERSION.match(t)),
        key=version_key,
    )
    guide_path = f"website/docs/guides/{major + 1}.0-upgrade-guide.html.markdown"
    guide_tag = next_major[0] if next_major else newest
    guide = _git_show(clone, guide_tag, guide_path) or ""
    reference: dict[str, Any] = {
        "source": "https://github.com/hashicorp/terraform-provider-azurerm",
        "documentation": "website/docs/r/*.html.markdown, website/docs/d/*.html.markdown, " + features_page,
        "newest": {
            "version": newest.removeprefix("v"),
            "commit": _git(clone, "rev-list", "-n1", newest).strip(),
        },
        "oldest": tags[0].removeprefix("v"),
        "deprecations": {
            "path": guide_path,
            "version": guide_tag.removeprefix("v"),
            "commit": _git(clone, "rev-list", "-n1", guide_tag).strip(),
        },
        "resources": {},
        "data_sources": {},
        "provider_features": documented_since(feature_history),
    }
    for (section, rtype), history in sorted(histories.items()):
        reference[section][rtype] = documented_since(history)
    removed = {r: paths for r, paths in removed_next_major(guide).items() if r in resources}
    reference["deprecated"] = dict(sorted(deprecated_in_4x(removed, reference["resources"]).items()))
    return reference


def extract_bicep(clone: Path, revision: str = "HEAD") -> dict[str, Any]:
    """The type graphs of every `type@apiVersion` the Bicep files deploy, from a bicep-types-az clone."""
    wanted = {
        f"{r['type']}@{r['api_version']}".lower(): f"{r['type']}@{r['api_version']}"
        for path in BICEP_FILES
        for r in bicep_template(path)["resources"].values()
    }
    listing = _git(clone, "ls-tree", "-r", "--name-only", revision, "generated").split()
    resources: dict[str, Any] = {}
    for path in listing:
        parts = path.split("/")
        if not path.endswith("/types.json") or len(parts) < 5:
            continue
        namespace, api_version = parts[-3], parts[-2]
        candidates = [
            key for key in wanted if key.startswith(f"{namespace}/") and key.endswith(f"@{api_version}")
        ]
        if not candidates:
            continue
        text = _git_show(clone, revision, path)
        if text is None:
            continue
        types = json.loads(text)
        published = {entry["name"].lower() for entry in types if entry["$type"] == "ResourceType"}
        for key in candidates:
            if key in published and wanted[key] not in resources:
                resources[wanted[key]] = {"path": path, **compact_types(types, wanted[key])}
    return {
        "source": "https://github.com/Azure/bicep-types-az",
        "commit": _git(clone, "rev-parse", revision).strip(),
        "resources": dict(sorted(resources.items())),
    }


def dump_reference(reference: Mapping[str, Any]) -> str:
    """Readable JSON with one line per resource, so a refresh diffs by resource."""
    lines = ["{"]
    for i, (key, value) in enumerate(reference.items()):
        comma = "," if i < len(reference) - 1 else ""
        if isinstance(value, dict) and key in ("resources", "data_sources", "deprecated"):
            inner = [f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in value.items()]
            body = ",\n".join(f"  {line}" for line in inner)
            lines.append(
                f"  {json.dumps(key)}: {{\n{body}\n  }}{comma}"
                if inner
                else f"  {json.dumps(key)}: {{}}{comma}"
            )
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, sort_keys=True)}{comma}")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == json.loads(json.dumps(reference))
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("kind", choices=["azurerm", "bicep"])
    parser.add_argument(
        "clone", type=Path, help="a git clone (or bare git directory) of the source repository"
    )
    args = parser.parse_args(argv)
    if args.kind == "azurerm":
        reference, target = extract_azurerm(args.clone), AZURERM_REFERENCE
    else:
        reference, target = extract_bicep(args.clone), BICEP_REFERENCE
    REFERENCE.mkdir(exist_ok=True)
    target.write_text(dump_reference(reference))
    print(f"wrote {target.relative_to(INFRA.parent)}")


if __name__ == "__main__":
    main()
