"""The training loop of every Keras model of the studies, its seeding, and reading logits and features."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional, Sequence

import numpy as np


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and TensorFlow; optionally make TensorFlow's ops deterministic."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def is_binary(model) -> bool:
    """Whether the model ends in one sigmoid unit (a binary task)."""
    return int(model.output_shape[-1]) == 1


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """How a model is trained (the optimizer itself is passed to ``fit``: it is stateful)."""

    epochs: int  # most training epochs
    batch_size: int
    learning_rate: float = 1e-3  # of the default Adam optimizer
    patience: Optional[int] = None  # early stopping on validation loss (best weights restored); None: off
    min_delta: float = 1e-3  # smallest validation-loss improvement that resets the patience
    label_smoothing: float = 0.0  # alpha of the cross-entropy
    augment: bool = False  # random mirror and 4-pixel shifts (images)
    seed: int = 0  # of the data order and the augmentation
    dp_loss: bool = False  # per-example loss and full batches, as tensorflow-privacy's DP optimizers need
    l2_in_loss: float = 0.0  # L2 penalty lambda * sum of squared weights added to every example's loss


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What training did: epochs run, the epoch whose weights were kept, wall time."""

    epochs_run: int
    best_epoch: int
    train_s: float


def fit(
    model,
    x: np.ndarray,
    y: np.ndarray,
    opts: FitOptions,
    validation: Optional[tuple[np.ndarray, np.ndarray]] = None,
    optimizer: Any = None,
    extra_callbacks: Sequence[Any] = (),
) -> FitResult:
    """Train ``model`` on (x, y) as ``opts`` says, with Adam unless an ``optimizer`` is given.

    Args:
        model: a Keras model from ``privstudy.models`` (softmax or one sigmoid output).
        x: (n, ...) inputs; y: (n,) integer labels.
        opts: the training options.
        validation: (x_val, y_val) for early stopping (needed when ``opts.patience`` is set).
        optimizer: e.g. a tensorflow-privacy DP optimizer (with ``opts.dp_loss``).
        extra_callbacks: further Keras callbacks (a benchmark's epoch timer), run after early stopping.
    """
    import tensorflow as tf

    binary = is_binary(model)
    n_classes = 2 if binary else int(model.output_shape[-1])
    # DP optimizers clip per-example (per-microbatch) gradients: they need the loss of every example.
    reduction = tf.keras.losses.Reduction.NONE if opts.dp_loss else tf.keras.losses.Reduction.AUTO
    if binary:
        loss = tf.keras.losses.BinaryCrossentropy(label_smoothing=opts.label_smoothing, reduction=reduction)
        y_fit = np.asarray(y, np.float32).reshape(-1, 1)
        val = (
            None
            if validation is None
            else (validation[0], np.asarray(validation[1], np.float32).reshape(-1, 1))
        )
    elif opts.label_smoothing > 0:
        loss = tf.keras.losses.CategoricalCrossentropy(
            label_smoothing=opts.label_smoothing, reduction=reduction
        )
        y_fit = tf.keras.utils.to_categorical(y, n_classes)
        val = (
            None
            if validation is None
            else (validation[0], tf.keras.utils.to_categorical(validation[1], n_classes))
        )
    else:
        loss = tf.keras.losses.SparseCategoricalCrossentropy(reduction=reduction)
        y_fit, val = y, validation
    if opts.l2_in_loss > 0:
        loss = _with_l2(loss, regularised_weights(model), opts.l2_in_loss)
    trained = model
    if _is_fast_dp(optimizer):
        trained, optimizer = _fast_dp_model(model, optimizer, opts)
    trained.compile(
        optimizer=optimizer or tf.keras.optimizers.Adam(opts.learning_rate), loss=loss, metrics=["accuracy"]
    )
    callbacks = []
    if opts.patience is not None:
        if validation is None:
            raise ValueError("early stopping needs a validation set")
        callbacks.append(
            tf.keras.callbacks.EarlyStopping(
                monitor="val_loss",
                min_delta=opts.min_delta,
                patience=opts.patience,
                restore_best_weights=True,
            )
        )
    callbacks += list(extra_callbacks)
    data: Any = x
    if opts.augment:
        data = _augmented(x, y_fit, opts.batch_size, opts.seed)
        y_arg, bs = None, None
    elif opts.dp_loss:
        # Microbatching reshapes each batch: every batch must be full.
        data = (
            tf.data.Dataset.from_tensor_slices((x, y_fit))
            .shuffle(len(x), seed=opts.seed)
            .batch(opts.batch_size, drop_remainder=True)
        )
        y_arg, bs = None, None
    else:
        y_arg, bs = y_fit, opts.batch_size
    start = time.perf_counter()
    hist = trained.fit(
        data,
        y_arg,
        batch_size=bs,
        epochs=opts.epochs,
        validation_data=val,
        callbacks=callbacks,
        verbose=0,
        shuffle=True,
    )
    train_s = time.perf_counter() - start
    run = len(hist.history.get("loss", []))
    best = run
    if opts.patience is not None and "val_loss" in hist.history:
        best = int(np.argmin(hist.history["val_loss"])) + 1
    return FitResult(epochs_run=run, best_epoch=best, train_s=train_s)


