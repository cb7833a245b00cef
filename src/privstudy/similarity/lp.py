"""Linear classifiers trained by linear programming (HiGHS): the published slack LP and a max-margin LP."""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import linprog

OBJECTIVES = ("slack", "max_margin")


@dataclasses.dataclass(frozen=True)
class LinearModel:
    """A hyperplane w.x + b = 0 with ||w||_2 = 1, so w.x + b is the signed Euclidean distance."""

    weights: np.ndarray  # (d,) unit-norm normal vector
    bias: float  # offset, divided by the same norm
    objective_value: float  # the LP's optimum (sum of slacks, or minus the margin before scaling)

    def decision(self, x: np.ndarray) -> np.ndarray:
        """Signed distances of points x: (n, d) -> (n,)."""
        return x @ self.weights + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Labels +1 / -1 of points x: (n, d) -> (n,); the boundary goes to +1, as published."""
        return np.where(self.decision(x) >= 0, 1, -1)


def _normalised(w: np.ndarray, b: float, objective_value: float) -> LinearModel:
    norm = float(np.linalg.norm(w))
    if not norm > 0:
        raise ValueError("the LP returned w = 0: the training set does not contain both classes")
    return LinearModel(weights=w / norm, bias=float(b) / norm, objective_value=float(objective_value))


def train_slack(x: np.ndarray, y: np.ndarray) -> LinearModel:
    """The published LP: minimise sum(slack) s.t. y_i (w.x_i + b) >= 1 - slack_i, slack >= 0.

    On separable data every separating hyperplane (scaled) is optimal with zero slack; HiGHS
    returns one vertex of that set, so the direction is not unique in general.

    Args:
        x: (n, d) training points.
        y: (n,) labels in {+1, -1}.
    """
    n, d = x.shape
    yx = y[:, None] * x
    # Variables: [w (d), b, slack (n)]. Constraint rows: -y_i x_i.w - y_i b - slack_i <= -1.
    a_ub = np.hstack([-yx, -y[:, None].astype(np.float64), -np.eye(n)])
    b_ub = -np.ones(n)
    c = np.concatenate([np.zeros(d + 1), np.ones(n)])
    bounds = [(None, None)] * (d + 1) + [(0, None)] * n
    sol = linprog(c, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    if not sol.success:
        raise RuntimeError(f"slack LP failed: {sol.message}")
    return _normalised(sol.x[:d], sol.x[d], sol.fun)


def train_max_margin(x: np.ndarray, y: np.ndarray) -> LinearModel:
    """Maximise the margin t s.t. y_i (w.x_i + b) >= t with -1 <= w_j <= 1.

    With ||w||_inf <= 1 the optimum maximises min_i y_i (w.x_i + b) / ||w||_inf, the smallest
    L1 distance from a training point to the boundary: the LP form of the max-margin classifier
    (the Euclidean one is a quadratic program). The published docstring promised a max-margin
    LP but its code solved the slack LP; this is that promise kept.

    Args:
        x: (n, d) training points with both labels present.
        y: (n,) labels in {+1, -1}.
    """
    n, d = x.shape
    yx = y[:, None] * x
    # Variables: [w (d), b, t]; minimise -t. Rows: -y_i x_i.w - y_i b + t <= 0.
    a_ub = np.hstack([-yx, -y[:, None].astype(np.float64), np.ones((n, 1))])
    b_ub = np.zeros(n)
    c = np.concatenate([np.zeros(d + 1), [-1.0]])
    bounds = [(-1.0, 1.0)] * d + [(None, None), (None, None)]
    sol = linprog(c, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    if not sol.success:
        raise RuntimeError(f"max-margin LP failed: {sol.message}")
    if sol.x[d + 1] <= 0:
        raise RuntimeError("max-margin LP found no separating hyperplane (margin <= 0)")
    return _normalised(sol.x[:d], sol.x[d], sol.fun)


def train(x: np.ndarray, y: np.ndarray, objective: str) -> LinearModel:
    """Train with the named objective (one of OBJECTIVES)."""
    if objective == "slack":
        return train_slack(x, y)
    if objective == "max_margin":
        return train_max_margin(x, y)
    raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
