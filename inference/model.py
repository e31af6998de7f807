"""The loaded model: one onnxruntime session, its manifest, and the self-check that gates readiness."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from retail_forecast.core.manifest import MODEL_FILE, Manifest


class SelfCheckError(RuntimeError):
    """The model does not reproduce its manifest's golden sample: it must never serve traffic."""


@dataclass(frozen=True)
class LoadedModel:
    manifest: Manifest
    session: ort.InferenceSession
    input_name: str
    output_name: str
    load_seconds: float

    @property
    def n_features(self) -> int:
        return len(self.manifest.features.names)

    def predict(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        (output,) = self.session.run([self.output_name], {self.input_name: features})
        return np.asarray(output, dtype=np.float32).reshape(-1)

    def self_check(self) -> float:
        """Replay the golden sample; return the largest deviation or raise `SelfCheckError`."""
        golden = self.manifest.golden
        inputs = np.asarray(golden.inputs, dtype=np.float32)
        expected = np.asarray(golden.outputs, dtype=np.float64)
        actual = self.predict(inputs).astype(np.float64)
        if actual.shape != expected.shape:
            raise SelfCheckError(
                f"golden sample: model returned {actual.shape[0]} values for {len(expected)} rows"
            )
        deviation = np.abs(actual - expected) / np.maximum(np.abs(expected), 1.0)
        worst = float(deviation.max())
        if not np.all(np.isfinite(actual)) or worst > golden.tolerance:
            row = int(np.nanargmax(np.where(np.isfinite(deviation), deviation, np.inf)))
            raise SelfCheckError(
                f"golden sample row {row}: model gives {actual[row]:.6g}, manifest says {expected[row]:.6g} "
                f"(relative deviation {deviation[row]:.2e} > tolerance {golden.tolerance:.0e})"
            )
        return worst


def load_model(model_dir: Path, intra_op_threads: int = 1) -> LoadedModel:
    """Verify the bytes against the manifest, then create the session once."""
    started = time.perf_counter()
    manifest = Manifest.load(model_dir)
    manifest.verify_model_file(model_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_dir / MODEL_FILE), options, providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise SelfCheckError(
            f"model has {len(inputs)} inputs and {len(outputs)} outputs; expected one of each"
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
        output_name=outputs[0].name,
        load_seconds=time.perf_counter() - started,
    )
