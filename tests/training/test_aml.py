"""The Azure ML job definitions load offline, agree with each other and only use flags `forecast train` has.

Nothing here touches the network or needs credentials: jobs are loaded with `azure.ai.ml.load_job`, and
`submit` only ever meets a fake `MLClient`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.ai.ml as aml_sdk
import pytest
from azure.ai.ml.entities import Command, Parallel, PipelineJob
from azure.ai.ml.sweep import (
    BanditPolicy,
    Choice,
    LogUniform,
    MedianStoppingPolicy,
    RandomSamplingAlgorithm,
    SweepJob,
    Uniform,
)
from hcl2.api import load as load_hcl
from packaging.requirements import Requirement

from retail_forecast.cli import build_parser
from retail_forecast.core.schema import Freq
from retail_forecast.training import aml
from retail_forecast.training.model import DEFAULT_LEARNER, SEARCHED_LOSSES
from retail_forecast.training.partition import settings_parser
from tests.infra.iac import bicep_resources_of_type, bicep_template, terraform_resources, unwrap

REPO_ROOT = Path(__file__).resolve().parents[2]
AML_DIR = REPO_ROOT / "training" / "aml"


def _train_cli_flags() -> dict[str, frozenset[str] | None]:
    """The options the real `forecast train` parser accepts, each with its allowed values (None: any)."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train = commands.choices["train"]
    flags: dict[str, frozenset[str] | None] = {}
    for action in train._actions:
        allowed = frozenset(str(c) for c in action.choices) if action.choices else None
        if action.dest == "freq":
            allowed = frozenset(f.value for f in Freq)
        for option in action.option_strings:
            flags[option] = allowed
    return flags


TRAIN_CLI_FLAGS = _train_cli_flags()
HYPERPARAMETER_FLAGS = {
    "--learning-rate": "learning_rate",
    "--max-leaf-nodes": "max_leaf_nodes",
    "--min-samples-leaf": "min_samples_leaf",
    "--l2-regularization": "l2_regularization",
    "--max-iter": "max_iter",
    "--loss": "loss",
}
IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
PLACEHOLDER = re.compile(r"\$\{\{(inputs|outputs|search_space)\.([A-Za-z_][A-Za-z0-9_]*)\}\}")


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def command_job() -> Any:
    return aml_sdk.load_job(aml.job_path("command"))


@pytest.fixture(scope="module")
def sweep_job() -> Any:
    return aml_sdk.load_job(aml.job_path("sweep"))


@pytest.fixture(scope="module")
def partition_job() -> Any:
    return aml_sdk.load_job(aml.job_path("partition"))


@pytest.fixture(scope="module")
def environment() -> Any:
    return aml_sdk.load_environment(AML_DIR / "environment.yml")


@pytest.fixture(scope="module")
def conda(environment: Any) -> dict[str, Any]:
    """conda.yml as Azure ML parses it (environment.yml points at it)."""
    data = environment.conda_file
    assert isinstance(data, dict)
    return data


def pip_requirements(conda: dict[str, Any]) -> dict[str, Requirement]:
    pips = [dep["pip"] for dep in conda["dependencies"] if isinstance(dep, dict) and "pip" in dep]
    assert len(pips) == 1, "conda.yml must have exactly one pip section"
    reqs = [Requirement(line) for line in pips[0]]
    return {req.name.lower(): req for req in reqs}


def train_args(command: str) -> list[str]:
    """The `forecast train` arguments of a job command, which may have set-up steps before it."""
    steps = [shlex.split(step) for step in command.split("&&")]
    train_steps = [step for step in steps if step[:2] == ["forecast", "train"]]
    assert len(train_steps) == 1, f"expected one `forecast train` step in {command!r}"
    assert steps[-1] is train_steps[0], "`forecast train` must be the last step (its exit code is the job's)"
    return train_steps[0][2:]


def flag_pairs(args: list[str]) -> Iterator[tuple[str, str]]:
    assert len(args) % 2 == 0, f"every flag takes one value: {args}"
    for flag, value in zip(args[::2], args[1::2], strict=True):
        assert flag.startswith("--"), f"expected a flag, got {flag!r} in {args}"
        assert not value.startswith("--"), f"flag {flag} has no value in {args}"
        yield flag, value


def input_value(job: Any, name: str) -> Any:
    value = job.inputs[name]
    return getattr(value, "_data", value)  # command jobs wrap inputs in NodeInput


