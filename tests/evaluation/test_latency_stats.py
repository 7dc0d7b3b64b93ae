"""Spread of latency repeats and the cautions of a speed-up: noisy repeats, above-ideal figures, unknown spread."""

from __future__ import annotations

import pytest

from optimum_depth.evaluation.latency_stats import WIDE_SPREAD, Spread, repeat_cautions, speedup_summary


def test_spread_of_repeats():
    spread = Spread.of([2.0, 1.0, 4.0, 3.0, 5.0])
    assert (spread.median, spread.minimum, spread.maximum, spread.count) == (3.0, 1.0, 5.0, 5)
    assert (spread.q1, spread.q3) == (2.0, 4.0)
    assert spread.relative == pytest.approx(4 / 3) and spread.judged and spread.wide
    single = Spread.of([0.5])
    assert (single.q1, single.q3, single.relative, single.judged) == (0.5, 0.5, 0.0, False)
    assert Spread.of([]) is None
    assert Spread.of([1.0, 1.0, 1.0 + 0.99 * WIDE_SPREAD]).wide is False  # (max - min) / median below the threshold
    assert Spread.of([1.0, 1.0, 1.0 + 1.01 * WIDE_SPREAD]).wide is True


def test_quiet_repeats_give_the_figures_and_no_caution():
    row = speedup_summary(1.0, 0.8, [1.0, 1.01, 0.99], [0.8, 0.8, 0.81], ideal=1.3, batch_size=1)
    assert row["speedup"] == pytest.approx(1.25) and row["fraction_of_ideal"] == pytest.approx(1.25 / 1.3)
    assert row["paired_speedup"] == pytest.approx(1.25)
    assert row["paired_speedup_min"] == pytest.approx(0.99 / 0.81)
    assert row["paired_speedup_max"] == pytest.approx(1.01 / 0.8)
    assert row["dense_spread"]["maximum"] == 1.01 and row["pruned_spread"]["count"] == 3
    assert (row["noisy"], row["above_ideal"], row["cautions"]) == (False, False, [])


def test_one_slow_repeat_makes_the_figure_noisy_but_not_the_median():
    # Round 2's dense call met a burst of load: +60%.
    row = speedup_summary(1.0, 0.8, [1.0, 1.6, 0.99], [0.8, 0.8, 0.81], ideal=1.3, batch_size=1)
    assert row["speedup"] == pytest.approx(1.25)  # the median ignores one outlier
    assert row["noisy"] is True and row["above_ideal"] is False
    (caution,) = row["cautions"]
    assert caution.startswith("noisy: the repeats spread by up to 62% of their median (dense 0.990-1.600 s")
    assert "per-round speed-ups 1.22x-2.00x" in caution


def test_a_speedup_above_the_ideal_is_flagged_and_explained_by_batch_size():
    # Every dense call slower (the machine was busier while the dense model ran): quiet repeats, impossible ratio.
    row = speedup_summary(1.9, 1.0, [1.9, 1.92, 1.91], [1.0, 1.01, 1.0], ideal=1.267, batch_size=1)
    assert row["noisy"] is False and row["above_ideal"] is True
    (caution,) = row["cautions"]
    assert caution.startswith("above ideal: 1.901x is 150.0% of the ideal 1.267x")
    assert "uneven machine load" in caution and "not to a real gain" in caution
    batch8 = speedup_summary(1.3, 1.0, [1.3, 1.3], [1.0, 1.0], ideal=1.267, batch_size=8)
    assert batch8["above_ideal"] is True and "attention over the KV cache" in batch8["cautions"][0]
    # The paired figure counts too: here the median ratio is below the ideal, the paired median above it.
    paired = speedup_summary(1.1, 1.0, [1.0, 1.3, 1.1], [1.0, 0.9, 0.8], ideal=1.3, batch_size=1)
    assert paired["speedup"] < 1.3 < paired["paired_speedup"] and paired["above_ideal"] is True
    assert speedup_summary(2.0, 1.0, [2.0, 2.0], [1.0, 1.0], ideal=None, batch_size=1)["above_ideal"] is None


def test_unknown_spread_is_said_not_hidden():
    old = speedup_summary(1.0, 0.9, [], [], ideal=1.3, batch_size=1)  # a file written before repeats were kept
    assert old["noisy"] is None and old["paired_speedup"] is None and old["dense_spread"] is None
    assert old["cautions"] == ["noisy?: the repeats were not recorded, so nothing shows how noisy the machine was."]
    once = speedup_summary(1.0, 0.9, [1.0], [0.9], ideal=1.3, batch_size=1)
    assert once["noisy"] is None and once["cautions"][0].startswith("noisy?: one timed repeat")
    assert repeat_cautions([1.0])[0].startswith("noisy?: one timed repeat")
    assert repeat_cautions([]) == old["cautions"]
    assert repeat_cautions([1.0, 1.02, 0.99]) == []
    assert repeat_cautions([1.0, 1.5, 0.99])[0].startswith("noisy: the 3 repeats spread by 51% of their median")
