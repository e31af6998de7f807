"""The pipeline's retraining path: the nightly schedule, who decides to retrain, and the exact commands.

The `forecast` commands in the scripts are checked against the real CLI parser, so a renamed flag or exit
code fails here rather than at 04:00 on Azure.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
from typing import Any

import pytest
import yaml

from retail_forecast.cli import EXIT_ACCURACY, build_parser
from tests.infra.iac import BICEP, REPO, bicep_template, terraform_blocks, terraform_resources, unwrap
from tests.infra.test_parity import as_list
from tests.infra.test_yaml import PIPELINE, load_pipeline

AML_DIR = REPO / "training" / "aml"

MACRO = re.compile(r"\$\((\w+(?:\.\w+)*)\)|\$\{\{[^}]*\}\}")


@pytest.fixture(scope="module")
def pipeline() -> dict[str, Any]:
    return load_pipeline()


def stage(pipeline: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [s for s in pipeline["stages"] if s["stage"] == name]
    assert len(found) == 1, name
    return found[0]


def steps(stage_: dict[str, Any]) -> list[dict[str, Any]]:
    (job,) = stage_["jobs"]
    if "strategy" in job:
        found: list[dict[str, Any]] = job["strategy"]["runOnce"]["deploy"]["steps"]
        return found
    plain: list[dict[str, Any]] = job["steps"]
    return plain


def scripts(stage_: dict[str, Any]) -> list[str]:
    return [s["inputs"]["inlineScript"] for s in steps(stage_) if s.get("task") == "AzureCLI@2"]


def cli_options(command: str) -> set[str]:
    """The option strings the real `forecast <command>` parser accepts."""
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {option for action in commands.choices[command]._actions for option in action.option_strings}


def invocation(script: str, command: str) -> list[str]:
    """The arguments of the one `forecast <command>` in a script (continuation lines joined)."""
    joined = re.sub(r"\\\n\s*", " ", script)
    lines = [line.strip() for line in joined.splitlines() if line.strip().startswith(f"forecast {command} ")]
    assert len(lines) == 1, f"expected one `forecast {command}` in the script, got {lines}"
    words = shlex.split(lines[0].split("||")[0])
    return words[2:]


def test_a_nightly_schedule_on_main_that_runs_without_a_commit(pipeline: dict[str, Any]) -> None:
    (schedule,) = pipeline["schedules"]
    minute, hour, day, month, weekday = schedule["cron"].split()
    assert (day, month, weekday) == ("*", "*", "*")  # every night
    assert minute.isdigit() and hour.isdigit()
    assert schedule["branches"]["include"] == ["main"]
    assert schedule["always"] is True  # the model ages and the actuals change without a commit


def test_the_retraining_path_is_a_scheduled_run_or_the_parameter(pipeline: dict[str, Any]) -> None:
    (parameter,) = [p for p in pipeline["parameters"] if p["name"] == "retrain"]
    assert parameter["default"] == "none"
    assert parameter["values"] == ["none", "auto", "always"]
    (path,) = [v for v in pipeline["variables"] if v.get("name") == "retrainPath"]
    assert path["value"] == (
        "${{ or(in(variables['Build.Reason'], 'Schedule', 'ResourceTrigger'), "
        "ne(parameters.retrain, 'none')) }}"
    )
    (always,) = [v for v in pipeline["variables"] if v.get("name") == "retrainAlways"]
    assert always["value"] == (
        "${{ or(eq(variables['Build.Reason'], 'ResourceTrigger'), eq(parameters.retrain, 'always')) }}"
    )
    evaluate = stage(pipeline, "evaluate_live")
    assert evaluate["condition"] == "and(succeeded(), eq(variables['retrainPath'], 'True'))"
    promote = stage(pipeline, "promote")
    assert "eq(variables['retrainPath'], 'True')" in promote["condition"]
    # a retraining run builds no images, so neither deploy nor endpoint (which need them) runs
    assert "ne(variables['retrainPath'], 'True')" in stage(pipeline, "images")["condition"]


def test_evaluate_runs_forecast_evaluate_with_its_real_flags(pipeline: dict[str, Any]) -> None:
    (script,) = scripts(stage(pipeline, "evaluate_live"))
    args = invocation(script, "evaluate")
    flags = [a for a in args if a.startswith("--")]
    assert set(flags) <= cli_options("evaluate"), set(flags) - cli_options("evaluate")
    assert args[args.index("--fail-above") + 1] == "$(liveWapeMax)"
    assert "--actuals" in flags and "--metrics-out" in flags
    assert args[0] == "${forecasts[@]}"  # every recent run, each as its own --forecasts
    assert 'forecasts+=(--forecasts "azureblob://runs/$run")' in script
    # only the accuracy exit means "retrain"; any other failure fails the run
    assert f'if [ "$status" -eq {EXIT_ACCURACY} ]; then' in script
    assert 'elif [ "$status" -ne 0 ]; then' in script and 'exit "$status"' in script


def test_train_runs_when_evaluate_says_so_under_its_real_name(pipeline: dict[str, Any]) -> None:
    evaluate = stage(pipeline, "evaluate_live")
    (job,) = evaluate["jobs"]
    (step,) = [s for s in steps(evaluate) if s.get("task") == "AzureCLI@2"]
    assert "##vso[task.setvariable variable=retrain;isOutput=true]$retrain" in step["inputs"]["inlineScript"]
    output = f"dependencies.evaluate_live.outputs['{job['job']}.{step['name']}.retrain']"
    train = stage(pipeline, "train")
    assert train["dependsOn"] == ["test", "evaluate_live"]
    condition = " ".join(train["condition"].split())
    assert f"eq({output}, 'true')" in condition
    # a release (no retraining path) still trains when evaluate_live was skipped
    assert (
        "and(ne(variables['retrainPath'], 'True'), eq(dependencies.evaluate_live.result, 'Skipped'))"
        in condition
    )


def test_promote_patches_the_published_version_and_rolls_back(pipeline: dict[str, Any]) -> None:
    promote = stage(pipeline, "promote")
    assert promote["dependsOn"] == "publish_model"
    publish = stage(pipeline, "publish_model")
    (publish_job,) = publish["jobs"]
    (publish_step,) = [s for s in steps(publish) if s.get("name")]
    source = f"stageDependencies.publish_model.{publish_job['job']}.outputs['{publish_step['name']}"
    for variable in ("modelVersion", "modelSha256"):
        assert promote["variables"][variable] == f"$[ {source}.{variable}'] ]"
    (job,) = promote["jobs"]
    assert job["environment"] == "retail-forecast-$(environment)"  # approvals and deployment history
    (script,) = scripts(promote)
    patches = re.findall(r"^\s*patch (.*)$", script, flags=re.M)
    assert patches[0].startswith('"$(modelVersion)" \'"$(modelSha256)"\'')
    assert patches[1].startswith('"$old_version"')
    assert "kubectl patch $fm --type merge" in script
    assert script.index("kubectl wait $fm --for=condition=Ready") < script.rindex('patch "$old_version"')


def test_the_patch_is_the_document_the_crd_expects() -> None:
    """The script's patch() builds JSON: run it with kubectl replaced by echo and parse what it sent."""
    script = scripts(stage(load_pipeline(), "promote"))[0]
    function = script[script.index("patch() {") : script.index("\n}", script.index("patch() {")) + 2]
    function = re.sub(r"^ +", "", function, flags=re.M)
    shell = (
        f'kubectl() {{ printf "%s" "${{@: -1}}"; }}\nfm=x\n{function}\npatch 20261126T073320Z \'"ab"\' "why"'
    )
    sent = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, check=True).stdout
    assert json.loads(sent) == {
        "metadata": {"annotations": {"kubernetes.io/change-cause": "why"}},
        "spec": {"model": {"version": "20261126T073320Z", "sha256": "ab"}},
    }
    shell = shell.replace("'\"ab\"'", "null")
    sent = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, check=True).stdout
    assert json.loads(sent)["spec"]["model"]["sha256"] is None


