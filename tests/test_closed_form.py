"""Closed-form unlearning, the convex core (privstudy.unlearning.closed_form), by known answers."""

from __future__ import annotations

import numpy as np
import pytest

from privstudy.unlearning import closed_form as cf


def _problem(n=400, d=8, seed=0):
    rng = np.random.default_rng(seed)
    x = np.c_[rng.normal(size=(n, d - 1)), np.ones(n)]
    w = rng.normal(size=d)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-x @ w))).astype(int)
    return x, y


def test_fit_reaches_the_optimum_and_gradients_are_exact():
    x, y = _problem()
    obj = cf.Objective(x, y, lam=1.0)
    theta, steps = cf.fit(obj)
    assert np.linalg.norm(obj.grad(theta)) < 1e-9 and steps < 20
    # gradient against central finite differences of the objective
    rng = np.random.default_rng(1)
    t = theta + rng.normal(scale=0.3, size=theta.shape)
    eps = 1e-6
    fd = np.array([(obj.value(t + eps * e) - obj.value(t - eps * e)) / (2 * eps) for e in np.eye(len(t))])
    np.testing.assert_allclose(obj.grad(t), fd, rtol=1e-6, atol=1e-6)


def test_hvp_equals_the_finite_difference_hessian_vector_product():
    x, y = _problem()
    obj = cf.Objective(x, y, lam=0.5)
    rng = np.random.default_rng(2)
    theta, v = rng.normal(size=x.shape[1]), rng.normal(size=x.shape[1])
    eps = 1e-5
    fd = (obj.grad(theta + eps * v) - obj.grad(theta - eps * v)) / (2 * eps)
    np.testing.assert_allclose(obj.hvp(theta)(v), fd, rtol=1e-6)
    np.testing.assert_allclose(obj.hvp(theta)(v), obj.hessian(theta) @ v, rtol=1e-12)


def test_second_order_matches_retraining_for_a_small_change():
    """One of 2,000 labels flipped: one Newton step on the corrected objective lands within 1e-4
    (relative) of retraining; first order and no update are much further away."""
    x, y = _problem(n=2000)
    obj = cf.Objective(x, y, lam=1.0)
    theta, _ = cf.fit(obj)
    idx = np.array([0])
    y_new = y.copy()
    y_new[idx] = 1 - y[idx]
    new_obj = cf.Objective(x, y_new, lam=1.0)
    retrained, _ = cf.fit(new_obj)
    delta = cf.gradient_change(theta, x[idx], y[idx], x[idx], y_new[idx])
    np.testing.assert_allclose(delta, new_obj.grad(theta), atol=1e-8)  # grad J(theta*; D~) is delta
    second = cf.second_order(theta, delta, new_obj.hessian(theta))

    def dist(t):
        return np.linalg.norm(t - retrained) / np.linalg.norm(retrained)

    assert dist(second) < 1e-4
    first = cf.first_order(theta, delta, tau=1e-3)
    assert dist(theta) > 1e-3 and dist(first) > 10 * dist(second)
    # the gradient residual of the second-order update is far below no update's
    assert np.linalg.norm(new_obj.grad(second)) < 1e-2 * np.linalg.norm(new_obj.grad(theta))


def test_second_order_error_is_quadratic_in_the_change():
    """Feature values of 4 points shifted by t: the second-order update's distance to retraining
    shrinks 4-fold when t halves (Newton's step is exact to second order), no update's 2-fold."""
    x, y = _problem()
    theta, _ = cf.fit(cf.Objective(x, y, lam=1.0))
    errs, none = [], []
    for t in (0.2, 0.1, 0.05):
        x_new = x.copy()
        x_new[:4, :3] += t
        new_obj = cf.Objective(x_new, y, lam=1.0)
        retrained, _ = cf.fit(new_obj)
        delta = cf.gradient_change(theta, x[:4], y[:4], x_new[:4], y[:4])
        errs.append(np.linalg.norm(cf.second_order(theta, delta, new_obj.hessian(theta)) - retrained))
        none.append(np.linalg.norm(theta - retrained))
    for a, b in zip(errs, errs[1:]):
        assert 3.5 < a / b < 4.5
    for a, b in zip(none, none[1:]):
        assert 1.8 < a / b < 2.2


def test_empty_change_and_zero_step_leave_theta_unchanged():
    x, y = _problem()
    theta, _ = cf.fit(cf.Objective(x, y, lam=1.0))
    delta = cf.gradient_change(theta, x[:0], y[:0], x[:0], y[:0])
    assert not delta.any()
    np.testing.assert_array_equal(cf.second_order(theta, delta, np.eye(len(theta))), theta)
    d = cf.gradient_change(theta, x[:5], y[:5], x[:5], 1 - y[:5])
    np.testing.assert_array_equal(cf.first_order(theta, d, tau=0.0), theta)


def test_certified_noise():
    assert cf.certified_sigma(0.0, 0.1, 0.01) == 0.0
    # sigma = r sqrt(2 ln(1.5 / delta)) / epsilon; ln 150 = ln 1.5 + ln 100 = 5.010635, sqrt(10.02127)
    assert cf.certified_sigma(1.0, 1.0, 0.01) == pytest.approx(3.165639, abs=1e-6)
    assert cf.certified_sigma(2.0, 0.5, 0.01) == pytest.approx(4 * 3.165639, abs=1e-5)
    with pytest.raises(ValueError):
        cf.certified_sigma(1.0, 0.0, 0.01)


