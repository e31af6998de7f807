"""`forecast demo-cluster` on a real control plane, and its refusal without one.

There is no kubelet (tests/controlplane.py), so the test plays it while the demo runs as a process,
exactly as a user starts it: the publish Jobs' pods run here (their container's `forecast publish`, with
the mounted ConfigMap and the Secret's connection string, into the test's Azurite), the operator runs
here as the chart's ServiceAccount with the chart's arguments (tests/operator/process.py), and the
Deployments' pods are marked ready. What is checked is what the demo printed (its `get fm -w` rows),
what it created, and that `--delete` removes it.
"""

from __future__ import annotations

import base64
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import kubernetes.dynamic.exceptions
import pytest

from retail_forecast import demo_cluster as dc
from retail_forecast.core.manifest import Manifest
from retail_forecast.core.store import open_store
from retail_forecast.operator import resources as res
from tests.azurite import Azurite
from tests.controlplane import Client, ControlPlane, apply_crds, mark_pods_ready, wait_until, write_yaml
from tests.inference.live import FORECAST, cli_env, free_port
from tests.operator.process import OperatorProcess

DEMO_TIMEOUT_S: Final = 240


# -- pure parts ------------------------------------------------------------------------------------------


def fm(status: dict[str, Any], version: str = "2") -> dict[str, Any]:
    return {
        "metadata": {"name": "demand", "creationTimestamp": "2026-11-29T10:00:00Z"},
        "spec": {"model": {"version": version}},
        "status": status,
    }


def cond(kind: str, status: str, reason: str) -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": f"{kind} {reason}"}


def test_a_row_shows_the_rollout_and_its_most_telling_reason() -> None:
    rolling = fm(
        {
            "activeVersion": "1",
            "activeColor": "blue",
            "previewColor": "green",
            "previewVersion": "2",
            "conditions": [
                cond("Ready", "True", "Available"),
                cond("Progressing", "True", "RolloutInProgress"),
            ],
        }
    )
    row = dc.fm_row(rolling)
    now = datetime(2026, 11, 29, 10, 3, 5, tzinfo=UTC)
    assert row.cells(now) == ("demand", "2", "1", "blue", "green/2", "True", "RolloutInProgress", "3m5s")
    degraded = fm({"conditions": [cond("Ready", "True", "Available"), cond("Degraded", "True", "Deadline")]})
    assert dc.fm_row(degraded).reason == "Deadline"
    assert dc.fm_row(fm({})).cells(now)[1:] == ("2", "-", "-", "-", "-", "-", "3m5s")


def test_the_upgrade_ends_promoted_or_rolled_back_with_the_reason() -> None:
    judge = dc.upgrade("2")
    ready = cond("Ready", "True", "Available")
    assert judge(fm({"activeVersion": "1", "conditions": [ready]})) == dc.Outcome(False)
    assert judge(fm({"activeVersion": "2", "conditions": [ready]})) == dc.Outcome(True)
    rolled_back = judge(
        fm(
            {
                "activeVersion": "1",
                "rollout": {"failedVersion": "2"},
                "conditions": [cond("Degraded", "True", "X")],
            }
        )
    )
    assert rolled_back.done and rolled_back.failed == "rolled back: X: Degraded X"
    unverified = dc.first_rollout("1")(fm({"conditions": [cond("ModelVerified", "False", "Missing")]}, "1"))
    assert unverified.failed == "Missing: ModelVerified Missing"


