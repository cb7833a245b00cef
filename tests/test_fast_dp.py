"""DP-SGD by fast gradient clipping: per-example norms against a brute-force loop, the clipped step against
its definition and against tensorflow-privacy's optimizer, the noise's scale and seed."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
L = tf.keras.layers


def _sce():
    return tf.keras.losses.SparseCategoricalCrossentropy(reduction="none")


def _bce():
    return tf.keras.losses.BinaryCrossentropy(reduction="none")


def _per_example(loss):
    return lambda y, p: tf.reshape(loss(y, p), [-1])


def _brute(model, x, y, loss, microbatches=None):
    """Every microbatch's loss gradient (the mean of its examples' losses), one tape per microbatch."""
    n = len(x)
    size = n // (microbatches or n)
    out = []
    for start in range(0, n, size):
        with tf.GradientTape() as tape:
            value = tf.reduce_mean(
                _per_example(loss)(y[start : start + size], model(x[start : start + size]))
            )
        grads = tape.gradient(value, model.trainable_variables)
        out.append([tf.convert_to_tensor(g).numpy() for g in grads])
    return out


def _norms(grads):
    return np.array([np.sqrt(sum(float(np.sum(g**2)) for g in gs)) for gs in grads])


def _conv(bias=True):
    tf.keras.utils.set_random_seed(1)
    inp = tf.keras.Input((9, 9, 2))
    h = L.Conv2D(3, 3, padding="same", activation="relu", use_bias=bias)(inp)
    h = L.Conv2D(4, (3, 2), strides=2, padding="valid")(h)
    h = L.Conv2D(5, 2, strides=(1, 2), padding="same")(h)
    h = L.Flatten()(h)
    model = tf.keras.Model(inp, L.Dense(3, activation="softmax")(h))
    rng = np.random.default_rng(1)
    return model, rng.normal(size=(6, 9, 9, 2)).astype(np.float32), rng.integers(0, 3, 6), _sce()


def _conv_ghost():
    """A convolution with few output positions and many weights: its norms take the Gram-matrix route."""
    tf.keras.utils.set_random_seed(5)
    inp = tf.keras.Input((3, 3, 6))
    h = L.Flatten()(L.Conv2D(8, 2, activation="tanh")(inp))  # T = 4 positions, K = 24, C = 8
    model = tf.keras.Model(inp, L.Dense(3, activation="softmax")(h))
    rng = np.random.default_rng(5)
    return model, rng.normal(size=(6, 3, 3, 6)).astype(np.float32), rng.integers(0, 3, 6), _sce()


def _lstm(mask_zero=True, bias=True, sequences=False):
    tf.keras.utils.set_random_seed(2)
    inp = tf.keras.Input((6 if sequences else None,), dtype="int64")
    h = L.Embedding(7, 4, mask_zero=mask_zero)(inp)
    h = L.LSTM(5, use_bias=bias, return_sequences=sequences)(h)
    if sequences:
        h = L.Flatten()(h)
    model = tf.keras.Model(inp, L.Dense(1, activation="sigmoid")(h))
    # Repeated tokens inside and across examples; zeros are masked (padding) when mask_zero.
    x = np.array([[1, 1, 2, 3, 0, 0], [2, 2, 2, 2, 2, 2], [4, 5, 6, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    return model, x, np.array([[0.0], [1.0], [1.0], [0.0]]), _bce()


def _mlp():
    tf.keras.utils.set_random_seed(3)
    inp = tf.keras.Input((4, 3))
    h = L.Dense(6, activation="tanh")(inp)  # applied at 4 positions
    h = L.Flatten()(h)
    model = tf.keras.Model(inp, L.Dense(3, activation="softmax")(L.Dense(5, activation="relu")(h)))
    rng = np.random.default_rng(3)
    return model, rng.normal(size=(5, 4, 3)).astype(np.float32), rng.integers(0, 3, 5), _sce()


def _transformer():
    tf.keras.utils.set_random_seed(4)
    inp = tf.keras.Input((5,), dtype="int64")
    h = L.Embedding(9, 8)(inp)
    h = L.LayerNormalization()(h + L.MultiHeadAttention(2, 4)(h, h))
    h = L.Flatten()(h)
    model = tf.keras.Model(inp, L.Dense(3, activation="softmax")(h))
    x = np.array([[1, 2, 2, 3, 8], [4, 4, 4, 4, 4], [0, 1, 5, 6, 7], [3, 2, 1, 3, 2]])
    return model, x, np.array([0, 1, 2, 1]), _sce()


MODELS = {
    "conv": _conv,
    "conv_no_bias": lambda: _conv(bias=False),
    "conv_ghost": _conv_ghost,
    "lstm_masked": _lstm,
    "lstm_unmasked_no_bias": lambda: _lstm(mask_zero=False, bias=False),
    "lstm_sequences": lambda: _lstm(mask_zero=False, sequences=True),
    "mlp": _mlp,
    "transformer": _transformer,
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("clipping", ["fast", "per_example"])
def test_per_example_norms_equal_a_brute_force_loop(name, clipping):
    from privstudy.defences.fast_dp import clipped_gradient_sum

    model, x, y, loss = MODELS[name]()
    want = _norms(_brute(model, x, y, loss))
    _, _, norms = clipped_gradient_sum(model, x, y, _per_example(loss), 1e9, clipping=clipping)
    np.testing.assert_allclose(norms.numpy(), want, rtol=2e-5)


@pytest.mark.parametrize("name", ["conv", "conv_ghost", "lstm_masked", "mlp", "transformer"])
def test_clipped_sum_is_the_sum_of_clipped_per_example_gradients(name):
    from privstudy.defences.fast_dp import clipped_gradient_sum

    model, x, y, loss = MODELS[name]()
    brute = _brute(model, x, y, loss)
    norms = _norms(brute)
    clip = float(np.median(norms))  # about half the examples are clipped
    want = [sum(min(1.0, clip / n) * gs[k] for n, gs in zip(norms, brute)) for k in range(len(brute[0]))]
    grads, _, _ = clipped_gradient_sum(model, x, y, _per_example(loss), clip)
    for g, w in zip(grads, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["conv", "lstm_unmasked_no_bias", "mlp"])
def test_microbatch_norms_and_sum(name):
    from privstudy.defences.fast_dp import clipped_gradient_sum

    model, x, y, loss = MODELS[name]()
    x, y = x[:4], y[:4]
    brute = _brute(model, x, y, loss, microbatches=2)
    norms = _norms(brute)
    clip = float(norms.min()) * 1.01  # the larger microbatch is clipped
    grads, _, got = clipped_gradient_sum(model, x, y, _per_example(loss), clip, num_microbatches=2)
    np.testing.assert_allclose(got.numpy(), norms, rtol=2e-5)
    want = [sum(min(1.0, clip / n) * gs[k] for n, gs in zip(norms, brute)) for k in range(len(brute[0]))]
    for g, w in zip(grads, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=1e-6)


def test_conv_norms_and_sum_with_image_sizes_known_only_when_the_graph_runs():
    """A convolution on images of any size: traced with unknown height and width, the patch views take
    their padding and bounds from the running shapes; norms and clipped sum still equal the loop's."""
    from privstudy.defences.fast_dp import clipped_gradient_sum

    tf.keras.utils.set_random_seed(6)
    inp = tf.keras.Input((None, None, 2))
    h = L.Conv2D(3, 3, padding="same", activation="relu")(inp)
    h = L.Conv2D(4, (3, 2), strides=2, padding="same")(h)
    h = L.GlobalAveragePooling2D()(h)
    model = tf.keras.Model(inp, L.Dense(3, activation="softmax")(h))
    rng = np.random.default_rng(6)
    x, y, loss = rng.normal(size=(5, 8, 7, 2)).astype(np.float32), rng.integers(0, 3, 5), _sce()
    brute = _brute(model, x, y, loss)
    norms = _norms(brute)
    clip = float(np.median(norms))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 2]), tf.TensorSpec([None], tf.int64)])
    def step(images, labels):
        assert images.shape[1] is None and images.shape[2] is None
        return clipped_gradient_sum(model, images, labels, _per_example(loss), clip)

    grads, _, got = step(tf.constant(x), tf.constant(y))
    np.testing.assert_allclose(got.numpy(), norms, rtol=2e-5)
    want = [sum(min(1.0, clip / n) * gs[k] for n, gs in zip(norms, brute)) for k in range(len(brute[0]))]
    for g, w in zip(grads, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=1e-6)


