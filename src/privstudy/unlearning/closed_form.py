"""Closed-form unlearning of features and labels (Warnecke, Pirch, Wressnegger, Rieck, NDSS 2023): the
convex core and the inverse-Hessian solvers. Pure numpy.

Notation: Z the affected training points, Z~ their corrected versions (labels reset, feature columns
replaced), L(Z; theta) the summed loss over Z, J(theta; D) = sum over D of the loss + lam/2 ||theta||^2
(+ b^T theta, the objective perturbation of certified unlearning). With delta = grad L(Z~) - grad L(Z)
at the trained theta*:

* first order: theta* - tau * delta;
* second order: theta* - H^-1 delta, H the Hessian of J. At an optimum of J(.; D), grad J(theta*; D~) is
  exactly delta, so the second-order update with H taken on D~ is one Newton step on the corrected
  objective: it matches retraining up to the second order of the change.

Certified unlearning (Guo et al. 2020, as the reference code's logistic-regression experiments do it):
train with b ~ N(0, sigma^2 I); after the update, the gradient residual r = ||grad J(theta_new; D~)||;
sigma = r c / epsilon with c = sqrt(2 ln(1.5 / delta)) makes the released model (epsilon, delta)-
indistinguishable from retraining.

H^-1 v without H: ``lissa`` and ``conjugate_gradient`` take a Hessian-vector product function and solve
(H + damping I) x = v. LiSSA's recursion is u_j = v + u_{j-1} - (H + damping I) u_{j-1} / scale, whose
fixed point is scale (H + damping I)^-1 v; it converges when scale exceeds half the largest eigenvalue
of H + damping I. (The reference code's recursion u_j = v + (1 - d) u_{j-1} - H u_{j-1} / s solves
(H + d s I) x = v: its damping is d * s, not d.)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
from scipy.special import expit

Hvp = Callable[[np.ndarray], np.ndarray]


def _as_pm1(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1 (binary logistic regression)")
    return 2.0 * y - 1.0


def loss_sum(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Summed logistic loss log(1 + exp(-s theta^T x)), s = 2y - 1."""
    return float(np.logaddexp(0.0, -_as_pm1(y) * (x @ theta)).sum())