@pytest.mark.parametrize("name", ["evaluate_live", "promote"])
def test_the_scripts_parse(pipeline: dict[str, Any], name: str) -> None:
    for script in scripts(stage(pipeline, name)):
        result = subprocess.run(
            ["bash", "-n"], input=MACRO.sub("MACRO", script), capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr


def test_the_live_wape_alert_starts_the_retraining_path_through_the_webhook(pipeline: dict[str, Any]) -> None:
    """The pipeline's webhook trigger and the alert on both IaC sides agree: only a firing live-WAPE alert
    (its custom property) starts a run, and the URL is a secret input, never a literal."""
    (webhook,) = pipeline["resources"]["webhooks"]
    filters = {f["path"]: f["value"] for f in webhook["filters"]}
    assert filters.pop("data.essentials.monitorCondition") == "Fired"  # not the resolution
    ((path, value),) = filters.items()
    prefix = "data.customProperties."
    assert path.startswith(prefix)
    custom = {path.removeprefix(prefix): value}
    # a webhook run is a resource trigger: retrainPath and retrainAlways say so, the script reads the latter
    (script,) = scripts(stage(pipeline, "evaluate_live"))
    assert 'if [ "$(retrainAlways)" = True ]; then' in script
    assert "parameters.liveWapeAlert" not in PIPELINE.read_text()  # the payload never reaches a script

    tf = terraform_resources()
    (receiver,) = as_list(tf["azurerm_monitor_action_group.retrain"]["webhook_receiver"])
    assert receiver["service_uri"] == "${var.retrain_webhook_url}"
    assert receiver["use_common_alert_schema"] is True
    (variable,) = [
        unwrap(v["retrain_webhook_url"]) for v in terraform_blocks()["variable"] if "retrain_webhook_url" in v
    ]
    assert variable["sensitive"] is True and variable["default"] == ""
    alerts = next(unwrap(e["log_alerts"]) for e in terraform_blocks()["locals"] if "log_alerts" in e)
    assert [key for key, alert in alerts.items() if alert["retrain"]] == ["live_wape"]
    action = tf["azurerm_monitor_scheduled_query_rules_alert_v2.log"]["action"]
    assert "azurerm_monitor_action_group.retrain[*].id" in str(action["action_groups"])
    assert action["custom_properties"] == f"${{each.value.retrain ? {custom} : {{}}}}"

    bicep = bicep_template()
    group = bicep["resources"]["retrainActionGroup"]
    (bicep_receiver,) = group["config"]["config"]["properties"]["webhookReceivers"]
    assert (
        bicep_receiver["serviceUri"] == "retrainWebhookUrl" and bicep_receiver["useCommonAlertSchema"] is True
    )
    assert bicep["parameters"]["retrainWebhookUrl"]["decorators"]
    rules = bicep["variables"]["logAlerts"]["value"]
    assert [rule["key"] for rule in rules if rule["retrain"]] == ["live-wape"]
    ((key, wanted),) = custom.items()
    assert (
        f"customProperties: rule.retrain ? {{ {key}: '{wanted}' }} : {{}}"
        in (BICEP / "main.bicep").read_text()
    )


def test_the_pipeline_is_the_one_owner_of_scheduled_retraining(pipeline: dict[str, Any]) -> None:
    """No Azure ML schedule trains on a clock of its own: the nightly pipeline run is the only one."""
    assert len(pipeline["schedules"]) == 1
    for path in AML_DIR.glob("*.y*ml"):
        document = yaml.safe_load(path.read_text())
        assert "schedule" not in str(document.get("$schema", "")), path.name
        assert "trigger" not in document, path.name