def test_lstm_forward_equals_keras_lstm():
    from privstudy.defences.fast_dp import lstm_layer_computation

    for mask_zero in (False, True):
        model, x, _, _ = _lstm(mask_zero=mask_zero)
        emb, lstm = model.layers[1], model.layers[2]
        e = emb(x)
        with tf.GradientTape() as tape:
            _, ours, _ = lstm_layer_computation(lstm, (e,), {}, tape)
        np.testing.assert_allclose(ours.numpy(), lstm(e).numpy(), atol=1e-6)


@pytest.mark.parametrize("arch", ["lstm", "cnn"])
def test_one_example_with_dropout_is_clipped_to_exactly_the_clip(arch):
    """Norms and gradient come from the same forward pass, dropout masks included: a batch of one
    example whose gradient is clipped has a clipped gradient of norm exactly the clip."""
    from privstudy.defences.fast_dp import clipped_gradient_sum

    tf.keras.utils.set_random_seed(5)
    if arch == "lstm":
        from privstudy.models.text import build_text_model

        model, loss = build_text_model(50, 8, 6, dropout=0.5), _bce()
        xs, ys = np.random.default_rng(5).integers(1, 50, (8, 12)), np.ones((8, 1), np.float32)
    else:
        from privstudy.models.image import build_image_model

        model, loss = build_image_model("cnn", (8, 8, 3), 4, dropout=0.5), _sce()
        xs, ys = np.random.default_rng(5).normal(size=(8, 8, 8, 3)).astype(np.float32), np.arange(8) % 4
    for i in range(len(xs)):
        grads, _, norms = clipped_gradient_sum(model, xs[i : i + 1], ys[i : i + 1], _per_example(loss), 1e-4)
        assert float(norms[0]) > 1e-4
        total = np.sqrt(sum(float(tf.reduce_sum(g**2)) for g in grads))
        assert total == pytest.approx(1e-4, rel=1e-4)


