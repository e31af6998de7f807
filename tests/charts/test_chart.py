"""The forecast-operator Helm chart and the plain manifests in k8s/, checked offline.

The chart is linted and rendered with helm-python-sdk (Helm's own Go library, no cluster, no helm CLI);
every rendered object and every manifest in k8s/ is validated against the Kubernetes 1.28 OpenAPI schemas
(kubernetes-validate, strict: unknown fields fail) or, for custom resources, against their CRD's
openAPIV3Schema. Whether the RBAC grants exactly what the operator calls is measured on a real API server
(test_rbac.py); here only its shape (bindings, scopes, no wildcards).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any, Final

import helm_python
import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pydantic
import pytest

from retail_forecast.operator import resources as res
from tests.charts.chart import (
    CHART,
    K8S,
    NAMESPACE,
    PEERING,
    RELEASE,
    Obj,
    crd_objects,
    load_yaml,
    notes,
    render,
    rule_table,
)

KUBE_VERSION: Final = "1.28.0"
# Labels only Helm can truthfully set: the plain manifests in k8s/ leave them out.
HELM_ONLY_LABELS: Final = frozenset({"helm.sh/chart", "app.kubernetes.io/managed-by"})
STANDARD_LABELS: Final = {
    "app.kubernetes.io/name": "forecast-operator",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/version": "0.1.0",
    "app.kubernetes.io/managed-by": "Helm",
    "app.kubernetes.io/part-of": "retail-forecast",
    "helm.sh/chart": "forecast-operator-0.1.0",
}

SCENARIOS: Final[dict[str, Obj]] = {
    "default": {},
    "namespaces": {"watchNamespaces": ["a", "b"]},
    "workload-identity": {
        "workloadIdentity": {"enabled": True},
        "serviceAccount": {
            "annotations": {"azure.workload.identity/client-id": "0" * 8 + "-0000-0000-0000-" + "0" * 12}
        },
        "azure": {"storageAccountUrl": "https://example.blob.core.windows.net"},
        "env": [{"name": "FORECAST_LOG_LEVEL", "value": "debug"}],
        "priorityClassName": "system-cluster-critical",
    },
}


# ---------------------------------------------------------------- helpers


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} objects"
    return found[0]


def kube_schema(schema: Any) -> Any:
    """A CRD's structural schema as plain JSON Schema: drop the `x-kubernetes-*` extensions.

    Those (preserve-unknown-fields, list-type, and the CEL `x-kubernetes-validations`) are API-server
    semantics, not JSON Schema; the CEL rules in particular cannot be evaluated offline.
    """
    if isinstance(schema, dict):
        return {k: kube_schema(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if isinstance(schema, list):
        return [kube_schema(v) for v in schema]
    return schema


@functools.cache
def _custom_validators() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    validators = {}
    for crd in crd_objects():
        for version in crd["spec"]["versions"]:
            schema = kube_schema(version["schema"]["openAPIV3Schema"])
            jsonschema.Draft7Validator.check_schema(schema)
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            validators[key] = jsonschema.Draft7Validator(schema)
    return validators


def custom_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator | None:
    return _custom_validators().get((api_version, kind))


def validate_object(obj: Obj) -> None:
    """Kubernetes 1.28 schema (strict) for built-in kinds; the CRD's schema for our custom kinds."""
    validator = custom_validator(obj["apiVersion"], obj["kind"])
    if validator is None:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        return
    validator.validate(obj)
    assert set(obj) <= {"apiVersion", "kind", "metadata", "spec", "status"}
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}, KUBE_VERSION, strict=True
    )  # ObjectMeta checked strictly through a kind that has nothing else required


