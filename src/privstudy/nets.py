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


def build_text_model(vocab_size: int = 20000, embed_dim: int = 128, lstm_units: int = 128,
                     dropout: Optional[float] = None, l2: float = 0.0):
    """The published IMDB model: Embedding(20000, 128) -> LSTM(128, dropout 0.2, recurrent dropout 0.2)
    -> Dense(1) "logits" -> sigmoid. Inputs are token ids (see ``make_vectorizer``)."""
    import tensorflow as tf

    layers = tf.keras.layers
    reg = tf.keras.regularizers.l2(l2) if l2 > 0 else None
    rate = 0.2 if dropout is None else dropout
    inputs = tf.keras.Input(shape=(None,), dtype="int64", name="tokens")
    x = layers.Embedding(vocab_size, embed_dim, embeddings_regularizer=reg)(inputs)
    x = layers.LSTM(lstm_units, dropout=rate, recurrent_dropout=rate, kernel_regularizer=reg, name="features")(x)
    logits = layers.Dense(1, name="logits", kernel_regularizer=reg)(x)
    probs = layers.Activation("sigmoid", name="probs")(logits)
    return tf.keras.Model(inputs, probs, name="lstm")


def make_vectorizer(train_texts: np.ndarray, vocab_size: int = 20000, seq_len: int = 100):
    """Keras' TextVectorization fitted on the model's own training text only."""
    import tensorflow as tf

    vec = tf.keras.layers.TextVectorization(max_tokens=vocab_size, output_mode="int",
                                            output_sequence_length=seq_len)
    vec.adapt(tf.constant(np.asarray(train_texts, dtype=object).astype(str)), batch_size=1024)
    return vec