# ----------------------------------------------------------------------------------------- files / lint


def test_job_path_locates_packaged_yamls() -> None:
    assert aml.job_path("command") == AML_DIR / "train-job.yml"
    assert aml.job_path("sweep") == AML_DIR / "sweep-job.yml"
    assert aml.job_path("partition") == AML_DIR / "partition-job.yml"
    unknown: Any = "pipeline"
    with pytest.raises(ValueError, match="unknown job kind"):
        aml.job_path(unknown)


def test_yamllint_relaxed_accepts_the_yamls() -> None:
    files = sorted(AML_DIR.glob("*.yml"))
    assert {f.name for f in files} == {
        "conda.yml",
        "environment.yml",
        "train-job.yml",
        "sweep-job.yml",
        "partition-job.yml",
    }
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "-d", "relaxed", "-f", "parsable", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[error]" not in result.stdout


# -------------------------------------------------------------------------------------------- environment


def test_conda_file_pins_python_and_protobuf(conda: dict[str, Any]) -> None:
    assert "python=3.11" in conda["dependencies"]
    assert "pip" in conda["dependencies"]
    protobuf = pip_requirements(conda)["protobuf"].specifier
    # protobuf 7 breaks skl2onnx 1.20's HistGradientBoosting export
    assert not any(protobuf.filter(["7.0", "7.0.1", "7.33.0", "8.0"], prereleases=True)), protobuf
    assert any(v.startswith(("5.", "6.")) for v in (s.version for s in protobuf)), protobuf


def test_conda_file_covers_the_project_dependencies(conda: dict[str, Any]) -> None:
    """Jobs `pip install --no-deps .`: a dependency missing here only shows up as an ImportError on Azure."""
    pinned = pip_requirements(conda)
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    needed = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["train"]]]
    for req in needed:
        assert req.name.lower() in pinned, f"{req.name} (pyproject) is missing from conda.yml"
        pin = pinned[req.name.lower()]
        exact = [s.version for s in pin.specifier if s.operator == "=="]
        assert exact, f"conda.yml should pin {req.name} exactly, got {pin}"
        assert req.specifier.contains(exact[0], prereleases=True), f"{pin} violates pyproject's {req}"
    for extra in ("mlflow-skinny", "azureml-mlflow", "setuptools"):
        assert extra in pinned, f"{extra} is missing from conda.yml"
    build_requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    setuptools_req = next(Requirement(r) for r in build_requires if r.startswith("setuptools"))
    setuptools_pin = next(iter(pinned["setuptools"].specifier)).version
    assert setuptools_req.specifier.contains(setuptools_pin), "--no-build-isolation needs setuptools as built"


def test_environment_yml_matches_inline_job_environments(
    environment: Any, conda: dict[str, Any], command_job: Any, sweep_job: Any, partition_job: Any
) -> None:
    env = environment
    assert env.name == "retail-forecast-train"
    assert env.version == "1"
    assert env.image == IMAGE
    assert re.search(r"^conda_file: conda\.yml$", (AML_DIR / "environment.yml").read_text(), re.MULTILINE)
    partition_env = partition_step(partition_job).task.environment
    for job_env in (command_job.environment, sweep_job.trial.environment, partition_env):
        assert job_env.image == IMAGE
        assert job_env.conda_file == conda


# -------------------------------------------------------------------------------------------- command job


def test_jobs_pass_the_sdk_offline_checks(command_job: Any, sweep_job: Any) -> None:
    """Beyond load_job's schema: what create_or_update would check or serialise first (private SDK API)."""
    result = command_job._validate()
    assert result.passed, result.error_messages
    assert sweep_job._to_rest_object() is not None


def test_command_job_shape(command_job: Any) -> None:
    # for `type: command`, load_job gives a Command node (what create_or_update submits), not a CommandJob
    assert type(command_job) is Command
    assert command_job.type == "command"
    # load_job drops the `azureml:` prefix of a command job's compute, and keeps it for a sweep job
    # the compute cluster both infrastructure templates create
    cluster = terraform_resources()["azurerm_machine_learning_compute_cluster.training"]["name"]
    (bicep_cluster,) = bicep_resources_of_type(
        bicep_template(), "Microsoft.MachineLearningServices/workspaces/computes"
    ).values()
    assert command_job.compute.removeprefix("azureml:") == cluster == bicep_cluster["name"]
    assert command_job.experiment_name == "retail-forecast"
    assert command_job.tags == {"project": "retail-forecast", "stage": "train"}
    assert (AML_DIR / str(command_job.code)).resolve() == REPO_ROOT


