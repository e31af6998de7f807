"""The loaded model: one onnxruntime session, its manifest, and the self-check that gates readiness.

A graph has one input and either one output (the point forecast) or that output plus the quantile
outputs its manifest names (`manifest.quantiles`); models made before quantiles keep loading.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from retail_forecast.core.features import schema_mismatch
from retail_forecast.core.manifest import MODEL_FILE, Manifest
from retail_forecast.core.schema import Freq


class SelfCheckError(RuntimeError):
    """The model cannot be trusted with this code's feature rows (its golden sample is not reproduced,
    its graph is not what the manifest describes, or it was trained on other features): it must never
    serve traffic."""


@dataclass(frozen=True)
class LoadedModel:
    manifest: Manifest
    session: ort.InferenceSession
    input_name: str
    output_name: str
    load_seconds: float
    # The quantile outputs by increasing level (`q0.1`, …); empty for a point-only model.
    quantile_outputs: tuple[str, ...] = ()

    @property
    def output_names(self) -> tuple[str, ...]:
        """Every output, the point forecast first: the columns of `predict_all`."""
        return (self.output_name, *self.quantile_outputs)

    @property
    def quantile_levels(self) -> tuple[float, ...]:
        quantiles = self.manifest.quantiles
        return tuple(q.level for q in quantiles.outputs) if quantiles else ()

    @property
    def n_features(self) -> int:
        return len(self.manifest.features.names)

    def predict(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        (output,) = self.session.run([self.output_name], {self.input_name: features})
        return np.asarray(output, dtype=np.float32).reshape(-1)

    def predict_all(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Every output in one run: [N, 1 + quantiles], columns as `output_names`."""
        outputs = self.session.run(list(self.output_names), {self.input_name: features})
        return np.column_stack([np.asarray(output, dtype=np.float32).reshape(-1) for output in outputs])

    def self_check(self) -> float:
        """Replay the golden sample on every output; return the largest deviation or raise
        `SelfCheckError`."""
        golden = self.manifest.golden
        inputs = np.asarray(golden.inputs, dtype=np.float32)
        quantiles = self.manifest.quantiles.outputs if self.manifest.quantiles else []
        expected = np.column_stack([golden.outputs, *(q.golden for q in quantiles)]).astype(np.float64)
        actual = self.predict_all(inputs).astype(np.float64)
        if actual.shape != expected.shape:
            raise SelfCheckError(
                f"golden sample: model returned {actual.shape[0]} values for {len(expected)} rows"
            )
        deviation = np.abs(actual - expected) / np.maximum(np.abs(expected), 1.0)
        worst = float(deviation.max())
        if not np.all(np.isfinite(actual)) or worst > golden.tolerance:
            flat = int(np.nanargmax(np.where(np.isfinite(deviation), deviation, np.inf)))
            row, column = divmod(flat, actual.shape[1])
            raise SelfCheckError(
                f"golden sample row {row}, output {self.output_names[column]}: model gives "
                f"{actual[row, column]:.6g}, manifest says {expected[row, column]:.6g} "
                f"(relative deviation {deviation[row, column]:.2e} > tolerance {golden.tolerance:.0e})"
            )
        return worst


def load_model(model_dir: Path, intra_op_threads: int = 1) -> LoadedModel:
    """Verify the bytes against the manifest and its feature schema against this code's, then create
    the session once. Every scoring path (service, `forecast predict`, the batch job) loads here."""
    started = time.perf_counter()
    manifest = Manifest.load(model_dir)
    manifest.verify_model_file(model_dir)
    mismatch = schema_mismatch(Freq(manifest.freq), manifest.features.spec_version, manifest.features.names)
    if mismatch is not None:
        raise SelfCheckError(f"{manifest.name} {manifest.version}: {mismatch}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_dir / MODEL_FILE), options, providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    quantile_outputs = tuple(q.output for q in manifest.quantiles.outputs) if manifest.quantiles else ()
    point = [output.name for output in outputs if output.name not in quantile_outputs]
    if len(inputs) != 1 or len(point) != 1 or len(outputs) != 1 + len(quantile_outputs):
        raise SelfCheckError(
            f"model has {len(inputs)} inputs and outputs {[o.name for o in outputs]}; expected one input "
            f"and one point output" + (f" plus {list(quantile_outputs)}" if quantile_outputs else "")
        )
    width = inputs[0].shape[1] if len(inputs[0].shape) == 2 else None
    if width != len(manifest.features.names):
        raise SelfCheckError(
            f"model input {inputs[0].name} has shape {inputs[0].shape}; the manifest lists "
            f"{len(manifest.features.names)} features"
        )
    return LoadedModel(
        manifest=manifest,
        session=session,
        input_name=inputs[0].name,
        output_name=point[0],
        load_seconds=time.perf_counter() - started,
        quantile_outputs=quantile_outputs,
    )