def grad_sum(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of ``loss_sum`` in theta."""
    s = _as_pm1(y)
    return -(x * (s * expit(-s * (x @ theta)))[:, None]).sum(axis=0)


def hessian_sum(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Hessian of ``loss_sum`` (independent of the labels): sum p (1 - p) x x^T."""
    p = expit(x @ theta)
    return (x * (p * (1 - p))[:, None]).T @ x


@dataclasses.dataclass(frozen=True)
class Objective:
    """J(theta) = sum of the logistic losses + lam/2 ||theta||^2 + b^T theta over (x, y)."""

    x: np.ndarray
    y: np.ndarray
    lam: float
    b: Optional[np.ndarray] = None

    def value(self, theta: np.ndarray) -> float:
        extra = 0.0 if self.b is None else float(self.b @ theta)
        return loss_sum(theta, self.x, self.y) + 0.5 * self.lam * float(theta @ theta) + extra

    def grad(self, theta: np.ndarray) -> np.ndarray:
        g = grad_sum(theta, self.x, self.y) + self.lam * theta
        return g if self.b is None else g + self.b

    def hessian(self, theta: np.ndarray) -> np.ndarray:
        return hessian_sum(theta, self.x) + self.lam * np.eye(len(theta))

    def hvp(self, theta: np.ndarray) -> Hvp:
        p = expit(self.x @ theta)
        w = p * (1 - p)
        return lambda v: self.x.T @ (w * (self.x @ v)) + self.lam * v


def fit(obj: Objective, theta0: Optional[np.ndarray] = None, tol: float = 1e-12, max_iter: int = 100):
    """The minimiser of the strictly convex J (lam > 0) by Newton's method with backtracking; returns
    (theta, Newton steps). Stops when ||grad J|| <= tol * max(1, ||grad J(theta0)||), or when the
    Newton step is below the rounding of theta, or when no step along it lowers J in floating point."""
    if obj.lam <= 0:
        raise ValueError(f"lam must be > 0 (a strictly convex objective), got {obj.lam}")
    theta = np.zeros(obj.x.shape[1]) if theta0 is None else np.array(theta0, dtype=np.float64)
    g = obj.grad(theta)
    stop = tol * max(1.0, float(np.linalg.norm(g)))
    for it in range(max_iter):
        if np.linalg.norm(g) <= stop:
            return theta, it
        step = np.linalg.solve(obj.hessian(theta), g)
        if np.linalg.norm(step) <= 1e-15 * max(1.0, float(np.linalg.norm(theta))):
            return theta, it  # at the optimum to machine precision (the gradient's own rounding)
        t, f0 = 1.0, obj.value(theta)
        while obj.value(theta - t * step) > f0 - 0.25 * t * float(g @ step) and t > 1e-10:
            t *= 0.5
        if obj.value(theta - t * step) >= f0:
            return theta, it  # no step lowers J in floating point: the optimum to machine precision
        theta = theta - t * step
        g = obj.grad(theta)
    raise RuntimeError(
        f"Newton's method did not converge in {max_iter} steps (||grad|| = {np.linalg.norm(g):.3g})"
    )


def gradient_change(theta: np.ndarray, x_old: np.ndarray, y_old: np.ndarray, x_new, y_new) -> np.ndarray:
    """delta = grad L(Z~; theta) - grad L(Z; theta); zero for an empty change."""
    if len(x_old) == 0:
        return np.zeros_like(theta)
    return grad_sum(theta, x_new, y_new) - grad_sum(theta, x_old, y_old)


def first_order(theta: np.ndarray, delta: np.ndarray, tau: float) -> np.ndarray:
    """theta - tau * delta."""
    return theta - tau * delta


def second_order(theta: np.ndarray, delta: np.ndarray, hessian: np.ndarray) -> np.ndarray:
    """theta - H^-1 delta, with the exact Hessian."""
    return theta - np.linalg.solve(hessian, delta)


def certified_sigma(residual: float, epsilon: float, delta: float) -> float:
    """The objective-perturbation scale that certifies an update with gradient residual ``residual``:
    sigma = residual * sqrt(2 ln(1.5 / delta)) / epsilon."""
    if epsilon <= 0 or not 0 < delta < 1:
        raise ValueError(f"need epsilon > 0 and 0 < delta < 1, got {epsilon}, {delta}")
    return residual * np.sqrt(2 * np.log(1.5 / delta)) / epsilon


@dataclasses.dataclass(frozen=True)
class Solve:
    """An approximate solution of (H + damping I) x = v, with the HVPs it cost and its last residual."""

    x: np.ndarray
    hvps: int
    residual: float  # ||(H + damping I) x - v|| / ||v|| at the end (one more HVP, not counted)
    converged: bool


def conjugate_gradient(
    hvp: Hvp, v: np.ndarray, damping: float = 0.0, tol: float = 1e-10, max_iter: int = 1000
) -> Solve:
    """Conjugate gradients on (H + damping I) x = v (H symmetric positive semi-definite, damping >= 0,
    H + damping I positive definite)."""
    apply = lambda u: hvp(u) + damping * u  # noqa: E731
    x = np.zeros_like(v)
    r = v.copy()
    p = r.copy()
    rs = float(r @ r)
    norm_v = float(np.sqrt(rs)) or 1.0
    hvps = 0
    for _ in range(max_iter):
        if np.sqrt(rs) <= tol * norm_v:
            break
        ap = apply(p)
        hvps += 1
        curv = float(p @ ap)
        if curv <= 0:
            raise ValueError("H + damping I is not positive definite along a search direction: raise damping")
        alpha = rs / curv
        x += alpha * p
        r -= alpha * ap
        rs_new = float(r @ r)
        p = r + (rs_new / rs) * p
        rs = rs_new
    res = float(np.linalg.norm(apply(x) - v)) / norm_v
    return Solve(x, hvps, res, res <= max(tol, 1e-8) * 10)


def lissa(
    hvp: Hvp, v: np.ndarray, damping: float, scale: float, max_iter: int = 10000, tol: float = 1e-10
) -> Solve:
    """LiSSA: u_j = v + u_{j-1} - (H + damping I) u_{j-1} / scale, returns u / scale, an estimate of
    (H + damping I)^-1 v. Stops when the update's norm falls below tol * ||u||. Diverges (and says so)
    when scale is below half the largest eigenvalue of H + damping I."""
    if scale <= 0 or damping < 0:
        raise ValueError(f"need scale > 0 and damping >= 0, got {scale}, {damping}")
    u = v.copy()
    hvps = 0
    converged = False
    for _ in range(max_iter):
        step = v - (hvp(u) + damping * u) / scale
        hvps += 1
        if not np.isfinite(step).all() or np.linalg.norm(step) > 1e150:
            break
        u = u + step
        if np.linalg.norm(step) <= tol * max(float(np.linalg.norm(u)), 1e-300):
            converged = True
            break
    x = u / scale
    norm_v = float(np.linalg.norm(v)) or 1.0
    res = float(np.linalg.norm(hvp(x) + damping * x - v)) / norm_v if np.isfinite(x).all() else float("inf")
    return Solve(x, hvps, res, converged and np.isfinite(res))
