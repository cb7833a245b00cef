"""Statistics on cases whose answers are known by hand."""

import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr

from privstudy.stats import intervals
from privstudy.stats import ranks as stats


def test_six_point_auc_of_a_loss_threshold_attack():
    # Members have lower loss; score = -loss. Of 36 member/non-member pairs, the member wins 29
    # and 2 tie (1.3 vs 1.3 and 0.4 vs 0.4): AUC = (29 + 0.5 * 2) / 36 = 0.8333.
    members = np.array([0.1, 0.2, 1.3, 0.4, 0.5, 0.6])
    nonmembers = np.array([1.1, 1.2, 1.3, 0.4, 1.5, 1.6])
    scores = -np.concatenate([members, nonmembers])
    labels = np.r_[np.ones(6, bool), np.zeros(6, bool)]
    assert stats.auc(scores, labels) == pytest.approx(30 / 36)
    assert round(stats.auc(scores, labels), 2) == 0.83


def test_perfectly_separated_scores_give_auc_one_and_reversed_zero():
    labels = np.r_[np.ones(5, bool), np.zeros(5, bool)]
    scores = np.r_[np.arange(10, 15), np.arange(5)].astype(float)
    assert stats.auc(scores, labels) == 1.0
    assert stats.auc(-scores, labels) == 0.0


def test_identical_distributions_give_auc_near_half():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=20000)
    labels = rng.random(20000) < 0.5
    # Standard error of the AUC here is about 0.004; 0.02 is five of them.
    assert abs(stats.auc(scores, labels) - 0.5) < 0.02


def test_auc_with_one_class_is_nan():
    assert np.isnan(stats.auc(np.arange(3.0), np.ones(3, bool)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_ranks_match_scipy_with_and_without_an_order(seed):
    v = np.random.default_rng(seed).integers(0, 20, 500).astype(float)
    np.testing.assert_allclose(stats.average_ranks(v), rankdata(v))
    order = np.lexsort((np.arange(500)[::-1], v))  # any order that sorts v
    np.testing.assert_allclose(stats.average_ranks(v, order), rankdata(v))


def test_spearman_matches_scipy_and_handles_constants():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 30, 300), rng.normal(size=300)
    assert stats.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert stats.spearman(np.arange(10), np.arange(10) ** 3) == pytest.approx(1.0)
    assert np.isnan(stats.spearman(np.ones(5), np.arange(5)))


def test_mean_interval_by_hand():
    # mean 2, sd 1, n 3: half-width t(0.975, 2) * 1 / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    m, lo, hi, n = intervals.mean_interval(np.array([1.0, 2.0, 3.0]))
    assert (m, n) == (2.0, 3)
    assert hi - m == pytest.approx(2.484138, abs=1e-6)
    assert m - lo == pytest.approx(2.484138, abs=1e-6)
    assert intervals.mean_interval(np.array([4.0])) == (4.0, 4.0, 4.0, 1)
    assert intervals.mean_interval(np.array([np.nan]))[3] == 0


def _near_ties(rng, n):
    # Values equal in exact arithmetic come out a few ulps apart in floats: x.w on an integer grid.
    x = rng.integers(0, 40, size=(n, 2)).astype(float)
    return np.abs(x @ np.array([0.7, -0.7 * (1 + 1e-15)]) + 0.1)


@pytest.mark.parametrize("case", ["normal", "few_values", "specials", "low_bits", "near_ties", "one", "two"])
def test_stable_order_is_the_stable_argsort(case):
    rng = np.random.default_rng(4)
    n = 5000
    v = {
        "normal": lambda: rng.normal(size=n),
        "few_values": lambda: rng.integers(-3, 3, size=n).astype(float),
        # -0.0 and 0.0 compare equal, so they are ties kept in index order.
        "specials": lambda: rng.choice([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, 5e-324, -5e-324, 1e300], n),
        # Values differing only in their last bits, which the first sort's keys do not hold.
        "low_bits": lambda: (1 + rng.integers(0, 64, size=n) * np.finfo(float).eps) * rng.choice([1, -1], n),
        "near_ties": lambda: _near_ties(rng, n),
        "one": lambda: np.array([2.0]),
        "two": lambda: np.array([1.0, 1.0]),
    }[case]()
    np.testing.assert_array_equal(stats.stable_order(v), np.argsort(v, kind="stable"))


def test_stable_order_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        stats.stable_order(np.array([1.0, np.nan, 0.0]))


def test_average_ranks_accept_the_sorted_values():
    v = np.random.default_rng(5).integers(0, 9, 300).astype(float)
    order = stats.stable_order(v)
    np.testing.assert_allclose(stats.average_ranks(v, order, v[order]), rankdata(v))


def test_average_ranks_of_ints_count_like_scipy():
    keys = np.random.default_rng(6).integers(0, 50, 2000)
    np.testing.assert_array_equal(stats.average_ranks_of_ints(keys), rankdata(keys))
    assert stats.average_ranks_of_ints(np.array([], dtype=np.int64)).size == 0


@pytest.mark.parametrize("case", ["distinct", "near_ties", "signed"])
def test_stable_order_returns_the_sorted_values(case):
    rng = np.random.default_rng(7)
    v = {
        "distinct": lambda: rng.normal(size=3000),  # one sort decides
        "near_ties": lambda: _near_ties(rng, 3000),  # both sorts
        "signed": lambda: np.r_[_near_ties(rng, 3000) - 20, -0.0, 0.0, -np.inf, np.inf],
    }[case]()
    order, sorted_values = stats.stable_order(v, return_sorted=True)
    np.testing.assert_array_equal(order, np.argsort(v, kind="stable"))
    want = v[order] + 0.0  # -0.0 comes back as +0.0
    np.testing.assert_array_equal(sorted_values.view(np.uint64), want.view(np.uint64))
