"""SISA's plan, requests, retraining cost and aggregation (privstudy.unlearning.sisa), by known answers."""

from __future__ import annotations

import numpy as np
import pytest

from privstudy.unlearning import sisa


@pytest.mark.parametrize("epochs,slices", [(20, 1), (30, 5), (9, 2), (10, 4), (50, 10), (7, 3)])
def test_stage_epochs_give_every_point_e_epochs_of_work(epochs, slices):
    sched = sisa.stage_epochs(epochs, slices)
    assert len(sched) == slices and min(sched) >= 0
    work = sum(e * r for r, e in enumerate(sched, start=1)) / slices  # stage r trains r of R slices
    e_avg = 2 * epochs / (slices + 1)
    if e_avg == int(e_avg):
        assert work == epochs
    else:  # int() rounding moves at most one epoch per stage boundary
        assert abs(work - epochs) <= slices
    assert sisa.stage_epochs(30, 5) == [10, 10, 10, 10, 10]
    assert sisa.stage_epochs(10, 4) == [4, 4, 4, 4]


def test_plan_covers_every_point_once_in_contiguous_shards():
    plan = sisa.SisaPlan.build(103, 4, 3, epochs=6, seed=1)
    pts = np.concatenate([s.points for s in plan.shards])
    assert sorted(pts) == list(range(103))
    assert list(plan.sizes()) == [26, 26, 26, 25]
    order = np.random.default_rng([1, 0x73697361]).permutation(103)
    np.testing.assert_array_equal(plan.shards[0].points, order[:26])  # contiguous after the shuffle
    with pytest.raises(ValueError, match="at least one point per slice"):
        sisa.SisaPlan.build(5, 3, 2, epochs=1, seed=0)


def test_empty_request_changes_nothing():
    plan = sisa.SisaPlan.build(60, 3, 2, epochs=3, seed=0)
    keys = [[s.key(r) for r in range(3)] for s in plan.shards]
    assert sisa.delete(plan, []) == []
    assert [[s.key(r) for r in range(3)] for s in plan.shards] == keys


def test_a_request_retrains_only_its_shard_from_the_last_unaffected_checkpoint():
    plan = sisa.SisaPlan.build(120, 3, 4, epochs=10, seed=2)  # 40 points per shard, 10 per slice
    target = int(plan.shards[1].slices[2][3])  # shard 1, slice 3 (0-based 2)
    before = [[s.key(r) for r in range(5)] for s in plan.shards]
    (job,) = sisa.delete(plan, [target])
    assert job.shard == 1 and job.from_stage == 2  # resume after stages 1, 2
    # stages 3 and 4 (4 epochs each: e' = 2 * 10 / 5) on 29 and 39 points
    assert job.point_epochs == 4 * 29 + 4 * 39
    after = [[s.key(r) for r in range(5)] for s in plan.shards]
    assert after[0] == before[0] and after[2] == before[2]  # other shards untouched
    assert after[1][:3] == before[1][:3] and after[1][3:] != before[1][3:]
    assert target not in plan.shards[1].points
    assert sisa.delete(plan, [target]) == []  # already gone


def test_single_request_cost_matches_the_cost_model():
    n, s, r, e = 6000, 4, 4, 5  # e' = 2, whole epochs
    rng = np.random.default_rng(3)
    costs = []
    for _ in range(400):
        plan = sisa.SisaPlan.build(n, s, r, epochs=e, seed=int(rng.integers(1 << 30)))
        (job,) = sisa.delete(plan, [int(rng.integers(n))])
        costs.append(job.point_epochs)
    costs = np.array(costs, float)
    predicted = sisa.expected_request_cost(n, s, r, e)  # (2R+1)/(3R) N/S e = 0.75 * 7500
    se = costs.std(ddof=1) / np.sqrt(len(costs))
    # the deleted point itself is not retrained: at most e point-epochs below the model
    assert abs(costs.mean() - predicted) < 4 * se + e


