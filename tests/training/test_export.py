from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from retail_forecast.training import export, quantiles
from retail_forecast.training.model import DEFAULT_PARAMS, LIGHTGBM, fit

SCALE_INDEX = 1


def fitted(loss: str) -> tuple[Any, np.ndarray]:
    rng = np.random.default_rng(0)
    features = rng.uniform(0, 5, size=(3000, 6)).astype(np.float32)
    features[:, SCALE_INDEX] = rng.uniform(1, 500, size=3000).astype(np.float32)
    target = rng.poisson(np.exp(0.3 * features[:, 0] - 0.2 * features[:, 2])).astype(float)
    return HistGradientBoostingRegressor(loss=loss, max_iter=60, random_state=0).fit(
        features, target
    ), features


@pytest.mark.parametrize("loss", ["poisson", "squared_error", "absolute_error"])
def test_exported_graph_matches_sklearn_in_sales_units(loss: str) -> None:
    estimator, features = fitted(loss)
    model = export.to_onnx_model(estimator, features.shape[1], SCALE_INDEX)
    session = export.onnx_session(model.SerializeToString())
    parity = export.check_parity(session, estimator, features, SCALE_INDEX)
    assert parity.rows == len(features)
    assert parity.max_rel_diff < export.PARITY_RTOL
    outputs = export.run_onnx(session, features)
    assert outputs.shape == (len(features),)
    assert (outputs >= 0).all()
    assert [i.name for i in session.get_inputs()] == [export.INPUT_NAME]
    assert session.get_inputs()[0].shape[1] == features.shape[1]


def fitted_lightgbm(loss: str) -> tuple[Any, np.ndarray]:
    _, features = fitted("poisson")
    rng = np.random.default_rng(0)
    target = rng.poisson(np.exp(0.3 * features[:, 0] - 0.2 * features[:, 2])).astype(float)
    params = {**DEFAULT_PARAMS[LIGHTGBM], "loss": loss, "max_iter": 60}
    return fit(params, features, target, seed=0), features


@pytest.mark.parametrize("loss", ["absolute_error", "tweedie", "poisson", "squared_error"])
def test_a_lightgbm_model_exports_through_onnxmltools_with_parity_and_a_golden_sample(loss: str) -> None:
    estimator, features = fitted_lightgbm(loss)
    model = export.to_onnx_model(estimator, features.shape[1], SCALE_INDEX)
    assert "TreeEnsembleRegressor" in {node.op_type for node in model.graph.node}
    session = export.onnx_session(model.SerializeToString())
    parity = export.check_parity(session, estimator, features, SCALE_INDEX)
    assert parity.max_rel_diff < export.PARITY_RTOL
    inputs, outputs = export.golden_sample(session, features, rows=8)
    expected = export.sklearn_forecast(estimator, np.asarray(inputs, dtype=np.float32), SCALE_INDEX)
    np.testing.assert_allclose(outputs, expected, rtol=export.PARITY_RTOL, atol=export.PARITY_ATOL)


@pytest.mark.parametrize("loss", ["tweedie", "poisson"])
def test_a_lightgbm_graph_without_its_inverse_link_fails_parity(loss: str) -> None:
    """onnxmltools appends the exp of LightGBM's log links itself: without it the outputs are log-space."""
    estimator, features = fitted_lightgbm(loss)
    model = export.to_onnx_model(estimator, features.shape[1], SCALE_INDEX)
    (exp,) = [node for node in model.graph.node if node.op_type == "Exp"]
    exp.op_type = "Identity"
    session = export.onnx_session(model.SerializeToString())
    with pytest.raises(export.ParityError, match="differs from scikit-learn"):
        export.check_parity(session, estimator, features, SCALE_INDEX)


def test_parity_check_catches_a_graph_without_the_inverse_link() -> None:
    """What plain skl2onnx gives for a poisson model (log-space outputs) must fail the run."""
    estimator, features = fitted("poisson")
    model = export.to_onnx_model(estimator, features.shape[1], SCALE_INDEX)
    for node in model.graph.node:
        if node.op_type == "Exp":
            node.op_type = "Relu"
    session = export.onnx_session(model.SerializeToString())
    with pytest.raises(export.ParityError, match="differs from scikit-learn"):
        export.check_parity(session, estimator, features, SCALE_INDEX)


def test_golden_sample_holds_the_models_forecasts_and_tells_another_model_apart() -> None:
    """The golden sample is serving's self-check: its outputs must be this model's forecasts (checked
    against scikit-learn, not against the same ONNX bytes) and a different model must fail to reproduce
    them."""
    estimator, features = fitted("poisson")
    model_bytes = export.to_onnx_model(estimator, features.shape[1], SCALE_INDEX).SerializeToString()
    inputs, outputs = export.golden_sample(export.onnx_session(model_bytes), features, rows=8)
    assert 8 <= len(inputs) <= 10
    assert len(set(outputs)) > 4  # spread over the prediction range, not one region
    golden_rows = np.asarray(inputs, dtype=np.float32)
    expected = export.sklearn_forecast(estimator, golden_rows, SCALE_INDEX)
    np.testing.assert_allclose(outputs, expected, rtol=export.PARITY_RTOL, atol=export.PARITY_ATOL)

    rng = np.random.default_rng(1)
    other = HistGradientBoostingRegressor(loss="poisson", max_iter=60, random_state=0).fit(
        features, rng.permutation(estimator.predict(features))
    )
    other_bytes = export.to_onnx_model(other, features.shape[1], SCALE_INDEX).SerializeToString()
    replay = export.run_onnx(export.onnx_session(other_bytes), golden_rows)
    assert np.abs(replay - np.asarray(outputs)).max() > 1e-3