def _train(model_fn, optimizer, x, y, loss, batch, steps_epochs=2, microbatches=None):
    from privstudy.defences.fast_dp import FastDP, dp_model

    model = model_fn()
    trained = dp_model(model, optimizer) if isinstance(optimizer, FastDP) else model
    trained.compile(
        optimizer=optimizer.keras_optimizer() if isinstance(optimizer, FastDP) else optimizer, loss=loss
    )
    trained.fit(x, y, batch_size=batch, epochs=steps_epochs, shuffle=False, verbose=0)
    return model.get_weights()


def _cnn_model():
    tf.keras.utils.set_random_seed(6)
    inp = tf.keras.Input((6, 6, 2))
    h = L.Flatten()(L.Conv2D(3, 3, activation="relu")(inp))
    return tf.keras.Model(inp, L.Dense(3, activation="softmax")(h))


@pytest.mark.parametrize("microbatches", [None, 4])
def test_zero_noise_steps_equal_tensorflow_privacy_optimizer(microbatches):
    """With noise 0, fast clipping takes the steps of DPKerasSGDOptimizer (the library's clipped mean)."""
    from privstudy.defences.dp import make_optimizer
    from privstudy.defences.fast_dp import FastDP

    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(32, 6, 6, 2)).astype(np.float32), rng.integers(0, 3, 32)
    micro = microbatches or 8
    fast = FastDP("sgd", 0.5, l2_norm_clip=0.05, noise_multiplier=0.0, num_microbatches=microbatches)
    lib = make_optimizer("sgd", 0.5, l2_norm_clip=0.05, noise_multiplier=0.0, num_microbatches=micro)
    a = _train(_cnn_model, fast, x, y, _sce(), 8)
    b = _train(_cnn_model, lib, x, y, _sce(), 8)
    assert not np.allclose(a[0], _cnn_model().get_weights()[0]), "training moved the weights"
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, atol=2e-6)