def test_batched_requests_hit_the_expected_number_of_shards():
    n, s, k = 2000, 10, 7
    rng = np.random.default_rng(4)
    points = []
    for _ in range(500):
        plan = sisa.SisaPlan.build(n, s, 1, epochs=1, seed=int(rng.integers(1 << 30)))
        jobs = sisa.delete(plan, sisa.draw_requests("uniform", n, k, rng))
        points.append(sum(j.point_epochs for j in jobs) + k)  # + the deleted points themselves
    points = np.array(points, float)
    se = points.std(ddof=1) / np.sqrt(len(points))
    assert abs(points.mean() - sisa.expected_batch_points(n, s, k)) < 4 * se + 1


def test_request_distributions_have_their_means():
    n, draws = 1000, 200000
    rng = np.random.default_rng(5)
    uni = sisa.draw_requests("uniform", n, draws, rng, distinct=False)
    assert abs(uni.mean() - (n - 1) / 2) < 4 * uni.std() / np.sqrt(draws)
    # exponential: floor of Exp(lambda) is geometric with q = exp(-lambda), truncated to 0..N-1
    q = np.exp(np.log(0.05) / n)
    mean_geo = q / (1 - q) - n * q**n / (1 - q**n)
    ex = sisa.draw_requests("exponential", n, draws, rng, distinct=False)
    assert abs(ex.mean() - mean_geo) < 4 * ex.std() / np.sqrt(draws)
    # pareto: floor of Lomax(a): P(i) = (1 + i)^-a - (2 + i)^-a, truncated to 0..N-1
    i = np.arange(n)
    pmf = (1.0 + i) ** -1.16 - (2.0 + i) ** -1.16
    pmf /= pmf.sum()
    pa = sisa.draw_requests("pareto", n, draws, rng, distinct=False)
    assert abs(pa.mean() - (i * pmf).sum()) < 4 * pa.std() / np.sqrt(draws)
    assert abs((pa == 0).mean() - pmf[0]) < 4 * np.sqrt(pmf[0] * (1 - pmf[0]) / draws)
    distinct = sisa.draw_requests("pareto", n, 300, rng)
    assert len(set(distinct)) == 300


def test_aggregation_by_hand():
    # 3 shard models, 2 points, 3 classes
    probs = np.array(
        [
            [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]],
            [[0.1, 0.45, 0.45], [0.4, 0.35, 0.25]],
            [[0.2, 0.5, 0.3], [0.4, 0.3, 0.3]],
        ]
    )
    # votes: point 0 -> 0, 1, 1 -> class 1; point 1 -> 1, 0, 0 -> class 0
    np.testing.assert_array_equal(sisa.aggregate(probs, "vote"), [1, 0])
    # averages: point 0 -> (0.3, 0.4167, 0.2833) -> 1; point 1 -> (0.333, 0.383, 0.283) -> 1
    np.testing.assert_array_equal(sisa.aggregate(probs, "average"), [1, 1])
    # weights 3, 1, 1 make shard 0 decide the votes
    np.testing.assert_array_equal(sisa.aggregate(probs, "vote", np.array([3.0, 1, 1])), [0, 1])
    np.testing.assert_allclose(sisa.shard_weights(np.array([10, 30]), "proportional"), [0.25, 0.75])
    with pytest.raises(ValueError, match="unknown aggregation"):
        sisa.aggregate(probs, "median")