def without_helm_labels(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (
                {lk: lv for lk, lv in v.items() if lk not in HELM_ONLY_LABELS}
                if k == "labels" and isinstance(v, dict)
                else without_helm_labels(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [without_helm_labels(v) for v in value]
    return value


def key(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj["metadata"]
    return obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"]


def all_rules(objects: list[Obj]) -> Iterator[Obj]:
    for obj in objects:
        if obj["kind"] in {"ClusterRole", "Role"}:
            yield from obj["rules"]


def deployment(objects: list[Obj]) -> Obj:
    return one(objects, "Deployment", RELEASE)


def container(objects: list[Obj]) -> Obj:
    containers = deployment(objects)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: Obj = containers[0]
    return found


# ---------------------------------------------------------------- lint and schema validity


def test_chart_lints_strictly() -> None:
    result = helm_python.lint(str(CHART), strict=True, namespace=NAMESPACE, kube_version=KUBE_VERSION)
    assert result["errors"] == []
    # severity 1 is INFO ("icon is recommended"); warnings (2) and errors (3) fail under --strict.
    assert [m for m in result["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_rendered_object_is_valid_for_kubernetes_1_28(scenario: str) -> None:
    objects = render(SCENARIOS[scenario])
    assert objects
    for obj in objects:
        validate_object(obj)


def test_crds_are_valid_and_identical_in_k8s() -> None:
    crds = crd_objects()
    names = {crd["metadata"]["name"] for crd in crds}
    assert names == {
        "forecastmodels.retailforecast.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    for crd in crds:
        kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)
    assert (K8S / "crd.yaml").read_bytes() == (
        CHART / "crds" / "forecastmodels.retailforecast.io.yaml"
    ).read_bytes()
    assert (K8S / "kopf-peering-crds.yaml").read_bytes() == (
        CHART / "crds" / "kopfpeerings.kopf.dev.yaml"
    ).read_bytes()
    peering = {
        crd["spec"]["names"]["plural"]: crd["spec"]["scope"]
        for crd in crds
        if crd["spec"]["group"] == "kopf.dev"
    }
    assert peering == {"clusterkopfpeerings": "Cluster", "kopfpeerings": "Namespaced"}
    fm = one(crds, "CustomResourceDefinition", "forecastmodels.retailforecast.io")
    assert (fm["spec"]["group"], fm["spec"]["names"]["plural"]) == (res.GROUP, res.PLURAL)
    assert [v["name"] for v in fm["spec"]["versions"]] == [res.VERSION]


def test_every_manifest_in_k8s_is_valid_for_kubernetes_1_28() -> None:
    paths = sorted(K8S.rglob("*.yaml"))
    assert {p.relative_to(K8S).as_posix() for p in paths} >= {
        "crd.yaml",
        "kopf-peering-crds.yaml",
        "namespace.yaml",
        "rbac.yaml",
        "operator.yaml",
        "examples/forecastmodel-demand.yaml",
        "examples/forecastmodel-fixed-replicas.yaml",
    }
    for path in paths:
        for obj in load_yaml(path):
            validate_object(obj)


# ---------------------------------------------------------------- the operator Deployment


def test_deployment_is_hardened_and_replicated() -> None:
    objects = render()
    dep = deployment(objects)
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ctr = container(objects)
    sc = ctr["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"requests", "limits"} <= set(ctr["resources"])
    assert {"cpu", "memory"} <= set(ctr["resources"]["requests"])
    assert "memory" in ctr["resources"]["limits"]
    assert ctr["image"] == "retail-forecast/operator:0.1.0"  # tag defaults to appVersion
    # The read-only root filesystem needs a writable /tmp.
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    assert {"name": "tmp", "mountPath": "/tmp"} in ctr["volumeMounts"]
    assert ctr["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8081, "protocol": "TCP"} in ctr["ports"]
    assert pod["serviceAccountName"] == RELEASE
    assert "priorityClassName" not in pod
    env = {e["name"]: e for e in ctr["env"]}
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}  # kopf identity
    assert "AZURE_STORAGE_ACCOUNT_URL" not in env
    # Replicas on different nodes, and a voluntary disruption never takes both.
    selector = spec["selector"]["matchLabels"]
    spread = pod["topologySpreadConstraints"]
    assert [
        (c["topologyKey"], c["whenUnsatisfiable"], c["labelSelector"]["matchLabels"]) for c in spread
    ] == [("kubernetes.io/hostname", "DoNotSchedule", selector)]
    pdb = one(objects, "PodDisruptionBudget", RELEASE)
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    # The operator's own Deployment must not look like one the operator manages (it watches those).
    assert dep["metadata"]["labels"].get(res.LABEL_MANAGED_BY) != res.MANAGER


def test_args_run_the_operator_with_peering() -> None:
    objects = render()
    assert container(objects)["args"] == [
        "operator",
        "--peering",
        PEERING,
        "--liveness",
        "http://0.0.0.0:8081/healthz",
    ]
    peering = one(objects, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == PEERING
    assert "namespace" not in peering["metadata"]
    assert not [o for o in objects if o["kind"] == "KopfPeering"]


def test_image_and_peering_name_come_from_values() -> None:
    objects = render(
        {
            "image": {
                "repository": "acr.example.io/retail-forecast/operator",
                "tag": "abc123",
                "pullPolicy": "Always",
            },
            "peering": {"name": "blue-team"},
        }
    )
    ctr = container(objects)
    assert ctr["image"] == "acr.example.io/retail-forecast/operator:abc123"
    assert ctr["imagePullPolicy"] == "Always"
    assert ctr["args"][1:3] == ["--peering", "blue-team"]
    assert one(objects, "ClusterKopfPeering")["metadata"]["name"] == "blue-team"
    patch_rule = next(r for r in all_rules(objects) if r.get("resourceNames"))
    assert patch_rule["resourceNames"] == ["blue-team"]


def test_watch_namespaces_are_arguments_roles_and_peerings() -> None:
    objects = render(SCENARIOS["namespaces"])
    assert container(objects)["args"][-4:] == ["--namespace", "a", "--namespace", "b"]
    for ns in ("a", "b"):
        peering = one([o for o in objects if o["metadata"].get("namespace") == ns], "KopfPeering", PEERING)
        assert peering["apiVersion"] == "kopf.dev/v1"
        binding = one([o for o in objects if o["metadata"].get("namespace") == ns], "RoleBinding")
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": RELEASE,
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    assert not [o for o in objects if o["kind"] == "ClusterKopfPeering"]
    assert {o["metadata"]["namespace"] for o in objects if o["kind"] == "Role"} == {"a", "b"}


def test_workload_identity_labels_pods_and_annotates_the_service_account() -> None:
    values = SCENARIOS["workload-identity"]
    objects = render(values)
    sa = one(objects, "ServiceAccount", RELEASE)
    assert sa["metadata"]["annotations"] == values["serviceAccount"]["annotations"]
    template = deployment(objects)["spec"]["template"]
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert template["spec"]["priorityClassName"] == "system-cluster-critical"
    env = {e["name"]: e.get("value") for e in container(objects)["env"]}
    assert env["AZURE_STORAGE_ACCOUNT_URL"] == "https://example.blob.core.windows.net"
    assert env["FORECAST_LOG_LEVEL"] == "debug"
    # Off by default; a client id alone (what azure-pipelines.yml sets) also turns it on.
    assert "azure.workload.identity/use" not in deployment(render())["spec"]["template"]["metadata"]["labels"]
    client_id = {"workloadIdentity": {"clientId": "11111111-2222-3333-4444-555555555555"}}
    objects = render(client_id)
    assert (
        deployment(objects)["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    )
    assert one(objects, "ServiceAccount")["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": "11111111-2222-3333-4444-555555555555"
    }


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_object_has_the_standard_labels(scenario: str) -> None:
    for obj in render(SCENARIOS[scenario]):
        labels = obj["metadata"]["labels"]
        assert {k: labels.get(k) for k in STANDARD_LABELS} == STANDARD_LABELS, key(obj)
    pod_labels = deployment(render())["spec"]["template"]["metadata"]["labels"]
    assert {k: pod_labels.get(k) for k in STANDARD_LABELS} == STANDARD_LABELS


def test_notes_say_how_to_apply_an_example_and_watch() -> None:
    text = notes()
    assert "k8s/examples/forecastmodel-demand.yaml" in text
    assert "get fm -w" in text
    assert "all namespaces" in text
    assert "a, b" in notes(SCENARIOS["namespaces"])


# ---------------------------------------------------------------- RBAC


def test_rbac_for_all_namespaces_is_one_cluster_role_for_the_service_account() -> None:
    objects = render()
    assert {o["kind"] for o in objects if "rbac" in o["apiVersion"]} == {"ClusterRole", "ClusterRoleBinding"}
    one(objects, "ClusterRole", RELEASE)
    binding = one(objects, "ClusterRoleBinding", RELEASE)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": RELEASE,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]


def test_rbac_for_listed_namespaces_is_one_role_per_namespace() -> None:
    objects = render(SCENARIOS["namespaces"])
    roles = [rule_table(o) for o in objects if o["kind"] == "Role"]
    assert len(roles) == 2
    assert roles[0] == roles[1]
    assert not set(rule_table(one(objects, "ClusterRole", RELEASE))) & set(roles[0])


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rbac_has_no_wildcards_secrets_or_pod_access_beyond_listing(scenario: str) -> None:
    """Pods: `list` alone (a finished batch run's termination message), never get, watch, exec or logs."""
    rules = list(all_rules(render(SCENARIOS[scenario])))
    assert rules
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        assert not {"secrets", "pods/exec", "pods/log", "configmaps", "serviceaccounts"} & set(
            rule["resources"]
        )
        if "pods" in rule["resources"]:
            assert (rule["apiGroups"], rule["resources"], rule["verbs"]) == ([""], ["pods"], ["list"]), rule
        assert not {"deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])
        if "delete" in rule["verbs"]:  # no longer wanted: the preview Service, the HPA, the batch CronJob
            assert set(rule["resources"]) <= {"services", "horizontalpodautoscalers", "cronjobs"}, rule


def test_the_objects_the_operator_builds_are_valid_for_kubernetes_1_28() -> None:
    spec = res.ForecastModelSpec.model_validate(
        load_yaml(K8S / "examples" / "forecastmodel-demand.yaml")[0]["spec"]
    )
    for obj in (
        res.deployment("demand", res.Color.BLUE, spec, version="1", sha256="0" * 64, replicas=2),
        res.service("demand", "demand", res.Color.BLUE),
        res.hpa("demand", res.Color.BLUE, spec),
    ):
        validate_object(obj)


# ---------------------------------------------------------------- k8s/ plain manifests


def test_k8s_manifests_equal_the_default_render() -> None:
    """k8s/rbac.yaml + k8s/operator.yaml are the default render, minus the Helm-only labels."""
    rendered = {key(o): without_helm_labels(o) for o in render()}
    plain = {key(o): o for name in ("rbac.yaml", "operator.yaml") for o in load_yaml(K8S / name)}
    assert sorted(plain) == sorted(rendered)
    for k, obj in plain.items():
        assert obj == rendered[k], k
    for obj in plain.values():  # no Helm-only label leaked into the plain manifests
        assert not HELM_ONLY_LABELS & set(obj["metadata"].get("labels", {}))
    namespace = one(load_yaml(K8S / "namespace.yaml"), "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# ---------------------------------------------------------------- ForecastModel examples and the CRD schema


def fm_validator() -> jsonschema.Draft7Validator:
    found = custom_validator(f"{res.GROUP}/{res.VERSION}", res.KIND)
    assert found is not None
    return found


@pytest.mark.parametrize("name", ["forecastmodel-demand.yaml", "forecastmodel-fixed-replicas.yaml"])
def test_examples_are_valid_forecast_models(name: str) -> None:
    (obj,) = load_yaml(K8S / "examples" / name)
    assert (obj["apiVersion"], obj["kind"]) == (f"{res.GROUP}/{res.VERSION}", res.KIND)
    fm_validator().validate(obj)
    spec = res.ForecastModelSpec.model_validate(obj["spec"])
    if name == "forecastmodel-demand.yaml":
        assert spec.model.store_uri.startswith("azureblob://")
        assert spec.autoscaling.enabled
        assert spec.model.sha256 is not None and len(spec.model.sha256) == 64
    else:
        assert spec.model.store_uri.startswith("file:///")
        assert not spec.autoscaling.enabled
        assert spec.serving.replicas >= 1


def _demand_spec() -> Obj:
    spec: Obj = load_yaml(K8S / "examples" / "forecastmodel-demand.yaml")[0]["spec"]
    return spec


def _without_version(spec: Obj) -> None:
    del spec["model"]["version"]


def _negative_replicas(spec: Obj) -> None:
    spec["serving"]["replicas"] = -1


def _short_sha256(spec: Obj) -> None:
    spec["model"]["sha256"] = "abc123"


def _upper_sha256(spec: Obj) -> None:
    spec["model"]["sha256"] = spec["model"]["sha256"].upper()


def _s3_store(spec: Obj) -> None:
    spec["model"]["storeUri"] = "s3://bucket/models"


def _relative_file_store(spec: Obj) -> None:
    spec["model"]["storeUri"] = "file://models"


def _no_image(spec: Obj) -> None:
    del spec["serving"]["image"]


def _target_cpu_over_100(spec: Obj) -> None:
    spec["autoscaling"]["targetCPUUtilizationPercentage"] = 150


@pytest.mark.parametrize(
    "mutate",
    [
        _without_version,
        _negative_replicas,
        _short_sha256,
        _upper_sha256,
        _s3_store,
        _relative_file_store,
        _no_image,
        _target_cpu_over_100,
    ],
)
def test_crd_schema_rejects_invalid_specs(mutate: Any) -> None:
    obj = load_yaml(K8S / "examples" / "forecastmodel-demand.yaml")[0]
    mutate(obj["spec"])
    assert not fm_validator().is_valid(obj)


@pytest.mark.parametrize(
    ("data", "valid"),
    [
        ("/data/sales.parquet", True),
        ("azureblob://sales/daily/2026-11-28.csv", True),
        ("sales.csv", False),
        ("azureblob://sales", False),  # a container, no blob
        ("azureblob://Sales/daily.csv", False),
        ("s3://sales/daily.csv", False),
    ],
)
def test_batch_input_is_a_path_in_the_pod_or_a_blob(data: str, valid: bool) -> None:
    obj = load_yaml(K8S / "examples" / "forecastmodel-demand.yaml")[0]
    obj["spec"]["batch"] = {"schedule": "0 2 * * *", "input": data, "output": "azureblob://runs/demand"}
    assert fm_validator().is_valid(obj) is valid


def test_min_above_max_replicas_is_a_cel_rule() -> None:
    """minReplicas <= maxReplicas is a CEL rule (x-kubernetes-validations): only an API server evaluates it.

    Offline we check that the rule is declared, and that the operator's own model rejects it too.
    """
    crd = one(crd_objects(), "CustomResourceDefinition", "forecastmodels.retailforecast.io")
    autoscaling = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "autoscaling"
    ]
    assert any(
        "minReplicas <= self.maxReplicas" in v["rule"] for v in autoscaling["x-kubernetes-validations"]
    )
    spec = _demand_spec()
    spec["autoscaling"].update(minReplicas=5, maxReplicas=2)
    with pytest.raises(pydantic.ValidationError):
        res.ForecastModelSpec.model_validate(spec)


# ---------------------------------------------------------------- values.schema.json


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": 0},
        {"replicaCount": "2"},
        {"image": None},
        {"image": {"repository": ""}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"watchNamespaces": ["Not_A_Namespace"]},
        {"watchNamespaces": "a"},
        {"peering": {"name": ""}},
        {"serviceAccount": {"annotations": {"azure.workload.identity/client-id": 42}}},
        {"workloadIdentity": {"enabled": "yes"}},
        {"env": [{"value": "no name"}]},
        {"resources": {"limits": {"memory": "lots"}}},
        {"topologySpread": {"whenUnsatisfiable": "Sometimes"}},
        {"replicas": 2},  # a typo of replicaCount: unknown keys are rejected
    ],
    ids=json.dumps,
)
def test_values_schema_rejects_bad_values(values: Obj) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="schema"):
        render(values)