def test_command_job_installs_the_code_then_trains(command_job: Any) -> None:
    steps = [step.strip() for step in command_job.command.split("&&")]
    assert steps[0] == "pip install --no-deps --no-build-isolation ."
    args = dict(flag_pairs(train_args(command_job.command)))
    assert args["--data"] == "${{inputs.sales}}"
    assert args["--out"] == "${{outputs.model}}"
    assert args["--horizon"] == "${{inputs.horizon}}"
    assert args["--freq"] == "${{inputs.freq}}"
    assert args["--trials"] == "${{inputs.trials}}"


def test_command_job_inputs_and_outputs(command_job: Any) -> None:
    sales = input_value(command_job, "sales")
    assert sales.type == "uri_file"
    assert sales.path == "azureml://datastores/workspaceblobstore/paths/retail/sales.parquet"
    assert sales.mode == "ro_mount"
    declared = command_job.component.inputs
    assert {name: declared[name].type for name in ("horizon", "freq", "trials", "folds", "seed")} == {
        "horizon": "integer",
        "freq": "string",
        "trials": "integer",
        "folds": "integer",
        "seed": "integer",
    }
    assert input_value(command_job, "horizon") == 28
    assert input_value(command_job, "freq") == "D"
    assert input_value(command_job, "trials") > 1  # the command job runs the internal search
    model = command_job.outputs["model"]._data
    assert model.type == "uri_folder"
    assert model.mode == "rw_mount"


# ---------------------------------------------------------------------------------------------- sweep job


def test_sweep_job_shape(sweep_job: Any, command_job: Any) -> None:
    assert type(sweep_job) is SweepJob
    job: Any = sweep_job  # keep mypy from narrowing to SweepJob, whose attributes are all Optional
    assert job.type == "sweep"
    assert job.compute.removeprefix("azureml:") == command_job.compute.removeprefix("azureml:")
    assert job.experiment_name == "retail-forecast-sweep"
    assert job.tags == {"project": "retail-forecast", "stage": "sweep"}
    assert (AML_DIR / job.trial.code).resolve() == REPO_ROOT
    assert job.objective.primary_metric == "wape"
    assert job.objective.goal == "minimize"
    assert type(job.sampling_algorithm) is RandomSamplingAlgorithm


def bounds(param: Any) -> tuple[float, float]:
    """The sampled range of a continuous parameter (loguniform bounds are natural logs)."""
    assert type(param) in (Uniform, LogUniform), param
    low, high = float(param.min_value), float(param.max_value)
    return (math.exp(low), math.exp(high)) if type(param) is LogUniform else (low, high)


def choices(param: Any) -> list[Any]:
    assert type(param) is Choice, param
    values: list[Any] = list(param.values or [])
    assert len(values) >= 2, values
    return values


def test_sweep_search_space(sweep_job: Any) -> None:
    space: dict[str, Any] = sweep_job.search_space
    assert set(space) == set(HYPERPARAMETER_FLAGS.values())
    assert type(space["learning_rate"]) is LogUniform  # learning rates spread over orders of magnitude
    low, high = bounds(space["learning_rate"])
    assert 0.005 <= low < high <= 0.5, (low, high)
    low, high = bounds(space["l2_regularization"])
    assert 0.0 <= low < high, (low, high)
    for name, floor in (("max_leaf_nodes", 2), ("min_samples_leaf", 1), ("max_iter", 10)):
        values = choices(space[name])
        assert all(type(v) is int and v >= floor for v in values), (name, values)
    assert set(choices(space["loss"])) == set(SEARCHED_LOSSES[DEFAULT_LEARNER])


def test_sweep_limits_and_early_termination(sweep_job: Any) -> None:
    limits: Any = sweep_job.limits
    # one trial per node of the prod cluster at a time: trials in parallel, none queued behind a busy node
    assert limits.max_concurrent_trials == prod_cluster_nodes() == 4
    assert limits.max_concurrent_trials < limits.max_total_trials
    assert limits.max_total_trials >= 10
    assert 0 < limits.trial_timeout <= limits.timeout
    # every wave of concurrent trials may run to its trial timeout before the sweep's own runs out
    waves = math.ceil(limits.max_total_trials / limits.max_concurrent_trials)
    assert waves * limits.trial_timeout <= limits.timeout
    policy: Any = sweep_job.early_termination
    assert type(policy) in (BanditPolicy, MedianStoppingPolicy)
    assert policy.evaluation_interval >= 1