def test_fast_and_per_example_paths_give_the_same_weights_with_the_same_noise_seed():
    from privstudy.defences.fast_dp import FastDP

    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(32, 6, 6, 2)).astype(np.float32), rng.integers(0, 3, 32)
    out = {}
    for clipping in ("fast", "per_example"):
        dp = FastDP("adam", 0.01, 0.1, noise_multiplier=1.1, noise_seed=3, clipping=clipping)
        out[clipping] = _train(_cnn_model, dp, x, y, _sce(), 8)
    for u, v in zip(out["fast"], out["per_example"]):
        np.testing.assert_allclose(u, v, atol=1e-5)
    other = _train(_cnn_model, FastDP("adam", 0.01, 0.1, 1.1, noise_seed=4), x, y, _sce(), 8)
    assert not np.allclose(other[0], out["fast"][0], atol=1e-4), "another seed draws other noise"


def test_noise_has_standard_deviation_multiplier_times_clip_over_batch():
    """One SGD step with learning rate 1: the step minus the noiseless step is N(0, (sigma*C/B)^2) in
    every coordinate. 6,915 coordinates give the standard deviation to within 4 SE = 3.4%."""
    from privstudy.defences.fast_dp import FastDP

    def big():
        tf.keras.utils.set_random_seed(8)
        inp = tf.keras.Input((50,))
        return tf.keras.Model(inp, L.Dense(3, activation="softmax")(L.Dense(128, activation="tanh")(inp)))

    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(16, 50)).astype(np.float32), rng.integers(0, 3, 16)
    sigma, clip, batch = 1.3, 0.5, 16
    noisy = _train(big, FastDP("sgd", 1.0, clip, sigma, noise_seed=1), x, y, _sce(), batch, 1)
    clean = _train(big, FastDP("sgd", 1.0, clip, 0.0), x, y, _sce(), batch, 1)
    diff = np.concatenate([(a - b).ravel() for a, b in zip(noisy, clean)])
    want = sigma * clip / batch
    n = diff.size
    assert n > 6500
    assert abs(diff.mean()) < 4 * want / np.sqrt(n)
    assert diff.std() == pytest.approx(want, rel=4 / np.sqrt(2 * n))


def test_unregistered_layers_and_l2_are_refused():
    from privstudy.defences.fast_dp import FastDP, dp_model
    from privstudy.models.image import build_image_model
    from privstudy.models.training import FitOptions, fit

    with pytest.raises(ValueError, match="BatchNormalization"):
        dp_model(build_image_model("vgg", (8, 8, 3), 4), FastDP("adam", 1e-3, 1.0, 1.0))
    model = build_image_model("mlp", (4, 4, 3), 2)
    x, y = np.zeros((8, 4, 4, 3), np.float32), np.zeros(8, int)
    with pytest.raises(ValueError, match="L2 penalty"):
        fit(
            model, x, y, FitOptions(1, 4, dp_loss=True, l2_in_loss=1e-3), optimizer=FastDP("adam", 1e-3, 1, 1)
        )


