"""Keras image models of the study, their preprocessing, training and scoring (TensorFlow imported lazily).

Models end in a linear layer named ``logits`` followed by a softmax, so that attacks can read exact
logits; the penultimate Dense(128, tanh) layer is named ``features`` (the embedding in which the
confidence-similarity pipeline measures distances).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional

import numpy as np

ARCHS = ("cnn", "mlp")


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 images scaled to [0, 1]."""
    xf = x.astype(np.float64) / 255.0
    axes = tuple(range(xf.ndim - 1))
    mean, std = xf.mean(axis=axes), xf.std(axis=axes)
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x / 255 - mean) / std per channel, float32."""
    return ((x.astype(np.float32) / 255.0) - mean) / std


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and TensorFlow; optionally make TensorFlow's ops deterministic."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def build_image_model(arch: str, input_shape: tuple[int, ...], n_classes: int, l2: float = 0.0,
                      dropout: Optional[float] = None):
    """The published CNN, or an MLP; ``dropout`` scales every dropout rate (None: the published rates).

    cnn: Conv32-Conv32 (same padding), MaxPool, Dropout 0.25, Conv64-Conv64 (valid padding; same
    padding on images smaller than 16 pixels, where valid padding would leave nothing), MaxPool,
    Dropout 0.25, Flatten, Dense(128, tanh) "features", Dropout 0.5, Dense(classes) "logits", softmax.
    mlp: Flatten, Dense(512, relu), Dropout 0.25, Dense(128, tanh) "features", Dropout 0.5, logits, softmax.
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


@dataclasses.dataclass
class FitResult:
    """What training did: epochs run, the epoch whose weights were kept, time, last losses."""

    epochs_run: int
    best_epoch: int
    seconds: float
    history: dict[str, list[float]]


def fit(model, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int, learning_rate: float,
        validation: Optional[tuple[np.ndarray, np.ndarray]] = None, patience: Optional[int] = None,
        min_delta: float = 1e-3, label_smoothing: float = 0.0, optimizer: Any = None,
        augment: bool = False, seed: int = 0) -> FitResult:
    """Train with Adam (or ``optimizer``) on sparse labels; early stopping on validation loss when
    ``patience`` is given (best weights restored); ``augment``: random mirror and 4-pixel shifts."""
    import tensorflow as tf

    n_classes = int(model.output_shape[-1])
    if label_smoothing > 0:
        loss = tf.keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        y_fit = tf.keras.utils.to_categorical(y, n_classes)
        val = None if validation is None else (validation[0], tf.keras.utils.to_categorical(validation[1],
                                                                                            n_classes))
    else:
        loss = tf.keras.losses.SparseCategoricalCrossentropy()
        y_fit, val = y, validation
    model.compile(optimizer=optimizer or tf.keras.optimizers.Adam(learning_rate), loss=loss,
                  metrics=["accuracy"])
    callbacks = []
    if patience is not None:
        if validation is None:
            raise ValueError("early stopping needs a validation set")
        callbacks.append(tf.keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=min_delta,
                                                          patience=patience, restore_best_weights=True))
    data: Any = x
    if augment:
        data = _augmented(x, y_fit, batch_size, seed)
        y_arg, bs = None, None
    else:
        y_arg, bs = y_fit, batch_size
    start = time.perf_counter()
    hist = model.fit(data, y_arg, batch_size=bs, epochs=epochs, validation_data=val, callbacks=callbacks,
                     verbose=0, shuffle=True)
    seconds = time.perf_counter() - start
    h = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    run = len(h.get("loss", []))
    best = run
    if patience is not None and "val_loss" in h:
        best = int(np.argmin(h["val_loss"])) + 1
    return FitResult(epochs_run=run, best_epoch=best, seconds=seconds, history=h)


def _augmented(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int):
    import tensorflow as tf

    pad = 4

    def aug(img, label):
        img = tf.image.random_flip_left_right(img)
        h, w = img.shape[0], img.shape[1]
        img = tf.image.pad_to_bounding_box(img, pad, pad, h + 2 * pad, w + 2 * pad)
        img = tf.image.random_crop(img, (h, w, img.shape[2]))
        return img, label

    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.map(aug, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def logits_of(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The model's pre-softmax outputs (float64)."""
    import tensorflow as tf

    sub = tf.keras.Model(model.input, model.get_layer("logits").output)
    return sub.predict(x, batch_size=batch_size, verbose=0).astype(np.float64)


def features_of(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The 128-d outputs of the ``features`` layer."""
    import tensorflow as tf

    sub = tf.keras.Model(model.input, model.get_layer("features").output)
    return sub.predict(x, batch_size=batch_size, verbose=0)


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    """(fn(*args, **kwargs), seconds)."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start