def test_sweep_trial_is_the_command_job_plus_hyperparameters(sweep_job: Any, command_job: Any) -> None:
    trial_args = list(flag_pairs(train_args(sweep_job.trial.command)))
    base = [(flag, value) for flag, value in trial_args if flag not in HYPERPARAMETER_FLAGS]
    hyper = {flag: value for flag, value in trial_args if flag in HYPERPARAMETER_FLAGS}
    assert base == list(flag_pairs(train_args(command_job.command)))
    assert hyper == {flag: f"${{{{search_space.{name}}}}}" for flag, name in HYPERPARAMETER_FLAGS.items()}
    assert sweep_job.trial.command.split("&&")[0] == command_job.command.split("&&")[0]


def test_sweep_inputs_and_outputs_match_the_command_job(sweep_job: Any, command_job: Any) -> None:
    assert set(sweep_job.inputs) == set(command_job.inputs)
    for name in sweep_job.inputs:
        ours, theirs = input_value(sweep_job, name), input_value(command_job, name)
        if name == "trials":
            assert ours == 1  # hyper-parameters are all fixed per trial: no internal search
        elif isinstance(theirs, aml_sdk.Input):
            assert (ours.type, ours.path, ours.mode) == (theirs.type, theirs.path, theirs.mode), name
        else:
            assert ours == theirs, name
    assert set(sweep_job.outputs) == {"model"}
    assert sweep_job.outputs["model"].type == "uri_folder"


# ------------------------------------------------------------------------------ commands vs the train CLI


@pytest.mark.parametrize("kind", ["command", "sweep"])
def test_commands_only_use_flags_the_train_cli_accepts(kind: str, command_job: Any, sweep_job: Any) -> None:
    job = command_job if kind == "command" else sweep_job
    command = job.command if kind == "command" else job.trial.command
    declared = {
        "inputs": set(job.inputs),
        "outputs": set(job.outputs),
        "search_space": set(getattr(job, "search_space", None) or {}),
    }
    for flag, value in flag_pairs(train_args(command)):
        assert flag in TRAIN_CLI_FLAGS, f"`forecast train` has no {flag}"
        for group, name in PLACEHOLDER.findall(value):
            assert name in declared[group], f"{flag} uses undeclared {group}.{name}"
        allowed = TRAIN_CLI_FLAGS[flag]
        if allowed is None:
            continue
        match = PLACEHOLDER.fullmatch(value)
        if match is None:
            values = {value}
        elif match.group(1) == "search_space":
            values = set(job.search_space[match.group(2)].values)
        else:
            values = {input_value(job, match.group(2))}
        assert values <= allowed, f"{flag} gets {values - allowed}, allowed {sorted(allowed)}"


# ------------------------------------------------------------------------------------------ overrides


def test_parse_overrides() -> None:
    assert aml.parse_overrides([]) == {}
    assert aml.parse_overrides(["horizon=14", " freq=W", "sales=azureml://x/y?a=b", "model_name="]) == {
        "horizon": "14",
        "freq": "W",
        "sales": "azureml://x/y?a=b",
        "model_name": "",
    }


@pytest.mark.parametrize("bad", ["horizon", "=14", "hori zon=14", "1st=2", "a.b=1"])
def test_parse_overrides_rejects_malformed_pairs(bad: str) -> None:
    with pytest.raises(ValueError, match="malformed override") as info:
        aml.parse_overrides(["freq=W", bad])
    assert repr(bad) in str(info.value)


def test_parse_overrides_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="more than once"):
        aml.parse_overrides(["freq=W", "freq=D"])


def test_load_applies_typed_overrides_to_the_command_job(tmp_path: Path) -> None:
    data = tmp_path / "sales.csv"
    data.write_text("date,store_id,item_id,sales\n")
    job = aml.load(
        aml.job_path("command"),
        overrides={"horizon": "14", "freq": "W", "sales": str(data), "compute": "azureml:big-cluster"},
    )
    assert input_value(job, "horizon") == 14
    assert input_value(job, "freq") == "W"
    sales = input_value(job, "sales")
    assert (sales.type, sales.path, sales.mode) == ("uri_file", str(data), "ro_mount")
    assert job.compute == "azureml:big-cluster"
    assert job._to_dict()["inputs"]["horizon"] == 14  # still serialisable: the override was re-wrapped


