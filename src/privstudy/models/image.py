"""Keras image models of the studies (the published CNN, an MLP) and their per-channel standardisation.

Models end in a linear layer named ``logits`` followed by a softmax, so that attacks can read exact
logits; the penultimate Dense(128, tanh) layer is named ``features`` (the embedding in which the
confidence-similarity pipeline measures distances).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

ARCHS = ("cnn", "mlp", "vgg")


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 images scaled to [0, 1]."""
    xf = x.astype(np.float64) / 255.0
    axes = tuple(range(xf.ndim - 1))
    mean, std = xf.mean(axis=axes), xf.std(axis=axes)
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x / 255 - mean) / std per channel, float32."""
    return ((x.astype(np.float32) / 255.0) - mean) / std


def build_image_model(
    arch: str, input_shape: tuple[int, ...], n_classes: int, l2: float = 0.0, dropout: Optional[float] = None
):
    """The published CNN, or an MLP; ``dropout`` scales every dropout rate (None: the published rates).

    cnn: Conv32-Conv32 (same padding), MaxPool, Dropout 0.25, Conv64-Conv64 (valid padding; same
    padding on images smaller than 16 pixels, where valid padding would leave nothing), MaxPool,
    Dropout 0.25, Flatten, Dense(128, tanh) "features", Dropout 0.5, Dense(classes) "logits", softmax.
    mlp: Flatten, Dense(512, relu), Dropout 0.25, Dense(128, tanh) "features", Dropout 0.5, logits, softmax.
    vgg: the VGG-style CIFAR-10 network of Warnecke et al.'s label-poisoning experiments (1,798,282
    parameters on 32x32x3): three blocks of two Conv128 (3x3, same, relu, He uniform) each followed by
    BatchNorm, MaxPool, Dropout 0.1, 0.1, 0.2; Flatten, Dense(512, relu, He uniform) "features",
    BatchNorm, logits, softmax.
    """
    import tensorflow as tf

    layers = tf.keras.layers
    reg = tf.keras.regularizers.l2(l2) if l2 > 0 else None

    def rate(published: float) -> float:
        return published if dropout is None else dropout

    inputs = tf.keras.Input(shape=input_shape, name="image")
    x = inputs
    if arch == "cnn":
        second = "valid" if min(input_shape[:2]) >= 16 else "same"
        x = layers.Conv2D(32, 3, padding="same", activation="relu", kernel_regularizer=reg)(x)
        x = layers.Conv2D(32, 3, padding="same", activation="relu", kernel_regularizer=reg)(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(rate(0.25))(x)
        x = layers.Conv2D(64, 3, padding=second, activation="relu", kernel_regularizer=reg)(x)
        x = layers.Conv2D(64, 3, padding=second, activation="relu", kernel_regularizer=reg)(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(rate(0.25))(x)
        x = layers.Flatten()(x)
    elif arch == "vgg":
        conv = dict(kernel_size=3, padding="same", activation="relu", kernel_initializer="he_uniform")
        for block_rate in (0.1, 0.1, 0.2):
            for _ in range(2):
                x = layers.Conv2D(128, kernel_regularizer=reg, **conv)(x)
                x = layers.BatchNormalization()(x)
            x = layers.MaxPooling2D()(x)
            x = layers.Dropout(rate(block_rate))(x)
        x = layers.Flatten()(x)
        x = layers.Dense(512, activation="relu", kernel_initializer="he_uniform", name="features")(x)
        x = layers.BatchNormalization()(x)
        logits = layers.Dense(n_classes, name="logits", kernel_regularizer=reg)(x)
        return tf.keras.Model(inputs, layers.Softmax(name="probs")(logits), name=arch)
    elif arch == "mlp":
        x = layers.Flatten()(x)
        x = layers.Dense(512, activation="relu", kernel_regularizer=reg)(x)
        x = layers.Dropout(rate(0.25))(x)
    else:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")
    x = layers.Dense(128, activation="tanh", name="features", kernel_regularizer=reg)(x)
    x = layers.Dropout(rate(0.5))(x)
    logits = layers.Dense(n_classes, name="logits", kernel_regularizer=reg)(x)
    probs = layers.Softmax(name="probs")(logits)
    return tf.keras.Model(inputs, probs, name=arch)