def test_graph_is_float32_with_one_input_and_one_flat_output() -> None:
    estimator, features = fitted("squared_error")
    model = export.to_onnx_model(estimator, features.shape[1], SCALE_INDEX)
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert len(out.type.tensor_type.shape.dim) == 1
    assert {o.domain: o.version for o in model.opset_import}[""] == export.ONNX_OPSET


LEVELS = (0.1, 0.5, 0.9)


def quantile_heads(features: np.ndarray, levels: tuple[float, ...] = LEVELS) -> list[Any]:
    """Real quantile heads on the scaled target, as training fits them."""
    rng = np.random.default_rng(2)
    target = rng.poisson(np.exp(0.3 * features[:, 0] - 0.2 * features[:, 2])).astype(float)
    return quantiles.fit_heads(levels, features, target, seed=0)


def test_quantile_outputs_join_the_graph_and_match_sklearn() -> None:
    estimator, features = fitted("poisson")
    heads = quantile_heads(features)
    point = export.to_onnx_model(estimator, features.shape[1], SCALE_INDEX)
    model = export.append_quantile_outputs(point, heads, LEVELS, SCALE_INDEX)
    session = export.onnx_session(model.SerializeToString())
    assert [i.name for i in session.get_inputs()] == [export.INPUT_NAME]
    assert [o.name for o in session.get_outputs()] == [export.OUTPUT_NAME, "q0.1", "q0.5", "q0.9"]
    export.check_parity(session, estimator, features, SCALE_INDEX)  # the point output is untouched
    parity = export.check_quantile_parity(session, heads, LEVELS, features, SCALE_INDEX)
    assert parity.rows == len(features) and parity.max_rel_diff < export.PARITY_RTOL
    values = export.run_quantiles(session, features, LEVELS)
    assert values.shape == (len(features), 3)
    assert values[:, 0].mean() < values[:, 1].mean() < values[:, 2].mean()  # the heads differ


def test_quantile_outputs_are_monotone_even_where_the_heads_cross() -> None:
    """Heads given in the wrong order (the 0.9 head as the lowest level) cross on every row; the graph's
    running maximum still gives non-decreasing outputs, and exactly `quantiles.monotone` of the heads."""
    _, features = fitted("poisson")
    crossing = quantile_heads(features, (0.9, 0.5, 0.1))
    raw = np.column_stack([np.maximum(h.predict(features), 0) for h in crossing]) * features[:, [SCALE_INDEX]]
    assert (raw[:, 0] > raw[:, 2]).mean() > 0.5  # the raw heads do cross
    point = export.to_onnx_model(fitted("poisson")[0], features.shape[1], SCALE_INDEX)
    model = export.append_quantile_outputs(point, crossing, LEVELS, SCALE_INDEX)
    session = export.onnx_session(model.SerializeToString())
    values = export.run_quantiles(session, features, LEVELS)
    assert (np.diff(values, axis=1) >= 0).all()
    export.check_quantile_parity(session, crossing, LEVELS, features, SCALE_INDEX)
    np.testing.assert_allclose(
        values[:, 2], raw.max(axis=1), rtol=export.PARITY_RTOL, atol=export.PARITY_ATOL
    )


def test_quantile_parity_names_the_output_that_differs() -> None:
    estimator, features = fitted("poisson")
    heads = quantile_heads(features)
    point = export.to_onnx_model(estimator, features.shape[1], SCALE_INDEX)
    model = export.append_quantile_outputs(point, heads, LEVELS, SCALE_INDEX)
    session = export.onnx_session(model.SerializeToString())
    swapped = [heads[0], heads[2], heads[1]]  # what the graph computes for q0.5 is not this head's
    with pytest.raises(export.ParityError, match=r"output q0\.5"):
        export.check_quantile_parity(session, swapped, LEVELS, features, SCALE_INDEX)


def test_lightgbm_thresholds_between_neighbouring_float32_values_keep_their_side() -> None:
    """LightGBM splits half-way between two neighbouring float32 values; rounded to the nearest float32
    that threshold can become the upper value, which ONNX then sends the wrong way."""
    rng = np.random.default_rng(0)
    index = rng.integers(0, 40, size=4000)
    features = np.ones((4000, 2), dtype=np.float32)  # column 1 (the scale) stays 1
    features[:, 0] = np.float32(1.0) + index.astype(np.float32) * np.spacing(np.float32(1.0))
    target = 1.0 + 10.0 * (index % 2).astype(np.float64)  # a step between every two neighbours
    params = {**DEFAULT_PARAMS[LIGHTGBM], "loss": "squared_error", "min_samples_leaf": 5, "max_iter": 60}
    estimator = fit(params, features, target, seed=0)
    session = export.onnx_session(export.to_onnx_model(estimator, 2, SCALE_INDEX).SerializeToString())
    export.check_parity(session, estimator, features, SCALE_INDEX)
    kept = export.float32_thresholds(estimator)
    np.testing.assert_array_equal(kept.predict(features), estimator.predict(features))