@pytest.mark.parametrize("damping", [0.0, 0.3])
def test_cg_and_lissa_agree_with_the_exact_inverse(damping):
    x, y = _problem(d=6)
    obj = cf.Objective(x, y, lam=0.1)
    theta, _ = cf.fit(obj)
    h = obj.hessian(theta)
    v = np.random.default_rng(3).normal(size=len(theta))
    exact = np.linalg.solve(h + damping * np.eye(len(v)), v)
    cg = cf.conjugate_gradient(obj.hvp(theta), v, damping)
    assert cg.converged and cg.hvps <= len(v) + 2  # CG is exact in at most d steps
    np.testing.assert_allclose(cg.x, exact, rtol=1e-7)
    top = np.linalg.eigvalsh(h + damping * np.eye(len(v))).max()
    li = cf.lissa(obj.hvp(theta), v, damping, scale=top, tol=1e-13, max_iter=200_000)
    assert li.converged
    np.testing.assert_allclose(li.x, exact, rtol=1e-6)
    # below half the top eigenvalue the recursion diverges, and says so
    assert not cf.lissa(obj.hvp(theta), v, damping, scale=0.4 * top, max_iter=2000).converged


def test_the_reference_lissa_recursion_solves_with_damping_d_times_s():
    """u_j = v + (1 - d) u_{j-1} - H u_{j-1} / s (the reference code) returns (H + d s I)^-1 v."""
    x, y = _problem(d=5)
    obj = cf.Objective(x, y, lam=0.1)
    theta, _ = cf.fit(obj)
    h, v = obj.hessian(theta), np.arange(1.0, 6.0)
    d, s = 0.01, float(np.linalg.eigvalsh(h).max())
    u = v.copy()
    for _ in range(100_000):
        u = v + (1 - d) * u - h @ u / s
    np.testing.assert_allclose(u / s, np.linalg.solve(h + d * s * np.eye(5), v), rtol=1e-6)
    ours = cf.lissa(obj.hvp(theta), v, damping=d * s, scale=s, tol=1e-13, max_iter=100_000)
    np.testing.assert_allclose(ours.x, u / s, rtol=1e-6)


def test_keras_hvp_equals_finite_differences_and_the_convex_case():
    """Double-backprop HVPs of a Keras model against central differences of its gradient (float64),
    and, for a softmax layer on two classes, the Hessian-vector product of the logistic objective."""
    import tensorflow as tf

    from privstudy.unlearning import influence

    tf.keras.backend.set_floatx("float64")
    try:
        rng = np.random.default_rng(4)
        x = rng.normal(size=(300, 5))
        y = rng.integers(0, 3, 300)
        model = tf.keras.Sequential(
            [
                tf.keras.Input((5,)),
                tf.keras.layers.Dense(4, activation="tanh"),
                tf.keras.layers.Dense(3, activation="softmax"),
            ]
        )
        params = influence.parameters(model)
        theta = influence.get_flat(params)
        v = rng.normal(size=len(theta))
        hv = influence.hvp_function(model, params, x, y, l2=0.1, chunk=128)(v)
        eps = 1e-5
        influence.set_flat(params, theta + eps * v)
        g_plus = influence.loss_gradient(model, params, x, y, chunk=128)
        influence.set_flat(params, theta - eps * v)
        g_minus = influence.loss_gradient(model, params, x, y, chunk=128)
        influence.set_flat(params, theta)
        np.testing.assert_allclose(hv, (g_plus - g_minus) / (2 * eps) + 0.1 * v, rtol=1e-5, atol=1e-7)
        # the last layer alone: its parameters only
        last = influence.parameters(model, last_layers=1)
        assert sum(int(np.prod(p.shape)) for p in last) == 4 * 3 + 3

        # softmax over logits (0, w^T x): exactly logistic regression with theta = w (no bias)
        xb = np.c_[x[:, :3], np.ones(300)]
        yb = (y > 0).astype(int)
        inp = tf.keras.Input((4,))
        zero = tf.keras.layers.Lambda(lambda t: tf.zeros_like(t[:, :1]))(inp)
        logit = tf.keras.layers.Dense(1, use_bias=False)(inp)
        probs = tf.keras.layers.Softmax()(tf.keras.layers.Concatenate()([zero, logit]))
        lr = tf.keras.Model(inp, probs)
        w = rng.normal(size=4)
        influence.set_flat(influence.parameters(lr), w)
        obj = cf.Objective(xb, yb, lam=0.5)
        u = rng.normal(size=4)
        keras_hv = influence.hvp_function(lr, influence.parameters(lr), xb, yb, l2=0.5)(u)
        np.testing.assert_allclose(keras_hv, obj.hvp(w)(u), rtol=1e-9)
        keras_g = influence.loss_gradient(lr, influence.parameters(lr), xb, yb)
        np.testing.assert_allclose(keras_g, cf.grad_sum(w, xb, yb), rtol=1e-9)
    finally:
        tf.keras.backend.set_floatx("float32")
        tf.keras.backend.clear_session()