def vectorize(vec, texts: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Token ids (n, seq_len) int64 of raw texts (pandas/NumPy object arrays, never StringDtype)."""
    import tensorflow as tf

    arr = np.asarray(texts, dtype=object).astype(str)
    parts = [vec(tf.constant(arr[i:i + batch])).numpy() for i in range(0, len(arr), batch)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros((0, vec.get_config()["output_sequence_length"]), np.int64)


def is_binary(model) -> bool:
    """Whether the model ends in one sigmoid unit (a binary task)."""
    return int(model.output_shape[-1]) == 1


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
        augment: bool = False, seed: int = 0, dp_loss: bool = False) -> FitResult:
    """Train with Adam (or ``optimizer``); early stopping on validation loss when ``patience`` is given
    (best weights restored); ``augment``: random mirror and 4-pixel shifts (images); ``dp_loss``: a
    per-example loss and full batches, as tensorflow-privacy's DP optimizers need."""
    import tensorflow as tf

    binary = is_binary(model)
    n_classes = 2 if binary else int(model.output_shape[-1])
    # DP optimizers clip per-example (per-microbatch) gradients: they need the loss of every example.
    reduction = tf.keras.losses.Reduction.NONE if dp_loss else tf.keras.losses.Reduction.AUTO
    if binary:
        loss = tf.keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing, reduction=reduction)
        y_fit = np.asarray(y, np.float32).reshape(-1, 1)
        val = None if validation is None else (validation[0], np.asarray(validation[1], np.float32).reshape(-1, 1))
    elif label_smoothing > 0:
        loss = tf.keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing, reduction=reduction)
        y_fit = tf.keras.utils.to_categorical(y, n_classes)
        val = None if validation is None else (validation[0], tf.keras.utils.to_categorical(validation[1],
                                                                                            n_classes))
    else:
        loss = tf.keras.losses.SparseCategoricalCrossentropy(reduction=reduction)
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
    elif dp_loss:
        # Microbatching reshapes each batch: every batch must be full.
        data = (tf.data.Dataset.from_tensor_slices((x, y_fit)).shuffle(len(x), seed=seed)
                .batch(batch_size, drop_remainder=True))
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


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    """(fn(*args, **kwargs), seconds)."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def fit_adversarial(model, x: np.ndarray, y: np.ndarray, x_ref: np.ndarray, y_ref: np.ndarray, epochs: int,
                    batch_size: int, learning_rate: float, lam: float, seed: int = 0,
                    adversary_steps: int = 1) -> FitResult:
    """Adversarial regularisation (Nasr, Shokri and Houmansadr 2018): min-max training against an
    inference adversary.

    Per batch, the adversary h (an MLP on the prediction vector and the one-hot label) first takes
    ``adversary_steps`` steps to tell the training batch (members) from a batch of the reference set
    (non-members never trained on); then the classifier takes one step on
    cross-entropy + lam * mean log h(f(x), y) over the training batch, i.e. it is pushed to make
    its members look like non-members to the adversary.
    """
    import tensorflow as tf

    binary = is_binary(model)
    n_classes = 2 if binary else int(model.output_shape[-1])

    def prob_vec(out):
        return tf.concat([1 - out, out], axis=1) if binary else out

    adversary = tf.keras.Sequential([
        tf.keras.layers.Input(shape=(2 * n_classes,)),
        tf.keras.layers.Dense(64, activation="relu"), tf.keras.layers.Dense(32, activation="relu"),
        tf.keras.layers.Dense(1)], name="adversary")
    opt_f = tf.keras.optimizers.Adam(learning_rate)
    opt_h = tf.keras.optimizers.Adam(learning_rate)
    ce = (tf.keras.losses.BinaryCrossentropy() if binary else tf.keras.losses.SparseCategoricalCrossentropy())
    bce = tf.keras.losses.BinaryCrossentropy(from_logits=True)
    y_t = np.asarray(y, np.float32).reshape(-1, 1) if binary else np.asarray(y, np.int64)
    yr_t = np.asarray(y_ref, np.float32).reshape(-1, 1) if binary else np.asarray(y_ref, np.int64)

    def onehot(labels):
        flat = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        return tf.one_hot(flat, n_classes)

    @tf.function
    def adversary_step(xm, ym, xr, yr):
        pm, pr = prob_vec(model(xm, training=False)), prob_vec(model(xr, training=False))
        feats = tf.concat([tf.concat([pm, onehot(ym)], 1), tf.concat([pr, onehot(yr)], 1)], 0)
        target = tf.concat([tf.ones([tf.shape(pm)[0], 1]), tf.zeros([tf.shape(pr)[0], 1])], 0)
        with tf.GradientTape() as tape:
            loss = bce(target, adversary(feats, training=True))
        opt_h.apply_gradients(zip(tape.gradient(loss, adversary.trainable_variables), adversary.trainable_variables))
        return loss

    @tf.function
    def classifier_step(xm, ym):
        with tf.GradientTape() as tape:
            out = model(xm, training=True)
            gain = tf.math.log_sigmoid(adversary(tf.concat([prob_vec(out), onehot(ym)], 1), training=False))
            loss = ce(ym, out) + lam * tf.reduce_mean(gain) + tf.add_n(model.losses or [tf.constant(0.0)])
        opt_f.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    history: dict[str, list[float]] = {"loss": [], "adversary_loss": []}
    for _ in range(epochs):
        order = rng.permutation(len(x))
        f_losses, h_losses = [], []
        for i in range(0, len(order), batch_size):
            b = order[i:i + batch_size]
            r = rng.choice(len(x_ref), size=len(b), replace=len(b) > len(x_ref))
            for _ in range(adversary_steps):
                h_losses.append(float(adversary_step(x[b], y_t[b], x_ref[r], yr_t[r])))
            f_losses.append(float(classifier_step(x[b], y_t[b])))
        history["loss"].append(float(np.mean(f_losses)))
        history["adversary_loss"].append(float(np.mean(h_losses)))
    model.compile(optimizer=opt_f, loss=ce, metrics=["accuracy"])
    return FitResult(epochs_run=epochs, best_epoch=epochs, seconds=time.perf_counter() - start, history=history)
