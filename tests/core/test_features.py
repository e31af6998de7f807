from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retail_forecast.core import features as feat
from retail_forecast.core.data import Panel, build_panel, validate_sales
from retail_forecast.core.schema import Freq
from retail_forecast.training.synth import synthesize


def make_panel(freq: Freq, periods: int, seed: int = 0) -> Panel:
    frame = validate_sales(synthesize(stores=2, items=4, periods=periods, freq=freq, seed=seed))
    panel, _ = build_panel(frame, freq)
    return panel


def triples(panel: Panel, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    spec = feat.spec_for(panel.freq)
    valid = feat.valid_origins(panel, spec)
    series, origin = np.nonzero(valid[:, : panel.n_periods - horizon])
    series, origin = np.repeat(series, horizon), np.repeat(origin, horizon)
    horizons = np.tile(np.arange(1, horizon + 1), len(series) // horizon)
    return series, origin, horizons


@pytest.mark.parametrize(("freq", "periods", "horizon"), [(Freq.DAILY, 200, 28), (Freq.WEEKLY, 120, 8)])
def test_no_feature_reads_sales_after_the_origin(freq: Freq, periods: int, horizon: int) -> None:
    """Scramble every sale after each origin: a leak-free row must not change at all."""
    panel = make_panel(freq, periods)
    spec = feat.spec_for(freq)
    rng = np.random.default_rng(1)
    origins = np.unique(triples(panel, horizon)[1])
    checked = 0
    for origin in rng.choice(origins, size=6, replace=False):
        series = np.arange(panel.n_series)
        valid = feat.valid_origins(panel, spec)[:, origin]
        series = series[valid]
        s = np.repeat(series, horizon)
        o = np.full(len(s), origin)
        h = np.tile(np.arange(1, horizon + 1), len(series))
        before = feat.build_features(panel, s, o, h)

        future = panel.sales.copy()
        future[:, origin + 1 :] = rng.uniform(0, 1e6, size=future[:, origin + 1 :].shape)
        scrambled = Panel(
            panel.freq,
            panel.dates,
            panel.store_ids,
            panel.item_ids,
            future,
            panel.price,
            panel.promo,
            panel.event,
        )
        np.testing.assert_array_equal(feat.build_features(scrambled, s, o, h), before)

        # The converse: the same scramble at or before the origin must change sales features.
        past = panel.sales.copy()
        past[:, origin - spec.min_history + 1 : origin + 1] *= 3.0
        past[:, origin] += 5.0
        changed = Panel(
            panel.freq,
            panel.dates,
            panel.store_ids,
            panel.item_ids,
            past,
            panel.price,
            panel.promo,
            panel.event,
        )
        assert not np.array_equal(feat.build_features(changed, s, o, h), before)
        checked += len(s)
    assert checked > 0


@pytest.mark.parametrize(("freq", "periods", "horizon"), [(Freq.DAILY, 200, 28), (Freq.WEEKLY, 120, 8)])
def test_no_feature_reads_sales_before_the_min_history_window(freq: Freq, periods: int, horizon: int) -> None:
    """A serving request carries only `min_history` periods: older sales must not change any feature."""
    panel = make_panel(freq, periods)
    spec = feat.spec_for(freq)
    origin = periods - horizon - 1
    first = origin - spec.min_history + 1
    assert first > 0
    series = np.repeat(np.arange(panel.n_series), horizon)
    o = np.full(len(series), origin)
    h = np.tile(np.arange(1, horizon + 1), panel.n_series)

    def features(sales: np.ndarray) -> np.ndarray:
        changed = Panel(
            panel.freq,
            panel.dates,
            panel.store_ids,
            panel.item_ids,
            sales,
            panel.price,
            panel.promo,
            panel.event,
        )
        return feat.build_features(changed, series, o, h)

    old = panel.sales.copy()
    old[:, :first] = np.random.default_rng(2).uniform(0, 1e6, size=old[:, :first].shape)
    np.testing.assert_array_equal(features(old), features(panel.sales))


def test_covariates_are_read_at_the_target_period() -> None:
    panel = make_panel(Freq.DAILY, 120)
    spec = feat.spec_for(Freq.DAILY)
    names = spec.names
    promo = panel.promo.copy()
    promo[0, 100] = 1.0
    promo[0, 99] = 0.0
    event = panel.event.copy()
    event[0, 100] = True
    price = panel.price.copy()
    price[0, 100] = price[0, 90] * 0.5
    panel = Panel(panel.freq, panel.dates, panel.store_ids, panel.item_ids, panel.sales, price, promo, event)
    row = feat.build_features(panel, np.array([0]), np.array([90]), np.array([10]))[0]
    assert row[names.index("horizon")] == 10
    assert row[names.index("promo_target")] == 1.0
    assert row[names.index("event_target")] == 1.0
    assert row[names.index("price_vs_origin")] == pytest.approx(0.5)
    assert row[names.index("target_weekday")] == panel.dates[100].day_of_week
    assert row[names.index("target_day_of_year")] == panel.dates[100].day_of_year


def test_sales_features_are_relative_to_the_series_level() -> None:
    panel = make_panel(Freq.DAILY, 120)
    spec = feat.spec_for(Freq.DAILY)
    s, o, h = np.array([1]), np.array([100]), np.array([3])
    row = feat.build_features(panel, s, o, h)[0]
    level = panel.sales[1, 100 - spec.level_window + 1 : 101].mean()
    scale = max(level, feat.SCALE_FLOOR)
    assert row[spec.scale_index] == pytest.approx(scale, rel=1e-6)
    assert row[spec.names.index("lag_0")] == pytest.approx(panel.sales[1, 100] / scale, rel=1e-6)
    assert row[spec.names.index("lag_13")] == pytest.approx(panel.sales[1, 87] / scale, rel=1e-6)
    # Target day 103: the same weekday last week is day 96, four weeks back day 75.
    assert row[spec.names.index("same_phase_1")] == pytest.approx(panel.sales[1, 96] / scale, rel=1e-6)
    assert row[spec.names.index("same_phase_4")] == pytest.approx(panel.sales[1, 75] / scale, rel=1e-6)
    assert row[spec.names.index("mean_7")] == pytest.approx(panel.sales[1, 94:101].mean() / scale, rel=1e-6)
    assert row.dtype == np.float32
    assert len(row) == len(spec.names)


@pytest.mark.parametrize("season", [7, 52])
def test_same_phase_offset_never_reaches_past_the_origin(season: int) -> None:
    horizon = np.arange(1, 3 * season + 1)
    for back in (1, 2, 3):
        offset = feat.same_phase_offset(horizon, season, back)
        assert (offset <= 0).all()
        assert ((horizon - offset) % season == 0).all()  # same phase as the target
        assert (offset > -season * back).all()  # the most recent such period


def test_baselines_match_their_definitions() -> None:
    panel = make_panel(Freq.WEEKLY, 120)
    s, o, h = np.array([2, 2]), np.array([80, 80]), np.array([1, 8])
    np.testing.assert_array_equal(feat.seasonal_naive(panel, s, o, h), panel.sales[2, [81 - 52, 88 - 52]])
    np.testing.assert_allclose(feat.moving_average(panel, s, o), panel.sales[2, 77:81].mean())


def test_origins_without_full_history_are_refused() -> None:
    panel = make_panel(Freq.DAILY, 120)
    spec = feat.spec_for(Freq.DAILY)
    valid = feat.valid_origins(panel, spec)
    assert not valid[:, : spec.min_history - 1].any()
    with pytest.raises(ValueError, match="periods of history"):
        feat.build_features(panel, np.array([0]), np.array([spec.min_history - 2]), np.array([1]))
    with pytest.raises(ValueError, match="calendar"):
        feat.build_features(panel, np.array([0]), np.array([panel.n_periods - 1]), np.array([1]))


def test_late_starting_series_has_no_valid_origin_before_min_history() -> None:
    dates = pd.date_range("2024-01-01", periods=100, freq="D")
    frame = validate_sales(
        pd.concat(
            [
                pd.DataFrame({"date": dates, "store_id": "a", "item_id": "x", "sales": 1.0}),
                pd.DataFrame({"date": dates[30:], "store_id": "b", "item_id": "x", "sales": 1.0}),
            ]
        )
    )
    panel, _ = build_panel(frame)
    spec = feat.spec_for(Freq.DAILY)
    valid = feat.valid_origins(panel, spec)
    assert np.flatnonzero(valid[0])[0] == spec.min_history - 1
    assert np.flatnonzero(valid[1])[0] == 30 + spec.min_history - 1


@pytest.mark.parametrize("freq", list(Freq))
def test_the_schema_this_code_computes_is_compatible(freq: Freq) -> None:
    assert feat.schema_mismatch(freq, feat.SPEC_VERSION, feat.spec_for(freq).names) is None


def test_another_spec_version_is_refused_naming_both_versions() -> None:
    names = feat.spec_for(Freq.DAILY).names
    message = feat.schema_mismatch(Freq.DAILY, "fs0", names)
    assert message is not None
    assert f"model built with feature spec fs0, this code computes {feat.SPEC_VERSION} " in message
    assert "the same feature names" in message and "image of the release that trained it" in message


def test_a_renamed_feature_under_the_same_version_is_refused_naming_it() -> None:
    names = feat.spec_for(Freq.WEEKLY).names
    renamed = [*names[:3], "lag_renamed", *names[4:]]
    message = feat.schema_mismatch(Freq.WEEKLY, feat.SPEC_VERSION, renamed)
    assert message is not None
    assert f"feature 3 is 'lag_renamed' in the model, {names[3]!r} here" in message


def test_a_missing_or_extra_trailing_feature_is_refused() -> None:
    names = feat.spec_for(Freq.DAILY).names
    shorter = feat.schema_mismatch(Freq.DAILY, feat.SPEC_VERSION, names[:-1])
    assert shorter is not None
    assert f"({len(names) - 1} vs {len(names)} features; feature {len(names) - 1} is nothing" in shorter
    longer = feat.schema_mismatch(Freq.DAILY, feat.SPEC_VERSION, [*names, "extra"])
    assert longer is not None and f"feature {len(names)} is 'extra' in the model, nothing here" in longer


def test_daily_features_are_not_the_weekly_schema() -> None:
    """The schema is the frequency's: a daily model's names are not what a weekly forecast computes."""
    assert feat.schema_mismatch(Freq.WEEKLY, feat.SPEC_VERSION, feat.spec_for(Freq.DAILY).names) is not None