@pytest.mark.parametrize(
    "change, message",
    [({"l2": 1e-3}, "L2 penalty"), ({"arch": "vgg", "dataset": "cifar10"}, "BatchNormalization")],
)
def test_study_config_refuses_what_the_fast_path_cannot_clip(change, message):
    from privstudy.harness.config import ConfigError, from_mapping
    from privstudy.mia_runner import MiaTrainConfig

    base = {
        "dataset": "digits",
        "pool_size": 400,
        "arch": "mlp",
        "dp_noise_multiplier": 1.0,
        "dp_optimizer": "adam_fast",
    }
    from_mapping(MiaTrainConfig, base)
    with pytest.raises(ConfigError, match=message):
        from_mapping(MiaTrainConfig, {**base, **change})


def test_mixed_ghost_clipping_chooses_the_smaller_computation():
    from privstudy.defences.fast_dp import _use_ghost, sum_outer_sq_norms

    # T (K + C) multiplications for the Gram matrices against K C for the per-example gradients.
    assert _use_ghost(4, 24, 8) and not _use_ghost(1024, 288, 32) and not _use_ghost(None, 24, 8)
    rng = np.random.default_rng(0)
    for t, k, c in [(3, 20, 10), (30, 4, 5)]:  # one of each route
        a, g = rng.normal(size=(2, t, k)), rng.normal(size=(2, t, c))
        want = [np.sum(np.einsum("tk,tc->kc", a[b], g[b]) ** 2) for b in range(2)]
        got = sum_outer_sq_norms(tf.constant(a), tf.constant(g)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-10)


def test_box_muller_by_hand():
    """TensorFlow's float32 transform: u = (low 23 bits) / 2^23, u1 floored at 1e-7,
    z = sqrt(-2 ln u1) * (sin 2 pi u2, cos 2 pi u2)."""
    from privstudy.defences.fast_dp import box_muller

    half, quarter = 1 << 22, 1 << 21  # u = 0.5 and u = 0.25
    bits = np.array([[half, half | 0xFF800000, 0, half], [quarter, quarter, quarter, 0]], np.uint32)
    z = box_muller(tf.constant(bits)).numpy()
    r = np.sqrt(2 * np.log(2))
    floor = np.sqrt(-2 * np.log(1e-7))
    want_sin = [r, r, floor, 0.0]  # the high bits are ignored; u1 = 0 is floored; u2 = 0: sin 0 = 0
    want_cos = [0.0, 0.0, 0.0, r]
    np.testing.assert_allclose(z, want_sin + want_cos, atol=2e-6)


def test_gaussian_noise_is_standard_normal_and_independent():
    """400,001 draws over odd-sized shapes: shapes kept; mean, variance, tail mass P(|z| > 2) and the
    correlation of paired draws within 4 standard errors of N(0, 1)'s; a Kolmogorov-Smirnov test against
    N(0, 1) and against TensorFlow's own sampler."""
    from scipy import stats

    from privstudy.defences.fast_dp import gaussian_noise

    shapes = [(400, 500), (1,), (2, 5, 20_000)]
    gen = tf.random.Generator.from_seed(11)
    parts = gaussian_noise(gen, [tf.constant(s) for s in shapes])
    assert [tuple(p.shape) for p in parts] == shapes
    z = np.concatenate([p.numpy().ravel() for p in parts]).astype(np.float64)
    n = z.size
    assert n == 400_001
    assert abs(z.mean()) < 4 / np.sqrt(n)
    assert abs(z.var() - 1) < 4 * np.sqrt(2 / n)
    tail = 2 * stats.norm.sf(2)
    assert abs(np.mean(np.abs(z) > 2) - tail) < 4 * np.sqrt(tail * (1 - tail) / n)
    m = (n - 1) // 2
    assert abs(np.corrcoef(z[:m], z[m : 2 * m])[0, 1]) < 4 / np.sqrt(m)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    reference = tf.random.Generator.from_seed(12).normal([n]).numpy()
    assert stats.ks_2samp(z, reference).pvalue > 1e-3
    again = gaussian_noise(tf.random.Generator.from_seed(11), [tf.constant(s) for s in shapes])
    np.testing.assert_array_equal(again[0].numpy(), parts[0].numpy())
