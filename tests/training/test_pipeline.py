from __future__ import annotations

import numpy as np

from retail_forecast.core import features as feat
from retail_forecast.core.data import build_panel, validate_sales
from retail_forecast.core.schema import Freq
from retail_forecast.training.pipeline import evaluation_rows
from retail_forecast.training.synth import synthesize


def test_search_evaluation_rows_are_the_full_rows_of_the_sampled_series_only() -> None:
    frame = validate_sales(synthesize(stores=2, items=10, periods=200, freq=Freq.DAILY, seed=2))
    panel, _ = build_panel(frame, Freq.DAILY)
    valid = feat.valid_origins(panel, feat.spec_for(Freq.DAILY))
    origin = panel.n_periods - 1 - 14
    every = set(zip(*evaluation_rows(panel, valid, origin, 14), strict=True))
    among = np.array([0, 3, 11, 19], dtype=np.int64)
    sampled = list(zip(*evaluation_rows(panel, valid, origin, 14, among), strict=True))
    assert len(sampled) == len(set(sampled))
    assert set(sampled) == {row for row in every if row[0] in set(among.tolist())}
    assert {int(s) for s, _, _ in sampled} == {0, 3, 11, 19} & {int(s) for s, _, _ in every}
    assert len(sampled) > 0