def test_images_split_into_the_charts_values_and_default_to_its_app_version() -> None:
    assert dc.split_image("localhost:5000/op") == ("localhost:5000/op", None)
    assert dc.split_image("localhost:5000/op:dev") == ("localhost:5000/op", "dev")
    assert dc.chart_default_image(dc.CHART, "inference") == "retail-forecast/inference:0.1.0"
    rendered = dc.render_chart(
        dc.CHART, dc.chart_values("ns1", "r/op:7"), release=dc.RELEASE, namespace="ns1"
    )
    deployment = next(o for o in rendered if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert (deployment["metadata"]["name"], container["image"]) == (dc.OPERATOR, "r/op:7")
    assert container["args"][:5] == ["operator", "--peering", dc.PEERING, "--liveness", container["args"][4]]
    assert {
        "name": "AZURE_STORAGE_CONNECTION_STRING",
        "valueFrom": dc.store_env()[0]["valueFrom"],
    } in container["env"]


# -- no cluster ------------------------------------------------------------------------------------------


def test_no_reachable_cluster_is_a_clear_error(tmp_path: Path) -> None:
    dead = f"https://127.0.0.1:{free_port()}"
    kubeconfig = write_yaml(
        tmp_path / "kubeconfig",
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kind", "cluster": {"server": dead, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "kind", "context": {"cluster": "kind", "user": "u"}}],
            "current-context": "kind",
        },
    )
    for env in ({"KUBECONFIG": str(kubeconfig)}, {"KUBECONFIG": str(tmp_path / "missing")}):
        done = subprocess.run(
            [FORECAST, "demo-cluster", "--out", str(tmp_path / "out")],
            env=cli_env(env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert "kind create cluster" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not (tmp_path / "out").exists()  # refused before any work


# -- the demo on a real control plane ---------------------------------------------------------------------


@dataclass
class Kubelet:
    """Plays the kubelet for one demo namespace; `unready` Deployments never get ready pods."""

    client: Client
    control_plane: ControlPlane
    namespace: str
    azurite: Azurite
    workdir: Path
    unready: frozenset[str] = frozenset()
    operator: OperatorProcess | None = None
    ran: set[str] = field(default_factory=set)

    def step(self) -> None:
        for pod in self.client.list("v1", "Pod", self.namespace, "batch.kubernetes.io/job-name"):
            name = pod["metadata"]["name"]
            if name not in self.ran and not pod["metadata"].get("deletionTimestamp"):
                self.ran.add(name)
                self.run_job_pod(pod)
        if self.operator is None and self.client.read("apps/v1", "Deployment", dc.OPERATOR, self.namespace):
            kubeconfig = self.control_plane.token_kubeconfig(
                self.workdir / "operator-kubeconfig", self.namespace, dc.OPERATOR
            )
            # The chart's container arguments (its --liveness is the process helper's loopback one).
            self.operator = OperatorProcess(
                ["operator", "--peering", dc.PEERING, "--namespace", self.namespace],
                {
                    "KUBECONFIG": str(kubeconfig),
                    "AZURE_STORAGE_CONNECTION_STRING": self.azurite.connection_string,
                },
                self.workdir / "operator.log",
            )
            self.operator.start()
        for deployment in self.client.list("apps/v1", "Deployment", self.namespace):
            name = deployment["metadata"]["name"]
            if name not in self.unready:
                mark_pods_ready(self.client, self.namespace, name)

    def run_job_pod(self, pod: dict[str, Any]) -> None:
        """The pod's one container, here: its ConfigMap volumes as folders, its Secret env resolved."""
        spec, name = pod["spec"], pod["metadata"]["name"]
        folders: dict[str, Path] = {}
        for volume in spec["volumes"]:
            if "configMap" in volume:
                found = self.client.read("v1", "ConfigMap", volume["configMap"]["name"], self.namespace)
                assert found is not None
                folder = self.workdir / name / volume["name"]
                folder.mkdir(parents=True)
                for key, value in (found.get("binaryData") or {}).items():
                    (folder / key).write_bytes(base64.b64decode(value))
                folders[volume["name"]] = folder
        (container,) = spec["containers"]
        mounts = {
            m["mountPath"]: folders[m["name"]] for m in container["volumeMounts"] if m["name"] in folders
        }
        args = [str(mounts.get(arg, arg)) for arg in container["args"]]
        env = {}
        for var in container["env"]:
            ref = var["valueFrom"]["secretKeyRef"]
            secret = self.client.read("v1", "Secret", ref["name"], self.namespace)
            assert secret is not None
            env[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        done = subprocess.run(
            [FORECAST, *args], env=cli_env(env), capture_output=True, text=True, timeout=120, check=False
        )
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        terminated = {"exitCode": done.returncode, "reason": "Completed" if done.returncode == 0 else "Error"}
        status = {
            "phase": "Succeeded" if done.returncode == 0 else "Failed",
            "startTime": now,
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": {**terminated, "startedAt": now, "finishedAt": now}},
                }
            ],
        }
        self.client.resource("v1", "Pod").status.patch(
            body={"status": status},
            name=name,
            namespace=self.namespace,
            content_type="application/merge-patch+json",
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def stop(self) -> None:
        """Stop the operator (before --delete: it would otherwise watch its namespace disappear)."""
        operator, self.operator = self.operator, None
        if operator is not None:
            print(operator.output()[-4000:])
            assert operator.stop() in {0, None}


@dataclass(frozen=True)
class Demo:
    code: int
    stdout: str
    stderr: str


def run_demo(kubelet: Kubelet, kubeconfig: Path, out: Path, *extra: str) -> Demo:
    """`forecast demo-cluster` as a process, the kubelet played until it exits (bounded)."""
    log, errors = kubelet.workdir / "demo.out", kubelet.workdir / "demo.err"
    args = ["demo-cluster", "--namespace", kubelet.namespace, "--out", str(out), "--timeout", "120"]
    args += ["--store-connection-string", kubelet.azurite.connection_string, *extra]
    with log.open("w") as stdout, errors.open("w") as stderr:
        process = subprocess.Popen(
            [FORECAST, *args], env=cli_env({"KUBECONFIG": str(kubeconfig)}), stdout=stdout, stderr=stderr
        )
        try:
            deadline = time.monotonic() + DEMO_TIMEOUT_S
            while process.poll() is None:
                assert time.monotonic() < deadline, f"the demo did not end:\n{log.read_text()}"
                kubelet.step()
                time.sleep(0.5)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
    demo = Demo(process.returncode, log.read_text(), errors.read_text())
    print(demo.stdout, demo.stderr)
    return demo


def rows(stdout: str) -> list[list[str]]:
    """The printed `get fm -w` rows: NAME VERSION ACTIVE COLOUR PREVIEW READY REASON (AGE dropped)."""
    return [line.split()[:-1] for line in stdout.splitlines() if line.startswith(f"  {dc.MODEL} ")]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's --out: its two models trained by the first run, reused by the next (as a user's rerun)."""
    return tmp_path_factory.mktemp("demo-cluster-out")


def owner_references_admitted(client: Client) -> bool:
    """A dry-run create of a ForecastModel's child, by a user without rights on ForecastModels, is refused
    for those rights, no longer because OwnerReferencesPermissionEnforcement does not know the kind."""
    owner = {
        "apiVersion": f"{res.GROUP}/{res.VERSION}",
        "kind": res.KIND,
        "name": "probe",
        "uid": str(uuid.uuid4()),
        "blockOwnerDeletion": True,
    }
    child = {"metadata": {"name": "probe", "ownerReferences": [owner]}}
    try:
        client.resource("v1", "ConfigMap").create(body=child, namespace="default", dry_run="All")
    except kubernetes.dynamic.exceptions.ForbiddenError as exc:
        return "RESTMapping" not in str(exc.body)
    return True


@pytest.fixture(scope="module")
def crds_known(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The CRDs, applied before the demo applies them again (unchanged), and known to admission.

    The control plane runs the OwnerReferencesPermissionEnforcement admission plugin, which maps owner
    kinds through a discovery it caches: a kind whose CRD came after the cache was filled (by the publish
    Jobs' pods, whose owner is a Job) is unknown until a refresh, and every child the operator creates is
    denied (403) meanwhile, which the operator does not retry. kind does not run the plugin.
    """
    with control_plane.admin() as admin:
        apply_crds(admin, dc.chart_crds(dc.CHART))
        role = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"}
        admin.apply(
            [
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": "probe", "namespace": "default"},
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": "probe", "namespace": "default"},
                    "roleRef": role,
                    "subjects": [{"kind": "ServiceAccount", "name": "probe", "namespace": "default"}],
                },
            ]
        )
    kubeconfig = control_plane.token_kubeconfig(
        tmp_path_factory.mktemp("probe") / "kubeconfig", "default", "probe"
    )
    with Client(kubeconfig) as probe:
        wait_until(lambda: owner_references_admitted(probe), timeout=120, what="ForecastModel owners mapped")


