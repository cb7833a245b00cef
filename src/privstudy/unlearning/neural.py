"""Closed-form unlearning of a trained Keras classifier: first- and second-order updates of all its
parameters or of its last k layers with weights, as Warnecke et al. (NDSS 2023) apply them to neural
networks.

Restricted to the last k layers (``last_layers``), the layers below them do not move: their outputs on
the training set are computed once (``Head``), and every gradient and Hessian-vector product after that
runs through the k layers alone, which is what makes a second-order update cheap next to retraining.

The objective is J(theta; D) = sum over D of the cross-entropy (from logits). A trained network is not
at an exact optimum, so the updates target the tilted objective J~(theta) = J(theta; D~) - g0^T theta,
g0 = grad J(theta*; D), whose stationary point theta* would be if D~ were D: one step of either order
uses grad J~(theta*) = grad L(Z~; theta*) - grad L(Z; theta*) = delta (the method as published); further
steps (``steps`` > 1) use grad J~ at the current parameters over the whole corrected set.

* first order: theta - tau * grad J~; ``tau`` None takes 1 / lambda_max of the Hessian of J(.; D~) at
  theta* (power iteration; the largest step that cannot overshoot along any direction).
* second order: theta - (H + damping * N * I)^-1 grad J~, H the Hessian of J(.; D~) at the current
  parameters, by conjugate gradients or LiSSA on Hessian-vector products (double backprop). ``damping``
  is per training example (the damping of the mean Hessian). Negative curvature stops conjugate
  gradients; a diverged or unconverged solve leaves the parameters as they were and is flagged.
  ``curvature="gauss_newton"`` replaces H by the generalised Gauss-Newton matrix (positive
  semi-definite, the Hessian itself for the last layer alone), the usual remedy for hidden layers'
  negative curvature.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Literal, Optional

import numpy as np

from privstudy.unlearning import closed_form, influence

SOLVERS = ("cg", "lissa")


@dataclasses.dataclass
class Counts:
    """Work of an update: examples whose loss gradient was taken, and full-set Hessian-vector products."""

    grad_examples: int = 0
    hvps: int = 0


class Head:
    """The last ``last_layers`` layers with weights of ``model`` (a chain of layers ending in a layer
    named ``logits``, then a softmax), as a model from their input to the logits; the layers below are
    frozen and their outputs computed once. ``last_layers`` None: the whole network."""

    def __init__(self, model, last_layers: Optional[int] = None):
        import tensorflow as tf

        layers = model.layers
        end = [layer.name for layer in layers].index("logits")
        # raises, naming the range, when last_layers exceeds the layers with weights
        self.variables = (
            list(model.trainable_variables)
            if last_layers is None
            else influence.parameters(model, last_layers)
        )
        weighted = [i for i, layer in enumerate(layers[: end + 1]) if layer.trainable_weights]
        start = weighted[0] if last_layers is None else weighted[-last_layers]
        if start == weighted[0]:  # nothing with weights below: the whole network, no frozen body
            self.body = None
            self.model = tf.keras.Model(model.input, layers[end].output)
        else:
            self.body = tf.keras.Model(model.input, layers[start - 1].output)
            inp = tf.keras.Input(shape=layers[start - 1].output.shape[1:])
            h = inp
            for layer in layers[start : end + 1]:
                h = layer(h)
            self.model = tf.keras.Model(inp, h)

    @property
    def n_params(self) -> int:
        return int(sum(int(np.prod(v.shape)) for v in self.variables))

    def inputs(self, x: np.ndarray, batch: int = 1024) -> np.ndarray:
        """The head's inputs for examples x (x itself without a frozen body)."""
        if self.body is None:
            return x
        return np.concatenate(
            [self.body(x[i : i + batch], training=False).numpy() for i in range(0, len(x), batch)]
        )

    def get(self) -> np.ndarray:
        return influence.get_flat(self.variables)

    def set(self, theta: np.ndarray) -> None:
        influence.set_flat(self.variables, theta)

    def gradient(self, h: np.ndarray, y: np.ndarray, counts: Counts) -> np.ndarray:
        counts.grad_examples += len(h)
        return influence.loss_gradient(self.model, self.variables, h, y, from_logits=True)

    def hvp(
        self, h: np.ndarray, y: np.ndarray, counts: Counts, chunk: int = 2048, curvature: str = "hessian"
    ):
        fn = influence.hvp_function(
            self.model, self.variables, h, y, chunk=chunk, from_logits=True, curvature=curvature
        )

        def counted(v):
            counts.hvps += 1
            return fn(v)

        return counted


@dataclasses.dataclass(frozen=True)
class Update:
    """The result of one unlearning method on the head's parameters."""

    theta: np.ndarray
    seconds: float
    counts: Counts
    diverged: bool
    tau: float = float("nan")  # first order: the step used
    solver_residual: float = float("nan")  # second order: worst relative residual of its solves


