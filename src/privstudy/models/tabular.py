"""The fully connected tanh network of the tabular membership-inference papers.

Nasr, Shokri and Houmansadr (2018) and the papers after them train Purchase-100 and Texas-100 models
as Dense 1024-512-256-128, tanh, then a linear classifier; ``hidden`` sets the widths (a narrower
network trains in seconds on a CPU). The last hidden layer is named ``features`` and the linear layer
``logits`` (followed by a softmax), as in the image models.
"""

from __future__ import annotations

from typing import Optional, Sequence

PAPER_HIDDEN = (1024, 512, 256, 128)


def build_tabular_model(
    n_features: int,
    n_classes: int,
    hidden: Sequence[int] = PAPER_HIDDEN,
    l2: float = 0.0,
    dropout: Optional[float] = None,
):
    """Dense tanh layers of widths ``hidden``, then logits and softmax; ``dropout`` after each hidden
    layer when given (the papers' network has none)."""
    import tensorflow as tf

    if not hidden or min(hidden) < 1:
        raise ValueError(f"hidden must list at least one positive width, got {tuple(hidden)}")
    layers = tf.keras.layers
    reg = tf.keras.regularizers.l2(l2) if l2 > 0 else None
    inputs = tf.keras.Input(shape=(n_features,), name="record")
    x = inputs
    for i, width in enumerate(hidden):
        last = i == len(hidden) - 1
        x = layers.Dense(width, activation="tanh", kernel_regularizer=reg, name="features" if last else None)(
            x
        )
        if dropout:
            x = layers.Dropout(dropout)(x)
    logits = layers.Dense(n_classes, name="logits", kernel_regularizer=reg)(x)
    probs = layers.Softmax(name="probs")(logits)
    return tf.keras.Model(inputs, probs, name="tabular_mlp")
