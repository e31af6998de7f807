"""ONNX export of the fitted model, with the parity check and golden sample that prove it.

skl2onnx converts the tree ensemble only (LightGBM's through onnxmltools' converter, registered with
skl2onnx): for HistGradientBoosting it silently drops the inverse link of log-link losses (poisson, gamma),
and it knows nothing of our per-series scaling. The exported graph therefore appends those steps
itself, so that the ONNX model alone maps a feature row to a forecast in sales units:
`forecast = link(trees(features)) * features[:, scale]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from retail_forecast.core.manifest import quantile_output_name
from retail_forecast.training.quantiles import sklearn_quantiles

INPUT_NAME: Final = "features"
OUTPUT_NAME: Final = "forecast"
ONNX_OPSET: Final = 17
# float32 thresholds and accumulation against sklearn's float64: differences stay far below one unit
# of sales; anything larger means the graph is wrong, not rounding.
PARITY_RTOL: Final = 1e-4
PARITY_ATOL: Final = 1e-3
LOG_LINK_LOSSES: Final = frozenset({"poisson", "gamma"})


class ParityError(RuntimeError):
    """The ONNX graph does not reproduce the scikit-learn model."""


def sklearn_forecast(
    estimator: Any, features: npt.NDArray[np.float32], scale_index: int
) -> npt.NDArray[np.float64]:
    """What the ONNX graph must compute, in scikit-learn: clipped model output times the series scale."""
    raw = np.asarray(estimator.predict(features), dtype=np.float64)
    return np.maximum(raw, 0.0) * features[:, scale_index].astype(np.float64)


def register_lightgbm() -> None:
    """Teach skl2onnx LightGBM's regressor through onnxmltools' converter (which applies the exp of the
    poisson and tweedie log links itself); idempotent."""
    from lightgbm import LGBMRegressor  # noqa: PLC0415 - training-only dependencies
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm  # noqa: PLC0415
    from skl2onnx import update_registered_converter  # noqa: PLC0415
    from skl2onnx.common.shape_calculator import calculate_linear_regressor_output_shapes  # noqa: PLC0415

    update_registered_converter(
        LGBMRegressor,
        "LightGbmLGBMRegressor",
        calculate_linear_regressor_output_shapes,
        convert_lightgbm,
        options={"split": None},
    )


def float32_thresholds(estimator: Any) -> Any:
    """A copy of a fitted LightGBM regressor whose split thresholds are float32 values, rounded down.

    LightGBM splits at float64 midpoints between feature values; ONNX trees hold float32 thresholds, and
    rounding a midpoint to the nearest float32 can land on the upper value itself, which then goes the
    other way (a 1.3e-3 relative error on Favorita). With t the largest float32 <= the threshold, every
    float32 input x satisfies x <= t exactly when it satisfies x <= threshold: the copy predicts the same
    on float32 features, and its thresholds survive the conversion exactly.
    """
    import copy  # noqa: PLC0415
    import re  # noqa: PLC0415

    from lightgbm import Booster  # noqa: PLC0415 - training-only dependency

    def round_down(line: re.Match[str]) -> str:
        exact = np.array(line.group(2).split(), dtype=np.float64)
        nearest = exact.astype(np.float32)
        below = np.where(nearest > exact, np.nextafter(nearest, np.float32(-np.inf)), nearest)
        return line.group(1) + " ".join(repr(float(v)) for v in below)

    text = re.sub(r"^(threshold=)(.*)$", round_down, estimator.booster_.model_to_string(), flags=re.MULTILINE)
    # The header's byte offsets of each tree no longer hold; without them LightGBM parses tree by tree.
    text = re.sub(r"^tree_sizes=.*\n", "", text, flags=re.MULTILINE)
    rounded = copy.copy(estimator)
    rounded._Booster = Booster(model_str=text)
    return rounded


def convertible(estimator: Any) -> Any:
    """What skl2onnx converts for a fitted model: a LightGBM one registered and with float32 thresholds."""
    if type(estimator).__module__.startswith("lightgbm"):
        register_lightgbm()
        return float32_thresholds(estimator)
    return estimator


def to_onnx_model(estimator: Any, n_features: int, scale_index: int) -> onnx.ModelProto:
    from skl2onnx import to_onnx  # noqa: PLC0415 - training-only dependency
    from skl2onnx.common.data_types import FloatTensorType  # noqa: PLC0415

    estimator = convertible(estimator)
    model: onnx.ModelProto = to_onnx(
        estimator,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        target_opset={"": ONNX_OPSET, "ai.onnx.ml": 3},
    )
    graph = model.graph
    (trees_output,) = graph.output
    raw = trees_output.name
    nodes = []
    if getattr(estimator, "loss", None) in LOG_LINK_LOSSES:
        nodes.append(helper.make_node("Exp", [raw], ["linked"], name="inverse_link"))
    else:
        nodes.append(helper.make_node("Relu", [raw], ["linked"], name="clip_negative"))
    graph.initializer.extend(
        [
            helper.make_tensor("scale_column", TensorProto.INT64, [1], [scale_index]),
            helper.make_tensor("flat_shape", TensorProto.INT64, [1], [-1]),
        ]
    )
    nodes += [
        helper.make_node("Gather", [INPUT_NAME, "scale_column"], ["scale"], axis=1, name="series_scale"),
        helper.make_node("Mul", ["linked", "scale"], ["scaled"], name="rescale"),
        helper.make_node("Reshape", ["scaled", "flat_shape"], [OUTPUT_NAME], name="flatten"),
    ]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None]))
    model.doc_string = "retail-forecast direct multi-horizon demand model"
    onnx.checker.check_model(model, full_check=True)
    return model


def onnx_session(model_bytes: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def run_onnx(session: ort.InferenceSession, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    (output,) = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(features, dtype=np.float32)})
    return np.asarray(output, dtype=np.float32)


@dataclass(frozen=True)
class Parity:
    rows: int
    max_abs_diff: float
    max_rel_diff: float


def check_parity(
    session: ort.InferenceSession, estimator: Any, features: npt.NDArray[np.float32], scale_index: int
) -> Parity:
    """Compare ONNX and scikit-learn on the given rows; raise `ParityError` beyond the tolerance."""
    expected = sklearn_forecast(estimator, features, scale_index)
    return compare(run_onnx(session, features).astype(np.float64), expected, "")


def compare(actual: npt.NDArray[np.float64], expected: npt.NDArray[np.float64], what: str) -> Parity:
    """ONNX outputs against scikit-learn's; raise `ParityError` beyond the tolerance (`what` names the
    output when it is not the point forecast)."""
    diff = np.abs(actual - expected)
    allowed = PARITY_ATOL + PARITY_RTOL * np.abs(expected)
    parity = Parity(
        rows=len(actual),
        max_abs_diff=float(diff.max(initial=0.0)),
        max_rel_diff=float((diff / np.maximum(np.abs(expected), 1.0)).max(initial=0.0)),
    )
    if np.any(diff > allowed) or actual.shape != expected.shape:
        worst = int(np.argmax(diff - allowed))
        raise ParityError(
            f"ONNX export{what} differs from scikit-learn on {int((diff > allowed).sum())} of {len(actual)} "
            "rows "
            f"(worst row {worst}: onnx {actual[worst]:.6g} vs sklearn {expected[worst]:.6g}; "
            f"tolerance {PARITY_ATOL} + {PARITY_RTOL} x |value|)"
        )
    return parity


def golden_sample(
    session: ort.InferenceSession, features: npt.NDArray[np.float32], rows: int = 8, seed: int = 0
) -> tuple[list[list[float]], list[float]]:
    """A few feature rows spread over the prediction range, and the ONNX outputs for them, exactly."""
    outputs = run_onnx(session, features)
    order = np.argsort(outputs, kind="stable")
    picks = order[np.linspace(0, len(order) - 1, num=min(rows, len(order))).round().astype(int)]
    rng = np.random.default_rng(seed)
    picks = np.unique(np.concatenate([picks, rng.choice(len(order), size=min(2, len(order)), replace=False)]))
    chosen = features[picks]
    exact = run_onnx(session, chosen)
    return chosen.astype(float).tolist(), exact.astype(float).tolist()


def append_quantile_outputs(
    model: onnx.ModelProto, heads: Sequence[Any], levels: Sequence[float], scale_index: int
) -> onnx.ModelProto:
    """The point model's graph plus one output per quantile head, `q<level>`, monotone by construction.

    Each head becomes `relu(trees(features)) * features[:, scale]`; output k is the Max of head k and
    output k-1, so the outputs never decrease with the level whatever the heads say. The graph keeps
    its one input and its point output, first.
    """
    from skl2onnx import to_onnx  # noqa: PLC0415 - training-only dependency
    from skl2onnx.common.data_types import FloatTensorType  # noqa: PLC0415

    if len(heads) != len(levels) or list(levels) != sorted(set(levels)):
        raise ValueError(f"quantile heads need strictly increasing levels, one per head, got {list(levels)}")
    combined = onnx.ModelProto()
    combined.CopyFrom(model)
    graph = combined.graph
    (inp,) = graph.input
    n_features = inp.type.tensor_type.shape.dim[1].dim_value
    graph.initializer.extend(
        [
            helper.make_tensor("quantile_scale_column", TensorProto.INT64, [1], [scale_index]),
            helper.make_tensor("quantile_flat_shape", TensorProto.INT64, [1], [-1]),
        ]
    )
    graph.node.append(
        helper.make_node(
            "Gather", [INPUT_NAME, "quantile_scale_column"], ["quantile_scale"], axis=1, name="quantile_scale"
        )
    )
    previous: str | None = None
    for head, level in zip(heads, levels, strict=True):
        name = quantile_output_name(level)
        head_model = to_onnx(
            convertible(head),
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            target_opset={"": ONNX_OPSET, "ai.onnx.ml": 3},
        )
        trees = _prefixed(head_model.graph, f"{name}/")
        graph.node.extend(trees.node)
        graph.initializer.extend(trees.initializer)
        (raw,) = trees.output
        scaled = name if previous is None else f"{name}/scaled"
        graph.node.extend(
            [
                helper.make_node("Relu", [raw.name], [f"{name}/clipped"], name=f"{name}/clip_negative"),
                helper.make_node(
                    "Mul", [f"{name}/clipped", "quantile_scale"], [f"{name}/rescaled"], name=f"{name}/rescale"
                ),
                helper.make_node(
                    "Reshape", [f"{name}/rescaled", "quantile_flat_shape"], [scaled], name=f"{name}/flatten"
                ),
            ]
        )
        if previous is not None:
            graph.node.append(helper.make_node("Max", [previous, scaled], [name], name=f"{name}/monotone"))
        graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None]))
        previous = name
    if not any(opset.domain == "ai.onnx.ml" for opset in combined.opset_import):
        combined.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    onnx.checker.check_model(combined, full_check=True)
    return combined


def _prefixed(graph: onnx.GraphProto, prefix: str) -> onnx.GraphProto:
    """A copy of a head's graph whose node, edge and initializer names carry `prefix`, except the input."""
    renamed = onnx.GraphProto()
    renamed.CopyFrom(graph)

    def name(edge: str) -> str:
        return edge if edge in {"", INPUT_NAME} else prefix + edge

    for node in renamed.node:
        node.name = prefix + node.name
        node.input[:] = [name(edge) for edge in node.input]
        node.output[:] = [name(edge) for edge in node.output]
    for initializer in renamed.initializer:
        initializer.name = name(initializer.name)
    for output in renamed.output:
        output.name = name(output.name)
    return renamed