def top_eigenvalue(hvp, dim: int, iters: int = 20, seed: int = 0) -> float:
    """The largest eigenvalue of a symmetric PSD operator by power iteration."""
    v = np.random.default_rng(seed).standard_normal(dim)
    v /= np.linalg.norm(v)
    lam = 0.0
    for _ in range(iters):
        w = hvp(v)
        lam = float(np.linalg.norm(w))
        if lam == 0:
            return 0.0
        v = w / lam
    return lam


def unlearn(
    head: Head,
    order: Literal[1, 2],
    z: np.ndarray,
    x_old: np.ndarray,
    y_old: np.ndarray,
    x_new: np.ndarray,
    y_new: np.ndarray,
    steps: int = 1,
    tau: Optional[float] = None,
    solver: str = "cg",
    damping: float = 1e-4,
    lissa_scale: Optional[float] = None,
    max_iter: int = 200,
    tol: float = 1e-6,
    seed: int = 0,
    curvature: str = "hessian",
    hessian_sample: Optional[int] = None,
) -> Update:
    """One unlearning method from the head's current parameters theta* (trained on the old set).

    Args:
        z: indices of the affected points in both sets.
        x_old, y_old / x_new, y_new: the training set before / after the correction (model inputs).
            The head's inputs are computed once, for the affected points and the Hessian's sample (the
            whole new set when steps > 1), and on the old set only for affected rows whose features
            changed.
        hessian_sample: estimate the Hessian (and Gauss-Newton matrix) on this many training points
            drawn at random, scaled by N / sample (None: all N); the damping stays per example of N.
    Returns:
        The new head parameters (not applied), with time, counts, divergence.
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    counts = Counts()
    start = time.perf_counter()
    theta0 = head.get()
    theta = theta0.copy()
    n = len(x_new)
    z = np.asarray(z, np.int64)
    if hessian_sample and hessian_sample < n:
        rng = np.random.default_rng([seed, 0x68657373])
        hess_idx = np.sort(rng.choice(n, hessian_sample, replace=False))
    else:
        hess_idx = np.arange(n)
    # the head's inputs of the rows needed: the affected points and the Hessian's (all, for steps > 1)
    rows = np.arange(n) if steps > 1 else np.union1d(z, hess_idx)
    h_rows = head.inputs(x_new[rows])
    h_z = h_rows[np.searchsorted(rows, z)]
    h_hess, y_hess = h_rows[np.searchsorted(rows, hess_idx)], y_new[hess_idx]
    weight = n / len(hess_idx)  # the sample's Hessian scaled to the whole set's
    moved = z[[not np.array_equal(x_old[i], x_new[i]) for i in z]] if head.body is not None else z
    h_z_old = h_z.copy() if head.body is not None else x_old[z]
    if head.body is not None and len(moved):
        h_z_old[np.searchsorted(z, moved)] = head.inputs(x_old[moved])
    delta = head.gradient(h_z, y_new[z], counts) - head.gradient(h_z_old, y_old[z], counts)
    g0 = None
    if steps > 1:
        h_old = x_old if head.body is None else h_rows.copy()
        if head.body is not None:
            h_old[z] = h_z_old
        g0 = head.gradient(h_old, y_old, counts)

    def curvature_op(t):
        head.set(t)
        inner = head.hvp(h_hess, y_hess, counts, curvature=curvature)
        return (lambda v: weight * inner(v)) if weight != 1 else inner

    diverged, used_tau, worst = False, float("nan"), 0.0
    if not np.any(delta):
        return Update(theta, time.perf_counter() - start, counts, False, used_tau, 0.0)
    for step in range(steps):
        if step == 0:
            g = delta
        else:
            head.set(theta)
            g = head.gradient(h_rows, y_new, counts) - g0  # rows: the whole set when steps > 1
        if order == 1:
            if tau is None:
                if step == 0:
                    used_tau = 1.0 / max(top_eigenvalue(curvature_op(theta), len(theta), seed=seed), 1e-12)
            else:
                used_tau = tau
            theta = theta - used_tau * g
        else:
            hvp = curvature_op(theta)
            try:
                if solver == "cg":
                    sol = closed_form.conjugate_gradient(hvp, g, damping * n, tol=tol, max_iter=max_iter)
                else:
                    scale = lissa_scale or 1.05 * top_eigenvalue(
                        lambda v, hvp=hvp: hvp(v) + damping * n * v, len(theta), seed=seed
                    )
                    sol = closed_form.lissa(hvp, g, damping * n, scale, max_iter=max_iter, tol=tol)
            except ValueError:  # negative curvature: H + damping is not positive definite
                diverged = True
                break
            worst = max(worst, sol.residual)
            if not np.isfinite(sol.x).all() or sol.residual > 0.5:
                diverged = True
                break
            theta = theta - sol.x
    head.set(theta0)
    if diverged:
        theta = theta0.copy()
    return Update(
        theta, time.perf_counter() - start, counts, diverged, used_tau, worst if order == 2 else float("nan")
    )


@dataclasses.dataclass(frozen=True)
class Refit:
    """The result of refitting the head's parameters (``refit``)."""

    theta: np.ndarray
    seconds: float
    counts: Counts
    converged: bool  # the gradient fell to tol x its starting norm
    newton_steps: int
    backtracks: int  # step halvings of the line search, over all steps
    objective: tuple  # F before the first step and after each accepted one
    grad_ratio: float  # ||grad F|| at the result over ||grad F|| at the start


