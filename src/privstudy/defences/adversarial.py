"""Adversarial regularisation (Nasr, Shokri and Houmansadr, CCS 2018): training against an attacker."""

from __future__ import annotations

import time

import numpy as np

from privstudy.models.training import FitOptions, FitResult, is_binary


def fit_adversarial(
    model,
    x: np.ndarray,
    y: np.ndarray,
    x_ref: np.ndarray,
    y_ref: np.ndarray,
    opts: FitOptions,
    lam: float,
    adversary_steps: int = 1,
) -> FitResult:
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

    adversary = tf.keras.Sequential(
        [
            tf.keras.layers.Input(shape=(2 * n_classes,)),
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dense(32, activation="relu"),
            tf.keras.layers.Dense(1),
        ],
        name="adversary",
    )
    opt_f = tf.keras.optimizers.Adam(opts.learning_rate)
    opt_h = tf.keras.optimizers.Adam(opts.learning_rate)
    ce = tf.keras.losses.BinaryCrossentropy() if binary else tf.keras.losses.SparseCategoricalCrossentropy()
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
        opt_h.apply_gradients(
            zip(tape.gradient(loss, adversary.trainable_variables), adversary.trainable_variables)
        )
        return loss

    @tf.function
    def classifier_step(xm, ym):
        with tf.GradientTape() as tape:
            out = model(xm, training=True)
            gain = tf.math.log_sigmoid(adversary(tf.concat([prob_vec(out), onehot(ym)], 1), training=False))
            loss = ce(ym, out) + lam * tf.reduce_mean(gain) + tf.add_n(model.losses or [tf.constant(0.0)])
        opt_f.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    rng = np.random.default_rng(opts.seed)
    start = time.perf_counter()
    for _ in range(opts.epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(order), opts.batch_size):
            b = order[i : i + opts.batch_size]
            r = rng.choice(len(x_ref), size=len(b), replace=len(b) > len(x_ref))
            for _ in range(adversary_steps):
                adversary_step(x[b], y_t[b], x_ref[r], yr_t[r])
            classifier_step(x[b], y_t[b])
    model.compile(optimizer=opt_f, loss=ce, metrics=["accuracy"])
    return FitResult(epochs_run=opts.epochs, best_epoch=opts.epochs, train_s=time.perf_counter() - start)