def test_load_applies_overrides_to_the_sweep_job() -> None:
    job = aml.load(aml.job_path("sweep"), overrides={"horizon": "7", "sales": "azureml:retail-sales:3"})
    assert job.inputs["horizon"] == 7
    assert job.inputs["sales"].path == "azureml:retail-sales:3"
    assert job.inputs["sales"].type == "uri_file"


def test_load_applies_overrides_to_the_partition_job(tmp_path: Path) -> None:
    job = aml.load(
        aml.job_path("partition"), overrides={"horizon": "14", "sales": "azureml:retail-sales-by-store:2"}
    )
    assert input_value(job, "horizon") == 14
    sales = input_value(job, "sales")
    assert (sales.type, sales.path) == ("mltable", "azureml:retail-sales-by-store:2")
    (tmp_path / "pyproject.toml").write_text("")
    job = aml.load(aml.job_path("partition"), code=tmp_path)
    assert Path(partition_step(job).task.code) == tmp_path.resolve()


def test_load_rejects_bad_overrides(tmp_path: Path) -> None:
    with pytest.raises(aml.AmlError, match=r"unknown override 'horizn'.*horizon"):
        aml.load(aml.job_path("command"), overrides={"horizn": "7"})
    with pytest.raises(aml.AmlError, match="expected an integer"):
        aml.load(aml.job_path("sweep"), overrides={"horizon": "two weeks"})
    with pytest.raises(aml.AmlError, match="does not exist"):
        aml.load(aml.job_path("command"), overrides={"sales": str(tmp_path / "missing.parquet")})


def test_load_checks_the_code_folder(tmp_path: Path) -> None:
    with pytest.raises(aml.AmlError, match="not a retail-forecast source tree"):
        aml.load(aml.job_path("sweep"), code=tmp_path)
    (tmp_path / "pyproject.toml").write_text("")
    job = aml.load(aml.job_path("command"), code=tmp_path)
    assert Path(job.code) == tmp_path.resolve()


def test_load_reports_a_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.ai.ml", None)  # makes `import azure.ai.ml` fail
    with pytest.raises(aml.AmlError, match=re.escape("retail-forecast[aml]")):
        aml.load(aml.job_path("command"))


# -------------------------------------------------------------------------------------------- submit

WORKSPACE_VARS = ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME")


@pytest.fixture
def no_workspace_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in WORKSPACE_VARS:
        monkeypatch.delenv(var, raising=False)


def test_workspace_config_names_everything_missing(no_workspace_env: None) -> None:
    with pytest.raises(aml.AmlError, match="workspace not configured") as info:
        aml.workspace_config()
    message = str(info.value)
    for var in WORKSPACE_VARS:
        assert var in message
    with pytest.raises(aml.AmlError) as info:
        aml.workspace_config(subscription_id="sub", environ={"AZUREML_WORKSPACE_NAME": "ws"})
    assert "AZURE_RESOURCE_GROUP" in str(info.value)
    assert "AZURE_SUBSCRIPTION_ID" not in str(info.value)
    assert "AZUREML_WORKSPACE_NAME" not in str(info.value)


def test_workspace_config_prefers_arguments_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "env-sub")
    monkeypatch.setenv("AZURE_RESOURCE_GROUP", "env-rg")
    monkeypatch.setenv("AZUREML_WORKSPACE_NAME", "env-ws")
    assert aml.workspace_config() == ("env-sub", "env-rg", "env-ws")
    assert aml.workspace_config(workspace="arg-ws") == ("env-sub", "env-rg", "arg-ws")


class _Boom:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("must not be reached")


def test_submit_fails_on_missing_workspace_before_anything_else(
    no_workspace_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aml, "load", _Boom)
    monkeypatch.setattr(aml_sdk, "MLClient", _Boom)
    with pytest.raises(aml.AmlError, match="AZUREML_WORKSPACE_NAME"):
        aml.submit(aml.job_path("command"), subscription_id="sub", resource_group="rg")


# ------------------------------------------------------------------------------------ partitioned run


def prod_tfvars() -> dict[str, Any]:
    with (REPO_ROOT / "infra" / "terraform" / "prod.tfvars").open() as handle:
        values: dict[str, Any] = unwrap(load_hcl(handle))
    return values


