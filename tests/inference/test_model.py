"""Loading a model: one input, the point output and exactly the quantile outputs its manifest names, and a
self-check over every output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from retail_forecast.core import features as feat
from retail_forecast.core.schema import Freq
from retail_forecast.inference.model import SelfCheckError, load_model


def test_a_quantile_model_loads_with_its_outputs_in_level_order(model_dir: Path) -> None:
    model = load_model(model_dir)
    assert model.output_names == ("forecast", "q0.1", "q0.5", "q0.9")
    assert model.quantile_levels == (0.1, 0.5, 0.9)
    assert model.self_check() <= model.manifest.golden.tolerance
    rows = np.asarray(model.manifest.golden.inputs, dtype=np.float32)
    outputs = model.predict_all(rows)
    np.testing.assert_array_equal(outputs[:, 0], model.predict(rows))
    assert (np.diff(outputs[:, 1:], axis=1) >= 0).all()


def test_a_model_without_quantiles_still_loads(point_model_dir: Path) -> None:
    model = load_model(point_model_dir)
    assert model.output_names == ("forecast",) and model.quantile_levels == ()
    model.self_check()


def copy_with_manifest(model_dir: Path, tmp_path: Path, change: object) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    change(manifest)  # type: ignore[operator]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_self_check_fails_when_a_quantile_output_differs_from_its_golden_values(
    model_dir: Path, tmp_path: Path
) -> None:
    def tamper(manifest: dict[str, list[dict[str, list[float]]]]) -> None:
        manifest["quantiles"]["outputs"][2]["golden"][3] += 5.0  # type: ignore[call-overload]

    model = load_model(copy_with_manifest(model_dir, tmp_path, tamper))
    with pytest.raises(SelfCheckError, match=r"golden sample row 3, output q0\.9"):
        model.self_check()


def test_outputs_the_manifest_does_not_name_are_refused(model_dir: Path, tmp_path: Path) -> None:
    """A graph with quantile outputs under a manifest without them (or the other way round) is not the
    model the manifest describes."""
    unnamed = copy_with_manifest(model_dir, tmp_path / "a", lambda m: m.pop("quantiles"))
    with pytest.raises(SelfCheckError, match="expected one input and one point output"):
        load_model(unnamed)

    def rename(manifest: dict[str, dict[str, list[dict[str, object]]]]) -> None:
        manifest["quantiles"]["outputs"][0].update(level=0.2, output="q0.2")

    renamed = copy_with_manifest(model_dir, tmp_path / "b", rename)
    with pytest.raises(SelfCheckError, match=r"plus \['q0.2', 'q0.5', 'q0.9'\]"):
        load_model(renamed)


def with_other_spec_version(manifest: dict[str, dict[str, object]]) -> None:
    manifest["features"]["spec_version"] = "fs0"


def with_a_renamed_feature(manifest: dict[str, dict[str, object]]) -> None:
    """The same version and width, one feature named otherwise (in the drift reference too, so the
    manifest stays valid): the golden sample still replays, only the schema check can tell."""
    names: list[str] = manifest["features"]["names"]  # type: ignore[assignment]
    old, names[5] = names[5], "lag_renamed"
    for reference in manifest.get("drift_reference", {}).get("features", []):  # type: ignore[attr-defined]
        if reference["name"] == old:
            reference["name"] = "lag_renamed"


def test_a_model_trained_on_other_features_is_refused_at_load(model_dir: Path, tmp_path: Path) -> None:
    older = copy_with_manifest(model_dir, tmp_path / "a", with_other_spec_version)
    with pytest.raises(
        SelfCheckError,
        match=rf"^demand 7: model built with feature spec fs0, this code "
        rf"computes {feat.SPEC_VERSION} .*image of the release that trained it$",
    ):
        load_model(older)
    renamed = copy_with_manifest(model_dir, tmp_path / "b", with_a_renamed_feature)
    expected = feat.spec_for(Freq.DAILY).names[5]
    with pytest.raises(SelfCheckError, match=rf"feature 5 is 'lag_renamed' in the model, '{expected}' here"):
        load_model(renamed)