def run_quantiles(
    session: ort.InferenceSession, features: npt.NDArray[np.float32], levels: Sequence[float]
) -> npt.NDArray[np.float32]:
    """The graph's quantile outputs, [N, Q] by level."""
    outputs = session.run(
        [quantile_output_name(level) for level in levels],
        {INPUT_NAME: np.ascontiguousarray(features, dtype=np.float32)},
    )
    return np.column_stack([np.asarray(output, dtype=np.float32) for output in outputs])


def check_quantile_parity(
    session: ort.InferenceSession,
    heads: Sequence[Any],
    levels: Sequence[float],
    features: npt.NDArray[np.float32],
    scale_index: int,
) -> Parity:
    """Every quantile output against `quantiles.sklearn_quantiles`; `ParityError` names the first that
    differs. The returned figures are over all outputs."""
    expected = sklearn_quantiles(heads, features, scale_index)
    actual = run_quantiles(session, features, levels).astype(np.float64)
    worst = [
        compare(actual[:, k], expected[:, k], f" output {quantile_output_name(level)}")
        for k, level in enumerate(levels)
    ]
    return Parity(
        rows=len(features),
        max_abs_diff=max(p.max_abs_diff for p in worst),
        max_rel_diff=max(p.max_rel_diff for p in worst),
    )