def prod_cluster_nodes() -> int:
    """The prod training cluster's node count, the same in both infrastructure templates."""
    bicep = json.loads((REPO_ROOT / "infra" / "bicep" / "main.parameters.prod.json").read_text())
    nodes = int(prod_tfvars()["aml_compute_max_nodes"])
    assert bicep["parameters"]["amlComputeMaxNodes"]["value"] == nodes
    return nodes


def prod_node_vcpus() -> int:
    """vCPUs of the prod cluster's VM size: the number after the family letter (Standard_D4ds_v5: 4)."""
    size = str(prod_tfvars()["aml_compute_vm_size"])
    match = re.fullmatch(r"Standard_[A-Z]+(\d+)[a-z]*_v\d+", size)
    assert match, size
    return int(match.group(1))


def partition_step(job: Any) -> Any:
    (step,) = job.jobs.values()
    return step


def test_partition_job_is_a_pipeline_with_one_parallel_step(partition_job: Any, command_job: Any) -> None:
    assert type(partition_job) is PipelineJob
    step = partition_step(partition_job)
    assert type(step) is Parallel
    assert step.type == "parallel"
    cluster = command_job.compute.removeprefix("azureml:")
    assert step.compute.removeprefix("azureml:") == cluster
    settings: Any = partition_job.settings
    assert settings.default_compute.removeprefix("azureml:") == cluster
    assert partition_job.experiment_name == "retail-forecast-partitioned"
    assert partition_job.tags == {"project": "retail-forecast", "stage": "partitioned"}
    result = partition_job._validate()
    assert result.passed, result.error_messages


def test_partition_job_splits_the_sales_table_by_store(partition_job: Any) -> None:
    step = partition_step(partition_job)
    sales = partition_job.inputs["sales"]._data
    assert (sales.type, sales.mode) == ("mltable", "eval_mount")
    assert step.inputs["sales"]._data == "${{parent.inputs.sales}}"
    assert step.input_data == "${{inputs.sales}}"
    assert step.partition_keys == ["store_id"]
    args = dict(flag_pairs(shlex.split(step.task.program_arguments)))
    assert args["--partition-by"] in step.partition_keys  # each mini-batch is one value of that column
    assert not step.mini_batch_size  # partition_keys decide the mini-batches; a size would be ignored


def test_partition_job_fills_the_cluster(partition_job: Any) -> None:
    step = partition_step(partition_job)
    assert step.resources.instance_count == prod_cluster_nodes()
    threads = int(step.environment_variables["OMP_NUM_THREADS"])
    # workers x threads = the node's vCPUs: every core busy, none oversubscribed
    assert step.max_concurrency_per_instance * threads == prod_node_vcpus()
    assert step.max_concurrency_per_instance >= 2


def test_partition_job_failure_handling(partition_job: Any) -> None:
    step = partition_step(partition_job)
    # a failed gate or too little data is a summary row (training/partition.py); what still fails after
    # the retries stops the run
    assert step.mini_batch_error_threshold == 0
    assert step.retry_settings.max_retries == 2
    assert 0 < step.retry_settings.timeout <= 3600
    assert step.error_threshold in (None, -1)  # only one of the two thresholds may be set


def test_partition_job_runs_the_entry_script_on_the_uploaded_code(partition_job: Any) -> None:
    task = partition_step(partition_job).task
    assert task.type == "run_function"
    code = (AML_DIR / str(task.code)).resolve()
    assert code == REPO_ROOT
    entry = code / task.entry_script
    assert entry == AML_DIR / "partition_entry.py"
    assert entry.is_file()
    assert task.append_row_to == "${{outputs.summary}}"


def test_partition_arguments_are_ones_the_entry_accepts(partition_job: Any, command_job: Any) -> None:
    step = partition_step(partition_job)
    accepted = {flag for action in settings_parser()._actions for flag in action.option_strings}
    declared = {"inputs": set(step.inputs), "outputs": set(step.outputs), "search_space": set()}
    for flag, value in flag_pairs(shlex.split(step.task.program_arguments)):
        assert flag in accepted, f"partition_entry has no {flag}"
        for group, name in PLACEHOLDER.findall(value):
            assert name in declared[group], f"{flag} uses undeclared {group}.{name}"
    assert set(step.outputs) == {"models", "summary"}
    assert partition_job.outputs["models"].type == "uri_folder"
    # the training inputs are the command job's, with the same defaults
    for name, value in partition_job.inputs.items():
        if name == "sales":
            continue
        assert step.inputs[name]._data == f"${{{{parent.inputs.{name}}}}}"
        if name != "trials":
            assert value._data == input_value(command_job, name), name
