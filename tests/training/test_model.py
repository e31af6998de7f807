from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retail_forecast.training.model import (
    DEFAULT_LEARNER,
    DEFAULT_PARAMS,
    DEFAULT_TWEEDIE_POWER,
    HIST_GRADIENT_BOOSTING,
    LEARNERS,
    LIGHTGBM,
    ROUNDS_WITHOUT_IMPROVEMENT,
    SEARCHED_LOSSES,
    cpu_quota,
    fit,
    fitted_rounds,
    make_estimator,
    search_plan,
    training_threads,
)


@pytest.mark.parametrize(
    ("line", "cpus"), [("max 100000\n", None), ("150000 100000\n", 1.5), ("400000 100000", 4.0)]
)
def test_a_cgroup_cpu_max_line_gives_its_quota(line: str, cpus: float | None) -> None:
    assert cpu_quota(line) == cpus


@pytest.mark.parametrize(
    ("affinity", "cpu_max", "omp", "threads"),
    [
        (8, "max 100000", None, 8),  # no quota: every CPU the process may run on
        (8, "200000 100000", None, 2),  # a quota of 2 CPUs on an 8-CPU host
        (8, "150000 100000", None, 1),  # a fractional quota rounds down: a throttled thread spins
        (2, "400000 100000", None, 2),  # affinity below the quota
        (8, "50000 100000", None, 1),  # less than one CPU still runs one thread
        (8, None, "3", 3),  # no cgroup file; the user's OMP_NUM_THREADS
        (2, None, "16", 2),  # OMP_NUM_THREADS never raises the count
        (4, None, "junk", 4),
    ],
)
def test_training_threads_follow_affinity_quota_and_omp_num_threads(
    tmp_path: Path, affinity: int, cpu_max: str | None, omp: str | None, threads: int
) -> None:
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max + "\n")
    environ = {} if omp is None else {"OMP_NUM_THREADS": omp}
    assert training_threads(affinity=affinity, cpu_max=path, environ=environ) == threads


def test_training_threads_default_to_this_process_affinity() -> None:
    import os  # noqa: PLC0415

    assert 1 <= training_threads() <= len(os.sched_getaffinity(0))


def test_a_search_draws_from_the_fixed_learners_space_and_starts_from_its_defaults() -> None:
    for learner in LEARNERS:
        plan = search_plan(6, seed=3, fixed={"learner": learner})
        assert plan[0] == DEFAULT_PARAMS[learner]
        assert {p["learner"] for p in plan} == {learner}
        assert {p["loss"] for p in plan} <= set(SEARCHED_LOSSES[learner])
    assert search_plan(2, seed=3)[0]["learner"] == DEFAULT_LEARNER


def test_an_unknown_learner_or_a_loss_the_learner_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown learner"):
        search_plan(1, seed=0, fixed={"learner": "xgboost"})
    with pytest.raises(ValueError, match="no tweedie loss"):
        make_estimator({**DEFAULT_PARAMS[HIST_GRADIENT_BOOSTING], "loss": "tweedie"}, seed=0)


def test_lightgbm_gets_the_shared_parameters_under_its_own_names() -> None:
    params = {
        **DEFAULT_PARAMS[LIGHTGBM],
        "loss": "tweedie",
        "tweedie_variance_power": 1.3,
        "max_leaf_nodes": 31,
    }
    estimator = make_estimator(params, seed=5)
    expected = {
        "objective": "tweedie",
        "tweedie_variance_power": 1.3,
        "num_leaves": 31,
        "min_child_samples": params["min_samples_leaf"],
        "reg_lambda": params["l2_regularization"],
        "colsample_bytree": params["max_features"],
        "n_estimators": params["max_iter"],
        "random_state": 5,
    }
    assert {name: estimator.get_params()[name] for name in expected} == expected


@pytest.mark.parametrize("learner", LEARNERS)
def test_both_learners_stop_early_on_held_out_rows(learner: str) -> None:
    """Pure noise: held-out loss stops improving at once, so neither learner runs all its rounds."""
    rng = np.random.default_rng(0)
    features = rng.uniform(size=(4000, 5)).astype(np.float32)
    target = rng.poisson(3.0, size=4000).astype(np.float64)
    estimator = fit({**DEFAULT_PARAMS[learner], "max_iter": 300}, features, target, seed=0)
    rounds = estimator.n_iter_ if learner == HIST_GRADIENT_BOOSTING else estimator.best_iteration_
    assert 0 < rounds < 300 - ROUNDS_WITHOUT_IMPROVEMENT
    assert np.all(np.asarray(estimator.predict(features)) > 0)  # Poisson(3)'s median and mean are positive


@pytest.mark.parametrize("learner", LEARNERS)
def test_a_refit_runs_the_rounds_early_stopping_found_on_every_row(learner: str) -> None:
    """The final refit reuses the holdout fit's round count: no held-out rows, no early stopping."""
    rng = np.random.default_rng(1)
    features = rng.uniform(size=(4000, 5)).astype(np.float32)
    target = rng.poisson(1.0 + 4.0 * features[:, 0]).astype(np.float64)
    params = {**DEFAULT_PARAMS[learner], "max_iter": 300}
    rounds = fitted_rounds(fit(params, features, target, seed=0))
    assert 0 < rounds < 300
    refit = fit(params, features, target, seed=0, rounds=rounds)
    assert fitted_rounds(refit) == rounds
    if learner == HIST_GRADIENT_BOOSTING:
        assert not refit.do_early_stopping_ and refit.n_iter_ == rounds
    else:
        assert refit.booster_.num_trees() == rounds and not refit.evals_result_


def test_a_fixed_tweedie_loss_keeps_its_default_variance_power() -> None:
    estimator = make_estimator({**DEFAULT_PARAMS[LIGHTGBM], "loss": "tweedie"}, seed=0)
    assert estimator.get_params()["tweedie_variance_power"] == DEFAULT_TWEEDIE_POWER


@pytest.mark.parametrize(("loss", "center"), [(None, 3.0), ("absolute_error", 0.0), ("poisson", 3.0)])
def test_lightgbm_forecasts_the_mean_by_default_and_the_median_with_the_absolute_error(
    loss: str | None, center: float
) -> None:
    """Intermittent demand: 0 on 70 % of days, else 10. The default (tweedie) and poisson forecast the
    mean (3), the volume sold; the absolute error finds the median (0), which WAPE prefers."""
    rng = np.random.default_rng(0)
    features = rng.uniform(size=(4000, 3)).astype(np.float32)
    target = np.where(rng.random(4000) < 0.7, 0.0, 10.0)
    params = DEFAULT_PARAMS[LIGHTGBM] if loss is None else {**DEFAULT_PARAMS[LIGHTGBM], "loss": loss}
    predicted = np.asarray(fit(params, features, target, seed=0).predict(features))
    assert abs(float(np.median(predicted)) - center) < 0.5