def _is_fast_dp(optimizer) -> bool:
    from privstudy.defences.fast_dp import FastDP

    return isinstance(optimizer, FastDP)


def _fast_dp_model(model, dp, opts: FitOptions):
    """The model fast-clipping DP-SGD trains (sharing ``model``'s layers) and its Keras optimizer."""
    import dataclasses as dc

    from privstudy.defences.fast_dp import dp_model

    if not opts.dp_loss:
        raise ValueError("fast DP-SGD needs FitOptions(dp_loss=True): the per-example loss")
    if opts.l2_in_loss > 0 or model.losses:
        raise ValueError(
            "fast DP-SGD does not clip an L2 penalty with each example; use dp_optimizer adam for l2 > 0"
        )
    if opts.augment or opts.patience is not None:
        raise ValueError("fast DP-SGD is combined here with neither augmentation nor early stopping")
    if dp.num_microbatches == opts.batch_size:
        dp = dc.replace(dp, num_microbatches=None)  # one example per microbatch
    return dp_model(model, dp), dp.keras_optimizer()


def regularised_weights(model) -> list:
    """The weights an L2 defence penalises (what the model builders regularise when built with ``l2``):
    the kernels of Dense and Conv2D layers, the input kernel of an LSTM, an Embedding's table."""
    import tensorflow as tf

    layers = tf.keras.layers
    weights = []
    for layer in model.layers:
        if isinstance(layer, layers.Embedding):
            weights.append(layer.embeddings)
        elif isinstance(layer, layers.LSTM):
            weights.append(layer.cell.kernel)
        elif isinstance(layer, (layers.Dense, layers.Conv2D)):
            weights.append(layer.kernel)
    return weights


def _with_l2(base, weights: list, l2: float):
    """``base`` (per-example or reduced) plus l2 * sum of squared ``weights`` on every example's loss.

    Keras' kernel_regularizer adds one scalar to the *reduced* loss, which tensorflow-privacy's DP
    optimizers cannot take (they need the per-example loss vector: "Shapes must be equal rank"). Here
    the penalty is part of each example's loss, so under DP-SGD its gradient 2 * l2 * w is clipped with
    the example's own and the noise is calibrated to the same clip: the sensitivity, and so the
    accountant's epsilon, are unchanged. Without DP the mean of these losses equals Keras' regularised
    loss exactly.
    """
    import tensorflow as tf

    class PenalisedLoss(tf.keras.losses.Loss):
        def __init__(self):
            super().__init__(reduction=base.reduction, name=f"{base.name}_l2")

        def call(self, y_true, y_pred):
            per_example = base.call(y_true, y_pred)
            penalty = tf.add_n([tf.reduce_sum(tf.square(w)) for w in weights])
            return per_example + tf.cast(l2, per_example.dtype) * penalty

    return PenalisedLoss()


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
    """The model's pre-softmax outputs (float64), (n, classes); a binary model's logit z becomes (0, z),
    whose softmax is (1 - sigmoid(z), sigmoid(z))."""
    import tensorflow as tf

    sub = tf.keras.Model(model.input, model.get_layer("logits").output)
    z = sub.predict(x, batch_size=batch_size, verbose=0).astype(np.float64)
    if z.shape[1] == 1:
        z = np.concatenate([np.zeros_like(z), z], axis=1)
    return z


def features_of(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The 128-d outputs of the ``features`` layer."""
    import tensorflow as tf

    sub = tf.keras.Model(model.input, model.get_layer("features").output)
    return sub.predict(x, batch_size=batch_size, verbose=0)