def penalty_mask(head: Head) -> np.ndarray:
    """1 on the flat entries of the head's kernels (the weights the L2 penalty of ``refit`` covers),
    0 on biases and normalisation parameters."""
    return np.concatenate([np.full(int(np.prod(v.shape)), float("kernel" in v.name)) for v in head.variables])


def refit(
    head: Head,
    h: np.ndarray,
    y: np.ndarray,
    l2: float,
    max_steps: int = 100,
    tol: float = 1e-5,
    cg_iters: int = 300,
    min_damping: float = 1e-6,
    armijo: float = 1e-4,
    max_halvings: int = 40,
) -> Refit:
    """The head retrained to convergence on (its inputs ``h``, labels ``y``) from its current parameters:
    the minimiser of F(theta) = J(theta; D) + l2 N / 2 ||kernels||^2 (J the summed cross-entropy, N = len(y),
    ``l2`` per example like the damping of ``unlearn``), by Newton's method with a backtracking line search.

    Not a closed-form update: it discards theta*'s fit of the old set and keeps only its starting point
    (an empty change moves it as well). Each step solves (G + min_damping N I) p = -grad F by conjugate
    gradients to a relative tolerance min(0.5, sqrt(||grad F|| / ||grad F_0||)) (inexact Newton), G the
    Gauss-Newton matrix of J plus the penalty (PSD; the Hessian itself for the last layer); the damping
    only keeps the unpenalised directions solvable and leaves the minimiser unchanged. The step length
    halves until F falls by at least ``armijo`` x the first-order decrease, so F never rises. Stops when
    ||grad F|| <= tol ||grad F_0||, after ``max_steps`` steps, or when F stops decreasing measurably
    (the float32 precision floor; ``converged`` then says whether tol was reached). The default tol sits
    above that floor (about 1e-6 of the starting gradient for the published VGG's last layer on 5,000
    images, where further steps cost hundreds of Hessian-vector products and move no prediction).
    Leaves the head's parameters as they were.
    """
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    counts = Counts()
    start = time.perf_counter()
    theta0 = head.get()
    theta = theta0.copy()
    n = len(y)
    lam = l2 * n * penalty_mask(head)

    def objective(t):
        head.set(t)
        return influence.loss_sum(head.model, head.variables, h, y, from_logits=True) + 0.5 * float(
            lam @ (t * t)
        )

    def gradient(t):
        head.set(t)
        return head.gradient(h, y, counts) + lam * t

    f = objective(theta)
    trace = [f]
    g = gradient(theta)
    g0 = float(np.linalg.norm(g)) or 1.0
    steps = halvings = 0
    converged = float(np.linalg.norm(g)) <= tol * g0
    while not converged and steps < max_steps:
        head.set(theta)
        inner = head.hvp(h, y, counts, curvature="gauss_newton")
        ratio = float(np.linalg.norm(g)) / g0
        try:
            sol = closed_form.conjugate_gradient(
                lambda v, inner=inner: inner(v) + lam * v,
                -g,
                min_damping * n,
                tol=min(0.5, np.sqrt(ratio)),
                max_iter=cg_iters,
            )
            p = sol.x
        except ValueError:  # no positive curvature along a CG direction: fall back to steepest descent
            p = -g
        slope = float(g @ p)
        if not np.isfinite(p).all() or slope >= 0:
            p, slope = -g, -float(g @ g)
        t, accepted = 1.0, False
        for _ in range(max_halvings + 1):
            f_new = objective(theta + t * p)
            if np.isfinite(f_new) and f_new <= f + armijo * t * slope:
                accepted = True
                break
            t *= 0.5
            halvings += 1
        if not accepted:
            break
        # accepted without a measurable decrease, or only after ten halvings of a Newton step (which
        # near the minimiser is taken whole): the precision floor, where more steps only add work
        stalled = f_new >= f or t < 2.0**-10
        theta, f = theta + t * p, f_new
        trace.append(f)
        steps += 1
        g = gradient(theta)
        converged = float(np.linalg.norm(g)) <= tol * g0
        if stalled:
            break
    head.set(theta0)
    return Refit(
        theta,
        time.perf_counter() - start,
        counts,
        converged,
        steps,
        halvings,
        tuple(trace),
        float(np.linalg.norm(g)) / g0,
    )
