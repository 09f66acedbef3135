"""engine.stats.local_threshold: how many local labeled cases a re-chosen threshold needs."""

from __future__ import annotations

import numpy as np
import pytest

from breastus_cli.engine.stats.local_threshold import (local_threshold_study, markdown_table,
                                                        stratified_draw)


def test_stratified_draw_keeps_the_class_proportions_and_no_case_twice():
    y = np.array([1] * 40 + [0] * 60)
    drawn = stratified_draw(y, 20, np.random.default_rng(0))
    assert len(set(drawn.tolist())) == 20
    assert int(y[drawn].sum()) == 8  # 40% of 20


def test_separable_scores_with_one_malignant_level_reach_the_target_in_every_draw():
    # every malignant case scores 0.9, every benign 0.1: any draw's threshold is 0.9, which
    # calls every remaining malignant case and no benign one
    y = np.array([1] * 30 + [0] * 70)
    p = np.where(y == 1, 0.9, 0.1)
    rows = local_threshold_study(y, p, [10, 40], target=1.0, tolerance=0.0, repeats=50)
    for row in rows:
        assert (row.within, row.median, row.low, row.high, row.median_specificity) == (
            1.0, 1.0, 1.0, 1.0, 1.0)
    assert [r.n_malignant for r in rows] == [3, 12]


def test_more_local_cases_land_closer_to_the_target_on_overlapping_scores():
    rng = np.random.default_rng(1)
    y = np.array([1] * 400 + [0] * 600)
    logit = np.where(y == 1, rng.normal(1.0, 1.0, 1000), rng.normal(0.0, 1.0, 1000))
    p = 1.0 / (1.0 + np.exp(-logit))
    small, large = local_threshold_study(y, p, [10, 400], target=0.9, repeats=100, seed=3)
    assert large.within > small.within
    assert large.high - large.low < small.high - small.low
    assert abs(large.median - 0.9) < 0.03
    # seeded: the same call gives the same numbers
    again = local_threshold_study(y, p, [10, 400], target=0.9, repeats=100, seed=3)
    assert [small, large] == again
    assert "| 400 (160) |" in markdown_table([small, large], 0.9, 0.05)


def test_bad_sizes_are_refused():
    y = np.array([1, 1, 0, 0, 0])
    with pytest.raises(ValueError, match="n must lie in 2..3"):
        local_threshold_study(y, np.linspace(0, 1, 5), [4])
