"""The manifest's drift reference: written by training, read back unchanged, refused when inconsistent."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from retail_forecast.core import drift
from retail_forecast.core.manifest import Manifest, ManifestError


def test_training_writes_a_reference_that_round_trips(model_dir: Path) -> None:
    manifest = Manifest.load(model_dir)
    reference = manifest.drift_reference
    assert reference is not None
    assert [f.name for f in reference.features] == drift.monitored(manifest.features.names)
    assert reference.rows > 1000
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_a_manifest_without_a_reference_still_loads(model_dir: Path) -> None:
    raw = json.loads((model_dir / "manifest.json").read_text())
    del raw["drift_reference"]
    assert Manifest.from_json(json.dumps(raw)).drift_reference is None


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda f: f.update(name="no_such_feature"), "features the model does not take"),
        (lambda f: f["shares"].append(0.0), "edges make"),
        (lambda f: f.update(edges=f["edges"][::-1]), "edges must increase"),
        (lambda f: f["shares"].__setitem__(0, f["shares"][0] + 0.05), "shares sum"),
    ],
)
def test_an_inconsistent_reference_is_refused(
    model_dir: Path, change: Callable[[dict[str, Any]], object], problem: str
) -> None:
    raw = json.loads((model_dir / "manifest.json").read_text())
    feature = next(f for f in raw["drift_reference"]["features"] if len(f["edges"]) > 1)
    change(feature)
    with pytest.raises(ManifestError, match=problem):
        Manifest.from_json(json.dumps(raw))
