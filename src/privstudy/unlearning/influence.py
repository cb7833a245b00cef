"""Gradients and Hessian-vector products of a Keras model's summed training loss, over flat parameter
vectors, for closed-form unlearning of neural networks (the solvers are in ``closed_form``).

The parameters are a model's trainable variables, or those of its last ``last_layers`` layers with
weights (the reference code unlearns the last layers only); a flat float64 vector concatenates them in
order. The loss is the *summed* cross-entropy over the given examples (the reference code sums Keras
mean losses over chunks, which rescales the gradient by the chunk size and hides it in tau), plus
``l2 / 2 * ||theta||^2`` when asked. Hessian-vector products are double backprop: the gradient of
<grad L, v>, evaluated in chunks so that memory stays bounded.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


def parameters(model, last_layers: Optional[int] = None) -> list:
    """The trainable variables unlearning updates: all, or those of the last ``last_layers`` layers
    that have any."""
    if last_layers is None:
        return list(model.trainable_variables)
    with_weights = [layer for layer in model.layers if layer.trainable_weights]
    if not 1 <= last_layers <= len(with_weights):
        raise ValueError(f"last_layers must be in 1..{len(with_weights)}, got {last_layers}")
    return [v for layer in with_weights[-last_layers:] for v in layer.trainable_weights]


def get_flat(variables: list) -> np.ndarray:
    return np.concatenate([v.numpy().ravel() for v in variables]).astype(np.float64)


def set_flat(variables: list, flat: np.ndarray) -> None:
    at = 0
    for v in variables:
        n = int(np.prod(v.shape))
        v.assign(flat[at : at + n].reshape(v.shape).astype(v.dtype.as_numpy_dtype))
        at += n
    if at != len(flat):
        raise ValueError(f"flat vector has {len(flat)} entries; the variables hold {at}")


def _summed_loss(model, x, y, from_logits: bool = False):
    import tensorflow as tf

    out = model(x, training=False)
    return tf.reduce_sum(tf.keras.losses.sparse_categorical_crossentropy(y, out, from_logits=from_logits))


def _compiled(model, variables, from_logits: bool):
    """Traced chunk functions (gradient, HVP) of one model and variable list, cached on the model."""
    import tensorflow as tf

    cache = model.__dict__.setdefault("_privstudy_influence", {})
    key = (tuple(id(v) for v in variables), from_logits)
    if key in cache:
        return cache[key]

    def flat(ts):
        return tf.concat([tf.reshape(tf.convert_to_tensor(t), [-1]) for t in ts], 0)

    @tf.function(reduce_retracing=True)
    def grad_chunk(x, y):
        with tf.GradientTape() as tape:
            loss = _summed_loss(model, x, y, from_logits)
        return flat(tape.gradient(loss, variables))

    @tf.function(reduce_retracing=True)
    def hvp_chunk(x, y, tangent):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = _summed_loss(model, x, y, from_logits)
            dot = tf.reduce_sum(flat(inner.gradient(loss, variables)) * tangent)
        return flat(outer.gradient(dot, variables))

    sizes = [int(np.prod(v.shape)) for v in variables]

    @tf.function(reduce_retracing=True)
    def ggn_chunk(x, tangent):
        # J^T (diag p - p p^T) J v: J the Jacobian of the logits in the variables, p the softmax
        parts = [tf.reshape(t, v.shape) for t, v in zip(tf.split(tangent, sizes), variables)]
        with tf.autodiff.ForwardAccumulator(variables, parts) as acc:
            z = model(x, training=False)
        jv = acc.jvp(z)
        p = tf.nn.softmax(z)
        hz = p * jv - p * tf.reduce_sum(p * jv, axis=1, keepdims=True)
        with tf.GradientTape() as tape:
            z = model(x, training=False)
        return flat(tape.gradient(z, variables, output_gradients=hz))

    @tf.function(reduce_retracing=True)
    def loss_chunk(x, y):  # per example: summed in float64 by the caller
        out = model(x, training=False)
        return tf.keras.losses.sparse_categorical_crossentropy(y, out, from_logits=from_logits)

    cache[key] = (grad_chunk, hvp_chunk, ggn_chunk, loss_chunk)
    return cache[key]


def loss_sum(
    model, variables, x: np.ndarray, y: np.ndarray, chunk: int = 2048, from_logits: bool = False
) -> float:
    """The summed loss over (x, y): per-example losses in the model's precision, summed in float64 (a
    line search compares sums that differ in their last float32 digits); 0 for no examples."""
    loss_chunk = _compiled(model, variables, from_logits)[3]
    return float(
        sum(
            loss_chunk(x[i : i + chunk], y[i : i + chunk]).numpy().astype(np.float64).sum()
            for i in range(0, len(x), chunk)
        )
    )


def loss_gradient(
    model, variables, x: np.ndarray, y: np.ndarray, chunk: int = 2048, from_logits: bool = False
) -> np.ndarray:
    """Gradient of the summed loss over (x, y) in ``variables``, flat float64; zeros for no examples.
    ``from_logits``: the model outputs logits (else probabilities)."""
    grad_chunk = _compiled(model, variables, from_logits)[0]
    total = np.zeros(sum(int(np.prod(v.shape)) for v in variables))
    for i in range(0, len(x), chunk):
        total += grad_chunk(x[i : i + chunk], y[i : i + chunk]).numpy()
    return total


def hvp_function(
    model,
    variables,
    x: np.ndarray,
    y: np.ndarray,
    l2: float = 0.0,
    chunk: int = 1024,
    from_logits: bool = False,
    curvature: str = "hessian",
):
    """v -> H v, H the Hessian of sum loss(x, y) + l2/2 ||params||^2 in ``variables`` (flat float64).

    ``curvature="gauss_newton"``: the generalised Gauss-Newton matrix J^T (diag p - p p^T) J instead
    (J the Jacobian of the logits, p the softmax; needs ``from_logits``): positive semi-definite for any
    network, and equal to the Hessian where the logits are linear in the variables (the last layer)."""
    import tensorflow as tf

    if curvature not in ("hessian", "gauss_newton"):
        raise ValueError(f"curvature must be hessian or gauss_newton, got {curvature!r}")
    if curvature == "gauss_newton" and not from_logits:
        raise ValueError("the Gauss-Newton product needs a model that outputs logits (from_logits=True)")
    compiled = _compiled(model, variables, from_logits)
    hvp_chunk = compiled[1] if curvature == "hessian" else (lambda x, y, t: compiled[2](x, t))
    dtype = variables[0].dtype

    def hvp(vec: np.ndarray) -> np.ndarray:
        vec = np.asarray(vec, np.float64)
        tangent = tf.constant(vec, dtype=dtype)
        out = np.zeros(len(vec))
        for i in range(0, len(x), chunk):
            out += hvp_chunk(x[i : i + chunk], y[i : i + chunk], tangent).numpy()
        return out + l2 * vec

    return hvp
