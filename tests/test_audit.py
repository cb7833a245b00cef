"""DP audits: known answers from reference implementations, and their confidence measured by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privstudy.mia.audit import (
    epsilon_lower_bound,
    many_run_audit,
    one_run_audit,
    one_run_epsilon,
    one_run_p_value,
)


@pytest.mark.parametrize(
    "m, r, v, p, want",
    [
        # jax_privacy's tests/auditing_test.py (test_epsilon_one_run_close): 10,000 in and 10,000 out canaries
        # with deterministic normal scores shifted by 1, 2, 4, delta 1e-6, significance 0.05 Bonferroni-split
        # over its thresholds; these are the winning thresholds' (m, r, v, p) and the published epsilons.
        (20000, 3376, 2807, 0.05 / 386, 1.13346),
        (20000, 4666, 4499, 0.05 / 374, 2.311945),
        (20000, 8233, 8223, 0.05 / 140, 4.395568),
    ],
)
def test_one_run_epsilon_matches_the_reference_implementation(m, r, v, p, want):
    assert one_run_epsilon(m, r, v, 1e-6, p) == pytest.approx(want, rel=1e-5)


def test_one_run_epsilon_by_hand_when_every_guess_is_right():
    # delta 0, v = r: p-value q^r = p, so eps = logit(p^(1/r)); r = 100, p = 0.05 gives 3.492965.
    q = 0.05 ** (1 / 100)
    assert one_run_epsilon(100, 100, 100, 0.0, 0.05) == pytest.approx(math.log(q / (1 - q)), abs=1e-6)
    assert one_run_epsilon(100, 10, 5, 0.0, 0.05) == 0.0  # chance-level guessing proves nothing
    assert one_run_p_value(100, 10, 0, 1.0, 1e-3) == 1.0


def test_clopper_pearson_bound_matches_the_published_audit():
    # Jagielski et al.'s audit: 500 of 500 poisoned models flagged, 0 of 500 clean, 99% confidence: 4.5419.
    assert epsilon_lower_bound(500, 500, 0, 500, 0.0, 0.01) == pytest.approx(4.541915810224077, rel=1e-9)
    # The delta-aware form: ln((1 - FNR_ub - delta) / FPR_ub), FNR_ub = 0.601679, FPR_ub = 0.112835 (by hand
    # from the beta quantiles at 0.025).
    assert epsilon_lower_bound(50, 100, 5, 100, 0.01, 0.05) == pytest.approx(
        math.log((1 - 0.601678870496699 - 0.01) / 0.11283491110546275), rel=1e-9
    )


EPS_TRUE = 5.0
Q = math.exp(EPS_TRUE) / (1 + math.exp(EPS_TRUE))  # randomized response: the truth told with probability Q


def test_fixed_test_bound_holds_its_confidence_on_randomized_response():
    """An exactly 5-DP mechanism (randomized response), 1,000 members and 1,000 non-members, the test
    "output is 1" fixed in advance: the 95% bound exceeds 5 in at most 5% of 4,000 draws."""
    rng = np.random.default_rng(0)
    draws = 4000
    tp, fp = rng.binomial(1000, Q, draws), rng.binomial(1000, 1 - Q, draws)
    over = np.mean(
        [epsilon_lower_bound(int(a), 1000, int(b), 1000, 0.0, 0.05) > EPS_TRUE for a, b in zip(tp, fp)]
    )
    assert over <= 0.05, over


def test_many_run_audit_holds_its_confidence_and_finds_real_leakage():
    rng = np.random.default_rng(1)
    over = []
    for _ in range(1000):
        pos, neg = rng.random(600) < Q, rng.random(600) < 1 - Q  # one randomized-response bit per model
        over.append(
            many_run_audit(pos.astype(float), neg.astype(float), seed=int(rng.integers(1 << 30)))["eps_lb"]
            > EPS_TRUE
        )
    assert np.mean(over) <= 0.05, np.mean(over)
    # No signal (huge noise): the bound stays at 0 or near it; strong signal: clearly above 0.
    null = many_run_audit(rng.normal(size=2000), rng.normal(size=2000))
    assert null["eps_lb"] < 0.3, null
    strong = many_run_audit(rng.normal(4, 1, 2000), rng.normal(size=2000))
    assert strong["eps_lb"] > 2.0, strong


def test_one_run_audit_holds_its_confidence_on_randomized_response():
    """1,000 canaries, each included with probability 1/2; the auditor sees a randomized-response bit of
    each and guesses on all of them (k+ = ones, k- = zeros): the 95% bound exceeds 5 in at most 5% of
    draws."""
    rng = np.random.default_rng(2)
    over = []
    for _ in range(400):
        included = rng.random(1000) < 0.5
        bit = np.where(rng.random(1000) < Q, included, ~included)
        k_plus = int(bit.sum())
        over.append(
            one_run_audit(
                bit.astype(float) + rng.random(1000) * 1e-3, included, [(k_plus, 1000 - k_plus)], delta=0.0
            )["eps_lb"]
            > EPS_TRUE
        )
    assert np.mean(over) <= 0.05, np.mean(over)


def test_one_run_audit_on_scores_without_and_with_signal():
    rng = np.random.default_rng(3)
    included = rng.random(1000) < 0.5
    guesses = [(100, 100), (50, 0), (200, 200)]
    assert one_run_audit(rng.normal(size=1000), included, guesses, delta=1e-5)["eps_lb"] < 0.5
    strong = np.where(included, rng.normal(5, 1, 1000), rng.normal(0, 1, 1000))
    out = one_run_audit(strong, included, guesses, delta=1e-5)
    assert out["eps_lb"] > 1.5 and out["v"] == out["r"], out
