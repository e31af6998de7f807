"""The model manifest: the contract between training, the model store, serving and the operator.

A model version is an immutable folder holding `model.onnx` and `manifest.json`; the manifest names the
model's bytes (sha256), its feature schema and a golden sample that the ONNX model reproduces exactly.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MODEL_FILE: Final = "model.onnx"
MANIFEST_FILE: Final = "manifest.json"

# Names and versions appear in blob paths, Kubernetes labels and URLs: keep them to a label-safe alphabet.
NAME_PATTERN: Final = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
VERSION_PATTERN: Final = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
SHA256_PATTERN: Final = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest that is missing, unreadable or incomplete."""


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"model name {name!r} is invalid: use 1-63 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def check_version(version: str) -> str:
    if not VERSION_PATTERN.fullmatch(version):
        raise ValueError(
            f"model version {version!r} is invalid: use 1-63 letters, digits, '.', '_' and '-', "
            "starting and ending with a letter or digit"
        )
    return version


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scores(_Strict):
    """Backtest scores; None where a metric is undefined (e.g. WAPE over periods with zero sales)."""

    wape: float | None
    mase: float | None
    rmsse: float | None
    bias: float | None


class FeatureSchema(_Strict):
    spec_version: str
    names: list[str] = Field(min_length=1)


class Golden(_Strict):
    inputs: list[list[float]] = Field(min_length=1)
    outputs: list[float] = Field(min_length=1)
    tolerance: float = Field(gt=0)

    @model_validator(mode="after")
    def _aligned(self) -> Golden:
        if len(self.inputs) != len(self.outputs):
            raise ValueError("golden inputs and outputs differ in length")
        if len({len(row) for row in self.inputs}) != 1:
            raise ValueError("golden input rows differ in width")
        return self


def quantile_output_name(level: float) -> str:
    """The ONNX output (and batch column) that carries the forecast at `level`: `q0.1`, `q0.9`, …"""
    return f"q{level:g}"


class QuantileOutput(_Strict):
    """One quantile output of the graph and what it gives for the golden sample's rows."""

    level: float = Field(gt=0, lt=1)
    output: str
    golden: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _named(self) -> QuantileOutput:
        if self.output != quantile_output_name(self.level):
            raise ValueError(f"quantile {self.level} must be output {quantile_output_name(self.level)!r}")
        return self


class QuantileScores(_Strict):
    """Holdout scores of the quantile outputs: scaled pinball loss (M5 Uncertainty) and the share of
    actuals inside the interval between the outermost levels; None where undefined."""

    scaled_pinball: float | None
    pinball_by_level: dict[str, float | None]
    interval: tuple[float, float]
    coverage: float | None
    coverage_by_horizon: list[float | None]


class Quantiles(_Strict):
    """The optional probabilistic part of a model: outputs by increasing level, monotone in the graph."""

    outputs: list[QuantileOutput] = Field(min_length=1)
    metrics: QuantileScores

    @model_validator(mode="after")
    def _increasing(self) -> Quantiles:
        levels = [q.level for q in self.outputs]
        if levels != sorted(set(levels)):
            raise ValueError(f"quantile levels must increase strictly, got {levels}")
        return self


class TrainingData(_Strict):
    fingerprint: str
    rows: int = Field(ge=0)
    series: int = Field(ge=0)
    start: str
    end: str


class FeatureReference(_Strict):
    """One feature's training distribution: right-closed bins between `edges`, the rows' share in each."""

    name: str
    edges: list[float] = Field(min_length=1)
    shares: list[Annotated[float, Field(ge=0, le=1)]]

    @model_validator(mode="after")
    def _bins(self) -> FeatureReference:
        if len(self.shares) != len(self.edges) + 1:
            raise ValueError(
                f"{self.name}: {len(self.edges)} edges make {len(self.edges) + 1} bins, "
                f"not {len(self.shares)} shares"
            )
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError(f"{self.name}: edges must increase")
        if abs(sum(self.shares) - 1.0) > 1e-6:
            raise ValueError(f"{self.name}: shares sum to {sum(self.shares)}, not 1")
        return self


class DriftReference(_Strict):
    """What serving measures input drift against (core/drift.py); manifests from before it have none."""

    rows: int = Field(ge=1)
    features: list[FeatureReference] = Field(min_length=1)


class Manifest(_Strict):
    """DESIGN's manifest; `extra` fields are refused so a typo never passes as a complete manifest."""

    schema_version: Literal[1] = 1
    name: str
    version: str
    created_at: str
    sha256: Annotated[str, Field(pattern=SHA256_PATTERN.pattern)]
    onnx_opset: int = Field(ge=1)
    freq: Literal["D", "W"]
    horizon: int = Field(ge=1)
    min_history: int = Field(ge=1)
    features: FeatureSchema
    metrics: dict[str, Scores]
    metrics_by_horizon: dict[str, list[Scores]] = Field(default_factory=dict)
    golden: Golden
    training_data: TrainingData
    library_versions: dict[str, str]
    params: dict[str, float | int | str | None] = Field(default_factory=dict)
    # Absent in models without quantile outputs (and in every model made before them).
    quantiles: Quantiles | None = None
    drift_reference: DriftReference | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_name(value)

    @field_validator("version")
    @classmethod
    def _valid_version(cls, value: str) -> str:
        return check_version(value)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        for required in ("model", "seasonal_naive", "moving_average"):
            if required not in self.metrics:
                raise ValueError(f"metrics lack {required!r}")
        width = len(self.features.names)
        if len(self.golden.inputs[0]) != width:
            raise ValueError(f"golden rows have {len(self.golden.inputs[0])} values, features {width}")
        for quantile in self.quantiles.outputs if self.quantiles else []:
            if len(quantile.golden) != len(self.golden.inputs):
                raise ValueError(f"golden outputs of {quantile.output} differ in length from the inputs")
        if self.drift_reference is not None:
            referenced = [f.name for f in self.drift_reference.features]
            unknown = sorted(set(referenced) - set(self.features.names))
            if unknown:
                raise ValueError(f"drift_reference names features the model does not take: {unknown}")
            if len(set(referenced)) != len(referenced):
                raise ValueError("drift_reference names a feature twice")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "manifest.json") -> Manifest:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
            )
            raise ManifestError(f"{source} is not a valid model manifest: {problems}") from None

    @classmethod
    def load(cls, model_dir: Path) -> Manifest:
        path = model_dir / MANIFEST_FILE
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            raise ManifestError(f"{path} does not exist") from None
        return cls.from_json(text, source=str(path))

    def verify_model_file(self, model_dir: Path) -> None:
        """Refuse a model whose bytes differ from what the manifest names."""
        path = model_dir / MODEL_FILE
        if not path.is_file():
            raise ManifestError(f"{path} does not exist")
        actual = sha256_file(path)
        if actual != self.sha256:
            raise ManifestError(f"{path} has sha256 {actual}, the manifest names {self.sha256}")