@pytest.mark.parametrize("arch", ["tabular", "cnn"])
def test_unlearning_is_exact_retrained_shard_equals_training_from_scratch(arch):
    """Delete a point from slice 2 of a shard, resume from stage 1's checkpoint: the weights equal, bit
    for bit, those of the shard trained from scratch on its surviving points (op determinism on), for
    the tabular MLP and the CNN (the CIFAR-10 model; on 8x8 digits here)."""
    import copy

    import tensorflow as tf

    from privstudy.data.images import load_images
    from privstudy.data.tabular import load_tabular
    from privstudy.models.image import build_image_model
    from privstudy.models.tabular import build_tabular_model
    from privstudy.models.training import seed_everything
    from privstudy.unlearning.sisa_train import CheckpointStore, KerasTrainer, train_shard

    seed_everything(0, deterministic=True)
    if arch == "tabular":
        data = load_tabular("digits_binary")
        x, y = data.x[:600].astype(np.float32), data.y[:600]
        build = lambda: build_tabular_model(64, 10, (32,))  # noqa: E731
    else:
        images = load_images("digits")
        x, y = images.x_train[:600].astype(np.float32) / 255.0, images.y_train[:600]
        build = lambda: build_image_model("cnn", x.shape[1:], 10, dropout=0.0)  # noqa: E731
    plan = sisa.SisaPlan.build(600, 2, 3, epochs=3, seed=7)
    trainer = KerasTrainer(build, batch_size=32, learning_rate=1e-3)

    store = CheckpointStore()
    w_before, _ = train_shard(plan.shards[0], 0, plan.schedule(), x, y, trainer, store, seed=1)
    gone = int(plan.shards[0].slices[1][5])
    (job,) = sisa.delete(plan, [gone])
    assert job.shard == 0 and job.from_stage == 1
    w_after, cost = train_shard(plan.shards[0], 0, plan.schedule(), x, y, trainer, store, 1, job.from_stage)
    assert cost.stages == 2 and cost.point_epochs == job.point_epochs
    w_fresh, _ = train_shard(
        copy.deepcopy(plan.shards[0]), 0, plan.schedule(), x, y, trainer, CheckpointStore(), seed=1
    )
    for a, b in zip(w_after, w_fresh):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(w_after, w_before))
    assert len(store.weights) == 5 and store.nbytes > 0  # stages 1-3, then 2-3 again under new keys
    store.keep_only(plan.shards[0].key(r) for r in range(1, 4))
    assert len(store.weights) == 3 and store.peak_nbytes > store.nbytes
    # the shard learnt: after 3 epochs it fits its 300 points above chance (0.1; 0.2 is 6 standard errors)
    acc = (trainer.logits(w_fresh, x[plan.shards[0].points]).argmax(1) == y[plan.shards[0].points]).mean()
    assert acc > 0.2
    tf.keras.backend.clear_session()


@pytest.mark.parametrize("n,s,r,e", [(6000, 4, 4, 5), (1000, 5, 1, 20), (3000, 10, 5, 3), (900, 1, 2, 6)])
def test_expected_cost_reduces_to_the_closed_forms(n, s, r, e):
    # one request: (2R + 1)/(3R) N/S e where e' = 2e/(R + 1) is whole
    if (2 * e) % (r + 1) == 0:
        assert sisa.expected_cost(n, s, r, e) == pytest.approx(sisa.expected_request_cost(n, s, r, e))
    # R = 1, K requests in a batch: N e (1 - (1 - 1/S)^K)
    for k in (1, 3, 40):
        assert sisa.expected_cost(n, s, 1, e, k) == pytest.approx(e * sisa.expected_batch_points(n, s, k))
    # every request lands somewhere: with S = 1, R = 1 a batch retrains everything
    assert sisa.expected_cost(n, 1, 1, e, 7) == pytest.approx(n * e)
    assert sisa.predicted_speedup(3000, 10, 20, 21) == pytest.approx(3 * 20 * 10 / 41)  # 3RS/(2R+1)


def test_expected_cost_matches_simulated_batches():
    """K uniform requests (distinct, as served) on a sliced plan: the mean of ``delete``'s point-epochs
    over repeated plans agrees with the formula within its Monte Carlo error."""
    n, s, r, e, k = 2400, 4, 3, 4, 6
    rng = np.random.default_rng(11)
    costs = []
    for rep in range(400):
        plan = sisa.SisaPlan.build(n, s, r, e, seed=rep)
        costs.append(sum(j.point_epochs for j in sisa.delete(plan, rng.choice(n, k, replace=False))))
    costs = np.array(costs, float)
    se = costs.std(ddof=1) / np.sqrt(len(costs))
    # the formula neglects the deleted points' own share (k points out of a 600-point shard): < 1%
    assert abs(costs.mean() - sisa.expected_cost(n, s, r, e, k)) < 4 * se + 0.01 * costs.mean()