@pytest.fixture
def kubelet(
    control_plane: ControlPlane, azurite: Azurite, tmp_path: Path, crds_known: None
) -> Iterator[Kubelet]:
    with control_plane.admin() as client:
        played = Kubelet(client, control_plane, f"demo-{uuid.uuid4().hex[:8]}", azurite, tmp_path)
        try:
            yield played
        finally:
            played.stop()


@pytest.mark.timeout(600)
def test_the_demo_rolls_out_version_2_and_delete_removes_what_it_made(
    control_plane: ControlPlane, kubelet: Kubelet, models: Path
) -> None:
    admin = control_plane.admin_kubeconfig
    demo = run_demo(kubelet, admin, models)
    assert demo.code == 0, demo.stderr
    for number in range(1, dc.STEPS + 1):
        assert f"[{number}/{dc.STEPS}]" in demo.stdout
    shown = rows(demo.stdout)
    # Version 1 becomes Ready on blue; version 2 previews on green while blue serves; green is promoted.
    first_ready = shown.index(["demand", "1", "1", "blue", "-", "True", "Available"])
    previewing = next(i for i, r in enumerate(shown) if r[:5] == ["demand", "2", "1", "blue", "green/2"])
    promoted = shown.index(["demand", "2", "2", "green", "-", "True", "Available"])
    assert first_ready < previewing < promoted
    assert shown[-1] == ["demand", "2", "2", "green", "-", "True", "Available"]
    assert f"port-forward service/{dc.MODEL} 8080:80" in demo.stdout

    ns, client = kubelet.namespace, kubelet.client
    fm = client.read(f"{res.GROUP}/{res.VERSION}", res.KIND, dc.MODEL, ns)
    assert fm is not None and fm["status"]["activeVersion"] == "2"
    service = client.read("v1", "Service", dc.MODEL, ns) or {}
    assert service["spec"]["selector"][res.LABEL_COLOR] == "green"
    for version in dc.VERSIONS:
        job = client.read("batch/v1", "Job", f"publish-{version}", ns) or {}
        assert any(c["type"] == "Complete" for c in job["status"]["conditions"]), job
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AZURE_STORAGE_CONNECTION_STRING", kubelet.azurite.connection_string)
        assert open_store(dc.store_uri(ns)).versions(dc.MODEL) == list(dc.VERSIONS)
    assert (models / "request.json").is_file()
    # Point models: the rollout is the subject, no quantile head is fitted for it.
    assert all(Manifest.load(models / f"model-{version}").quantiles is None for version in dc.VERSIONS)
    kubelet.stop()

    deleted = subprocess.run(
        [FORECAST, "demo-cluster", "--delete", "--namespace", ns],
        env=cli_env({"KUBECONFIG": str(admin)}),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert client.read("v1", "Namespace", ns) is None
    assert client.read("rbac.authorization.k8s.io/v1", "ClusterRole", dc.OPERATOR) is None
    assert client.read("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", dc.OPERATOR) is None


@pytest.mark.timeout(600)
def test_a_version_that_never_becomes_available_ends_the_demo_with_the_rollback_reason(
    control_plane: ControlPlane, kubelet: Kubelet, models: Path
) -> None:
    kubelet.unready = frozenset({f"{dc.MODEL}-green"})
    demo = run_demo(kubelet, control_plane.admin_kubeconfig, models, "--progress-deadline", "10")
    assert demo.code == 1, demo.stdout + demo.stderr
    assert "rolled back: ProgressDeadlineExceeded" in demo.stderr
    assert rows(demo.stdout)[-1][:4] == ["demand", "2", "1", "blue"]
    kubelet.stop()
    deleted = subprocess.run(
        [FORECAST, "demo-cluster", "--delete", "--namespace", kubelet.namespace],
        env=cli_env({"KUBECONFIG": str(control_plane.admin_kubeconfig)}),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
