"""DP-SGD at close to the cost of plain training: per-example gradient *norms* without per-example gradients.

DP-SGD clips every example's gradient to ``l2_norm_clip`` and adds Gaussian noise of standard deviation
``noise_multiplier * l2_norm_clip`` to their sum. tensorflow-privacy's optimizers get there by
materialising every example's gradient (for the IMDB LSTM, the 20,000 x 128 embedding once per example).
This module takes the "fast gradient clipping" route (Goodfellow 2015; Lee and Kifer 2021; Li et al.
2022), through tensorflow-privacy's layer registry:

1. one forward pass, recorded on a tape, in which every trainable layer is computed by its registry
   function: it exposes an intermediate tensor (a layer's pre-activation output, an LSTM's input
   projection, an embedding table) whose per-example gradient, with the layer's own inputs, gives that
   example's squared gradient norm for the layer's weights;
2. one backward pass to those tensors gives every example's gradient norm ``n_i``;
3. the sum of the clipped per-example gradients, the gradient of ``sum_i c_i * loss_i`` with
   ``c_i = min(1, l2_norm_clip / n_i)``, is then local to each layer: its inputs times ``c_i`` times the
   gradient at its watched tensor (or a weighted sum of the per-example gradients the norms already
   computed), with no second pass through the network; a model with a layer whose weights reach its
   watched tensor through other layers (MultiHeadAttention, LayerNormalization) takes a second backward
   pass of the same forward pass instead;
4. Gaussian noise ``N(0, (noise_multiplier * l2_norm_clip)^2)`` is added to that sum, which is then
   divided by the number of microbatches, exactly as ``DPKerasAdamOptimizer`` does.

Norms and gradient come from the *same* forward pass, so dropout masks are the same for both
(tensorflow-privacy's ``DPModel`` runs a second forward pass for the gradient, in which dropout draws new
masks, and runs the norm pass with dropout off: its clipped gradients are then not bounded by the clip).
The noise is drawn from a seeded ``tf.random.Generator`` held by the model, by TensorFlow's own
Box-Muller transform written as vectorized ops (:func:`gaussian_noise`).

The registry adds to tensorflow-privacy's Dense, Embedding, EinsumDense, LayerNormalization and
MultiHeadAttention functions:
- ``Conv2D``: per-example kernel gradient ``P_i^T G_i`` from the unfolded input patches ``P_i`` and the
  output gradients ``G_i``; its squared norm is computed directly (``B*K*C`` memory) or by the ghost
  identity ``sum_{p,q} (P_p . P_q)(G_p . G_q)`` (``B*T^2``), whichever is smaller, as mixed ghost
  clipping chooses (Bu et al. 2022);
- ``LSTM``: recomputed from its cell's weights with the input projection ``z = x W + b`` exposed; the
  gradient at ``z_t`` is the gradient at the gates' pre-activation, so the per-example gradients of
  ``W``, ``U`` and ``b`` are ``sum_t x_t^T d_t``, ``sum_t h_{t-1}^T d_t`` and ``sum_t d_t``: a Jacobian
  over the LSTM's own weights only (131k for the published LSTM), never the embedding's 2.56M. Dropout and
  recurrent dropout are applied as Keras' LSTM does (one mask per sequence);
- ``Embedding`` with ``mask_zero``: tensorflow-privacy's function, with the mask passed on.

``clipping="per_example"`` computes the norms from the full per-example Jacobian of the same forward pass
instead (slow; the reference the fast path is tested against); everything else is shared.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

FAST_OPTIMIZERS = ("adam_fast", "sgd_fast")
CLIPPINGS = ("fast", "per_example")


@dataclasses.dataclass(frozen=True)
class FastDP:
    """DP-SGD by fast gradient clipping (what ``make_optimizer`` returns for ``adam_fast``/``sgd_fast``).

    ``fit`` trains the model through :func:`dp_model` with it; ``num_microbatches`` None clips each
    example, otherwise each of that many contiguous slices of a batch (their mean loss), as
    tensorflow-privacy's optimizers do.
    """

    optimizer: str  # "adam" or "sgd"
    learning_rate: float
    l2_norm_clip: float
    noise_multiplier: float
    num_microbatches: Optional[int] = None
    noise_seed: int = 0
    clipping: str = "fast"

    def __post_init__(self):
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be adam or sgd, got {self.optimizer!r}")
        if self.clipping not in CLIPPINGS:
            raise ValueError(f"clipping must be one of {', '.join(CLIPPINGS)}, got {self.clipping!r}")
        if not self.l2_norm_clip > 0:
            raise ValueError(f"l2_norm_clip must be > 0, got {self.l2_norm_clip}")
        if self.noise_multiplier < 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")

    def keras_optimizer(self):
        import tensorflow as tf

        cls = tf.keras.optimizers.Adam if self.optimizer == "adam" else tf.keras.optimizers.SGD
        return cls(self.learning_rate)


# ----------------------------------------------------------------------------------------------------------
# Squared norms of per-example sums of outer products


def _group(x, num_microbatches):
    """(B, T, K) -> (M, B/M * T, K): a microbatch's gradient is the sum of its examples'."""
    import tensorflow as tf

    if num_microbatches is None:
        return x
    return tf.reshape(x, [num_microbatches, -1, x.shape[-1]])


def _use_ghost(t, k, c) -> bool:
    """Mixed ghost clipping's choice: the (T, T) Gram matrices when they take fewer multiplications than
    the (K, C) per-example gradients (Bu et al. 2022)."""
    return t is not None and t * (k + c) < k * c


def per_example_outer(a, g, num_microbatches=None):
    """The per-example (or per-microbatch) sums ``sum_t a[b, t]^T g[b, t]``, one (B, K_j, C) tensor per
    block ``a_j`` of ``a`` (see :func:`sum_outer_sq_norms`)."""
    import tensorflow as tf

    blocks = list(a) if isinstance(a, (list, tuple)) else [a]
    g = _group(g, num_microbatches)
    return [tf.matmul(_group(x, num_microbatches), g, transpose_a=True) for x in blocks]


def sum_outer_sq_norms(a, g, num_microbatches=None):
    """``||sum_t a[b, t]^T g[b, t]||_F^2`` for every row ``b`` of a (B, T, K) and a (B, T, C) tensor.

    This is the squared norm of a per-example weight gradient whenever the weight is applied at ``T``
    positions (an LSTM's time steps, a convolution's output positions). ``a`` may be a list of (B, T, K)
    tensors, the blocks of a (B, T, n*K) one (a convolution's kernel offsets). Computed directly (the
    (B, K, C) per-example gradients) or by the ghost identity (the (B, T, T) Gram matrices,
    ``sum_{t,s} (a_t . a_s)(g_t . g_s)``), whichever takes fewer multiplications, as mixed ghost clipping
    chooses; with ``num_microbatches``, rows are grouped into that many contiguous microbatches first
    (a microbatch's gradient is the sum of its examples').
    """
    import tensorflow as tf

    blocks = list(a) if isinstance(a, (list, tuple)) else [a]
    t, k, c = _group(blocks[0], num_microbatches).shape[1], sum(x.shape[2] for x in blocks), g.shape[2]
    if _use_ghost(t, k, c):
        blocks = [_group(x, num_microbatches) for x in blocks]
        g = _group(g, num_microbatches)
        aa = tf.add_n([tf.matmul(x, x, transpose_b=True) for x in blocks])
        gg = tf.matmul(g, g, transpose_b=True)
        return tf.reduce_sum(aa * gg, axis=[1, 2])
    return tf.add_n(
        [tf.reduce_sum(tf.square(p), axis=[1, 2]) for p in per_example_outer(blocks, g, num_microbatches)]
    )


def _bias_sq_norms(g, num_microbatches=None):
    """``||sum_p g[b, p]||^2`` for a (B, T, C) gradient (a bias applied at T positions)."""
    import tensorflow as tf

    if num_microbatches is not None:
        g = tf.reshape(g, [num_microbatches, -1, tf.shape(g)[-1]])
    return tf.reduce_sum(tf.square(tf.reduce_sum(g, axis=1)), axis=1)


# ----------------------------------------------------------------------------------------------------------
# Registry functions


def conv2d_layer_computation(layer_instance, input_args, input_kwargs, tape, num_microbatches=None):
    """tensorflow-privacy registry function for ``tf.keras.layers.Conv2D`` (channels last, no groups,
    no dilation)."""
    import tensorflow as tf

    layer = layer_instance
    if input_kwargs:
        raise ValueError("Conv2D layer calls should not receive kwargs")
    if len(input_args) != 1:
        raise ValueError("Conv2D takes one input")
    if layer.data_format != "channels_last" or layer.groups != 1 or tuple(layer.dilation_rate) != (1, 1):
        raise NotImplementedError(
            "fast DP clipping supports Conv2D with channels_last, groups=1 and dilation 1 only; "
            "use a tensorflow-privacy optimizer (dp_optimizer adam) for this model"
        )
    x = input_args[0]
    activation = layer.activation
    layer.activation = None
    try:
        base_vars = layer(x)
    finally:
        layer.activation = activation
    tape.watch(base_vars)
    outputs = activation(base_vars) if activation is not None else base_vars
    kh, kw = layer.kernel_size
    sh, sw = layer.strides

    kept = {}  # the per-example kernel gradients, when the norms computed them (book-keeping)

    def sqr_norm_fn(grads):
        views = _patch_views(x, grads, kh, kw, sh, sw, layer.padding)
        c = grads.shape[-1]
        t = None if None in grads.shape[1:3] else grads.shape[1] * grads.shape[2]
        if t is not None:
            g = tf.reshape(grads, [-1, t, c])
        else:
            g = tf.ensure_shape(tf.reshape(grads, [tf.shape(grads)[0], -1, c]), [None, t, c])
        if _use_ghost(_group(views[0], num_microbatches).shape[1], sum(v.shape[2] for v in views), c):
            norms = sum_outer_sq_norms(views, g, num_microbatches)
        else:
            # (B, kh*kw, Cin, C): the per-example kernel gradients in the kernel's own order, stacked
            # once for both the norms and the weighted sum.
            per_example = tf.stack(per_example_outer(views, g, num_microbatches), axis=1)
            kept["kernel"] = per_example
            norms = tf.reduce_sum(tf.square(per_example), axis=[1, 2, 3])
        if layer.use_bias:
            norms += _bias_sq_norms(g, num_microbatches)
        return norms

    def weighted_grads(delta, example_weights, group_weights):
        """(kernel, bias) gradients of ``sum_i w_i loss_i``: from the per-example kernel gradients the
        norms already computed (a weighted sum of (B, K, C) tensors, not another pass over the positions),
        else by the convolution's own filter gradient."""
        weighted = delta * example_weights[:, None, None, None]
        if "kernel" not in kept:
            return tape.gradient(base_vars, layer.trainable_variables, output_gradients=weighted)
        kernel = tf.tensordot(group_weights, kept["kernel"], axes=1)
        out = {layer.kernel.ref(): tf.reshape(kernel, layer.kernel.shape)}
        if layer.use_bias:
            out[layer.bias.ref()] = tf.reduce_sum(weighted, axis=[0, 1, 2])
        return [out[v.ref()] for v in layer.trainable_variables]

    sqr_norm_fn.weighted_grads = weighted_grads
    return base_vars, outputs, sqr_norm_fn


def _patch_views(x, grads, kh, kw, sh, sw, padding):
    """The kh*kw shifted views of ``x`` (B, H, W, Cin) that a convolution's kernel offsets see, each
    (B, T, Cin) with T = the output positions: the unfolded patches, one kernel offset at a time
    (``tf.image.extract_patches`` is several times slower on CPU than the convolution itself).

    With static spatial sizes (the usual case: a model's input shape) the padding and slice bounds are
    Python integers, so each view is one slice and one reshape in the graph: the dynamic-shape version
    (kept for unknown sizes) adds a dozen shape ops per view, which made tracing the DP step, repeated at
    every ``fit``, cost several times the traced plain step.
    """
    import tensorflow as tf

    h, w, ho, wo = x.shape[1], x.shape[2], grads.shape[1], grads.shape[2]
    if None in (h, w, ho, wo):
        return _patch_views_dynamic(x, grads, kh, kw, sh, sw, padding)
    if padding == "same":
        pad_h = max((ho - 1) * sh + kh - h, 0)
        pad_w = max((wo - 1) * sw + kw - w, 0)
        if pad_h or pad_w:
            x = tf.pad(
                x, [[0, 0], [pad_h // 2, pad_h - pad_h // 2], [pad_w // 2, pad_w - pad_w // 2], [0, 0]]
            )
    shape = [-1, ho * wo, x.shape[-1]]
    return [
        tf.reshape(x[:, dy : dy + (ho - 1) * sh + 1 : sh, dx : dx + (wo - 1) * sw + 1 : sw, :], shape)
        for dy in range(kh)
        for dx in range(kw)
    ]


def _patch_views_dynamic(x, grads, kh, kw, sh, sw, padding):
    """:func:`_patch_views` for spatial sizes known only when the graph runs."""
    import tensorflow as tf

    ho, wo = tf.shape(grads)[1], tf.shape(grads)[2]
    if padding == "same":
        h, w = tf.shape(x)[1], tf.shape(x)[2]
        pad_h = tf.maximum((ho - 1) * sh + kh - h, 0)
        pad_w = tf.maximum((wo - 1) * sw + kw - w, 0)
        x = tf.pad(x, [[0, 0], [pad_h // 2, pad_h - pad_h // 2], [pad_w // 2, pad_w - pad_w // 2], [0, 0]])
    t = None if None in grads.shape[1:3] else grads.shape[1] * grads.shape[2]
    views = []
    for dy in range(kh):
        for dx in range(kw):
            v = x[:, dy : dy + (ho - 1) * sh + 1 : sh, dx : dx + (wo - 1) * sw + 1 : sw, :]
            views.append(
                tf.ensure_shape(tf.reshape(v, [tf.shape(x)[0], -1, x.shape[-1]]), [None, t, x.shape[-1]])
            )
    return views


def _dropout_mask(shape, rate):
    import tensorflow as tf

    keep = tf.cast(tf.random.uniform(shape) >= rate, tf.float32)
    return keep / (1.0 - rate)


def lstm_layer_computation(layer_instance, input_args, input_kwargs, tape, num_microbatches=None):
    """tensorflow-privacy registry function for ``tf.keras.layers.LSTM`` (in training: with its dropout).

    The layer is recomputed from its cell's weights, with the input projection ``z = x W + b`` (B, T, 4H)
    as the watched tensor; the recurrence adds ``h_{t-1} U`` to ``z_t``, so the gradient at ``z_t`` is the
    gradient at the gates' pre-activation ``d_t``. Keras' gate order (i, f, c, o) and its implementation-2
    dropout (one input mask and one recurrent mask per sequence) are followed; masked steps keep the state.
    """
    import tensorflow as tf

    layer, cell = layer_instance, layer_instance.cell
    if layer.go_backwards or layer.stateful or layer.return_state or layer.time_major:
        raise NotImplementedError(
            "fast DP clipping supports LSTM without go_backwards, stateful, return_state or time_major; "
            "use a tensorflow-privacy optimizer (dp_optimizer adam) for this model"
        )
    kwargs = dict(input_kwargs)
    kwargs.pop("training", None)
    mask = kwargs.pop("mask", None)
    if kwargs.get("initial_state") is not None:
        raise NotImplementedError("fast DP clipping does not support an LSTM's initial_state")
    kwargs.pop("initial_state", None)
    if kwargs:
        raise ValueError(f"unexpected LSTM call arguments: {sorted(kwargs)}")
    if len(input_args) != 1:
        raise ValueError("LSTM takes one input")
    x = tf.convert_to_tensor(input_args[0])
    if mask is None:
        mask = getattr(input_args[0], "_keras_mask", None)
    if mask is not None and layer.return_sequences:
        raise NotImplementedError("fast DP clipping does not support a masked LSTM returning sequences")
    x = tf.cast(x, tf.float32)
    batch = tf.shape(x)[0]
    units = cell.units
    if cell.dropout > 0:
        x = x * _dropout_mask([batch, x.shape[-1]], cell.dropout)[:, None, :]
    rec_mask = _dropout_mask([batch, units], cell.recurrent_dropout) if cell.recurrent_dropout > 0 else None
    z = tf.einsum("btd,dg->btg", x, cell.kernel)
    if cell.use_bias:
        z = z + cell.bias
    tape.watch(z)
    act, rec_act = cell.activation, cell.recurrent_activation
    u = cell.recurrent_kernel
    steps = tf.transpose(z, [1, 0, 2])  # (T, B, 4H)
    step_mask = (
        tf.transpose(tf.cast(mask, tf.bool), [1, 0])[:, :, None]
        if mask is not None
        else tf.ones([tf.shape(steps)[0], batch, 1], tf.bool)
    )

    def step(state, inputs):
        h, c, _ = state
        z_t, m_t = inputs
        h_in = h * rec_mask if rec_mask is not None else h
        gates = z_t + tf.matmul(h_in, u)
        i, f, cc, o = tf.split(gates, 4, axis=1)
        c_new = rec_act(f) * c + rec_act(i) * act(cc)
        h_new = rec_act(o) * act(c_new)
        return tf.where(m_t, h_new, h), tf.where(m_t, c_new, c), h_in

    zeros = tf.zeros([batch, units])
    hs, _, h_prev = tf.scan(step, (steps, step_mask), initializer=(zeros, zeros, zeros))
    outputs = tf.transpose(hs, [1, 0, 2]) if layer.return_sequences else hs[-1]
    h_prev = tf.transpose(h_prev, [1, 0, 2])  # (B, T, H): the (dropped-out) state each step multiplied by U

    def sqr_norm_fn(grads):
        norms = sum_outer_sq_norms(x, grads, num_microbatches)
        norms += sum_outer_sq_norms(h_prev, grads, num_microbatches)
        if cell.use_bias:
            norms += _bias_sq_norms(grads, num_microbatches)
        return norms

    def weighted_grads(delta, example_weights, group_weights):
        """Gradients of (kernel, recurrent kernel, bias) for the per-example-weighted gradient at z."""
        weighted = delta * example_weights[:, None, None]
        out = {
            cell.kernel.ref(): tf.einsum("btd,btg->dg", x, weighted),
            cell.recurrent_kernel.ref(): tf.einsum("bth,btg->hg", h_prev, weighted),
        }
        if cell.use_bias:
            out[cell.bias.ref()] = tf.reduce_sum(weighted, axis=[0, 1])
        return [out[v.ref()] for v in layer.trainable_variables]

    sqr_norm_fn.weighted_grads = weighted_grads
    return z, outputs, sqr_norm_fn


def embedding_layer_computation(layer_instance, input_args, input_kwargs, tape, num_microbatches=None):
    """tensorflow-privacy's Embedding function, passing on the ``mask_zero`` mask to the next layer."""
    from tensorflow_privacy.privacy.fast_gradient_clipping.registry_functions import embedding

    base_vars, outputs, fn = embedding.embedding_layer_computation(
        layer_instance, input_args, input_kwargs, tape, num_microbatches
    )
    if layer_instance.mask_zero:
        outputs._keras_mask = layer_instance.compute_mask(input_args[0])
    return base_vars, outputs, fn


def layer_registry():
    """tensorflow-privacy's layer registry with Conv2D, LSTM and (masked) Embedding added."""
    import tensorflow as tf
    from tensorflow_privacy.privacy.fast_gradient_clipping import layer_registry as lr
    from tensorflow_privacy.privacy.fast_gradient_clipping.registry_functions import (
        dense,
        einsum_dense,
        layer_normalization,
        multi_head_attention,
    )

    registry = lr.LayerRegistry()
    layers = tf.keras.layers
    registry.insert(layers.Dense, dense.dense_layer_computation)
    registry.insert(layers.EinsumDense, einsum_dense.einsum_layer_computation)
    registry.insert(layers.LayerNormalization, layer_normalization.layer_normalization_computation)
    registry.insert(layers.MultiHeadAttention, multi_head_attention.multi_head_attention_layer_computation)
    registry.insert(layers.Embedding, embedding_layer_computation)
    registry.insert(layers.Conv2D, conv2d_layer_computation)
    registry.insert(layers.LSTM, lstm_layer_computation)
    return registry


def unregistered_layers(model, registry=None) -> list[str]:
    """Names of the model's trainable layers that have no fast norm function (nested models walked)."""
    import tensorflow as tf

    registry = registry or layer_registry()
    out = []
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            out += unregistered_layers(layer, registry)
        elif layer.trainable_variables and not registry.is_elem(layer):
            out.append(f"{layer.name} ({type(layer).__name__})")
    return out


# ----------------------------------------------------------------------------------------------------------
# Gaussian noise


def box_muller(bits):
    """Standard normals from a (2, m) uint32 tensor of random bits: TensorFlow's own float32 transform
    (``BoxMullerFloat`` in ``random_distributions.h``: ``u = mantissa(bits) in [0, 1)``,
    ``u1`` floored at 1e-7, ``r = sqrt(-2 ln u1)``, ``z = (r sin 2 pi u2, r cos 2 pi u2)``), written as
    vectorized ops; returns the (2m,) normals, sines first."""
    import math

    import tensorflow as tf

    mantissa = tf.bitwise.bitwise_and(bits, tf.constant(0x7FFFFF, tf.uint32))
    u = tf.bitcast(tf.bitwise.bitwise_or(mantissa, tf.constant(0x3F800000, tf.uint32)), tf.float32) - 1.0
    r = tf.sqrt(-2.0 * tf.math.log(tf.maximum(u[0], 1e-7)))
    angle = (2.0 * math.pi) * u[1]
    return tf.concat([r * tf.sin(angle), r * tf.cos(angle)], axis=0)


def gaussian_noise(generator, shapes):
    """Independent standard normals, one tensor per shape, from one draw of ``generator``'s Philox bits.

    The same distribution as ``generator.normal`` (the same Box-Muller transform of the same kind of
    bits), at about half its cost on CPU, where TensorFlow computes the transform one scalar at a time:
    the noise of a 1.6M-parameter model costs more than a plain training step at batch 64."""
    import tensorflow as tf

    sizes = [tf.reduce_prod(s) for s in shapes]
    total = tf.add_n(sizes)
    bits = generator.uniform_full_int([2, (total + 1) // 2], dtype=tf.uint32)
    flat = box_muller(bits)[:total]
    return [tf.reshape(part, s) for part, s in zip(tf.split(flat, tf.stack(sizes)), shapes)]


# ----------------------------------------------------------------------------------------------------------
# The training step


def _forward(model, x, registry, tape, num_microbatches):
    """One training-mode forward pass through tensorflow-privacy's graph walker: trainable layers by
    their registry functions (recorded on ``tape``), other layers called with ``training=True``.

    Returns the outputs and, for every trainable layer, ``(layer, base_vars, sqr_norm_fn)``.
    """
    from tensorflow_privacy.privacy.fast_gradient_clipping import gradient_clipping_utils as gcu

    def generator_fn(layer, args, kwargs):
        if layer.trainable_variables:
            if not registry.is_elem(layer):
                raise NotImplementedError(
                    f"layer {layer.name} ({type(layer).__name__}) has no fast DP norm function; "
                    "use a tensorflow-privacy optimizer (dp_optimizer adam) for this model"
                )
            base_vars, outputs, fn = registry.lookup(layer)(layer, args, kwargs, tape, num_microbatches)
            return outputs, (layer, base_vars, fn)
        kwargs = dict(kwargs)
        if getattr(layer, "_expects_training_arg", False):
            kwargs["training"] = True
        return layer(*args, **kwargs), None

    outputs, generated = gcu.model_forward_pass(model, x, generator_fn=generator_fn)
    return outputs, [g for g in generated if g is not None]


def _local_layer_types():
    """Layers whose watched tensor depends on their own weights through that layer alone, so that the
    weighted sum of per-example weight gradients is a local product of the layer's inputs and the
    (weighted) gradient at that tensor, without a second backward pass through the network."""
    import tensorflow as tf

    layers = tf.keras.layers
    return (layers.Dense, layers.EinsumDense, layers.Conv2D, layers.Embedding, layers.LSTM)


def _weighted_layer_grads(tape, layer, base_vars, norm_fn, delta, example_weights, group_weights):
    """``sum_i w_i * (example i's gradient of the layer's weights)``, from the gradient ``delta`` at the
    layer's watched tensor (one row per example): the local product with ``w_i * delta_i``.
    ``example_weights`` has one weight per example, ``group_weights`` one per microbatch (the same
    when every example is its own microbatch)."""
    import tensorflow as tf

    if isinstance(delta, tf.IndexedSlices):  # an embedding table: one value row per looked-up id
        per_row = tf.shape(delta.values)[0] // tf.shape(example_weights)[0]
        scale = tf.repeat(example_weights, per_row)[:, None]
        return [tf.IndexedSlices(delta.values * scale, delta.indices, delta.dense_shape)]
    local = getattr(norm_fn, "weighted_grads", None)
    if local is not None:
        return local(delta, example_weights, group_weights)
    scale = tf.reshape(example_weights, [-1] + [1] * (len(delta.shape) - 1))
    return tape.gradient(base_vars, layer.trainable_variables, output_gradients=delta * scale)


def clipped_gradient_sum(model, x, y, per_example_loss, l2_norm_clip, num_microbatches=None, clipping="fast"):
    """The sum over microbatches of their clipped loss gradients, from one training-mode forward pass.

    Returns ``(grads, y_pred, norms)``: one gradient per trainable variable of ``model``, the
    predictions, and every microbatch's unclipped gradient norm. ``per_example_loss(y, y_pred)`` returns
    the (B,) losses; a microbatch's loss is the mean of its examples' (``num_microbatches`` None: each
    example is its own microbatch).
    """
    import tensorflow as tf

    registry = layer_registry()
    variables = model.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        y_pred, generated = _forward(model, x, registry, tape, num_microbatches)
        losses = per_example_loss(y, y_pred)
        if num_microbatches is not None:
            losses = tf.reduce_mean(tf.reshape(losses, [num_microbatches, -1]), axis=1)
        total = tf.reduce_sum(losses)
    if clipping == "fast":
        deltas = tape.gradient(
            total, [b for _, b, _ in generated], unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        sq = tf.add_n([fn(d) for (_, _, fn), d in zip(generated, deltas)])
    else:
        jac = tape.jacobian(losses, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        sq = tf.add_n([tf.reduce_sum(tf.square(tf.reshape(j, [tf.shape(j)[0], -1])), axis=1) for j in jac])
    norms = tf.sqrt(sq)
    weights = tf.stop_gradient(l2_norm_clip / tf.maximum(norms, l2_norm_clip))
    covered = {v.ref() for layer, _, _ in generated for v in layer.trainable_variables}
    local = all(isinstance(layer, _local_layer_types()) for layer, _, _ in generated) and all(
        v.ref() in covered for v in variables
    )
    if clipping == "fast" and local:
        # Each layer's weighted gradient from its own inputs and w_i * delta_i: no second backward pass.
        # delta's rows already carry the 1/m of their microbatch's mean loss: weight row i by c_j(i).
        per_example = weights
        if num_microbatches is not None:
            per_example = tf.repeat(weights, tf.shape(x)[0] // num_microbatches)
        found = {}
        for (layer, base_vars, fn), delta in zip(generated, deltas):
            layer_grads = _weighted_layer_grads(tape, layer, base_vars, fn, delta, per_example, weights)
            for v, g in zip(layer.trainable_variables, layer_grads):
                found[v.ref()] = g
        grads = [found[v.ref()] for v in variables]
    else:
        grads = tape.gradient(
            losses, variables, output_gradients=weights, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
    del tape
    grads = [tf.convert_to_tensor(g) for g in grads]
    return grads, y_pred, norms


def dp_model(model, dp: FastDP):
    """A functional model sharing ``model``'s layers whose ``fit`` runs DP-SGD by fast clipping.

    Compile it with a per-example loss (reduction NONE) and ``dp.keras_optimizer()``; ``fit`` trains
    ``model``'s own weights. Batches must be full when ``dp.num_microbatches`` is set.
    """
    import tensorflow as tf

    missing = unregistered_layers(model)
    if missing:
        raise ValueError(
            f"fast DP-SGD has no per-example norm for {', '.join(missing)}; "
            "use dp_optimizer adam (tensorflow-privacy's optimizer) for this model"
        )

    class FastDPModel(tf.keras.Model):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._noise = tf.random.Generator.from_seed(dp.noise_seed)

        # Keras traces train_step at every fit (and twice when the first call creates the optimizer's
        # and metrics' variables); autograph would convert every function the step calls, tensorflow-
        # privacy's graph walker and the registry functions included, none of which branches on a
        # tensor: tracing them as plain Python is several times faster.
        @tf.autograph.experimental.do_not_convert
        def train_step(self, data):
            x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
            if sample_weight is not None:
                raise NotImplementedError("fast DP-SGD does not take sample weights")

            def per_example_loss(y_true, y_pred):
                losses = self.loss(y_true, y_pred)
                return tf.reshape(losses, [-1])

            grads, y_pred, norms = clipped_gradient_sum(
                self, x, y, per_example_loss, dp.l2_norm_clip, dp.num_microbatches, dp.clipping
            )
            count = dp.num_microbatches or tf.shape(norms)[0]
            stddev = dp.noise_multiplier * dp.l2_norm_clip
            noise = gaussian_noise(self._noise, [tf.shape(g) for g in grads])
            scale = 1.0 / tf.cast(count, tf.float32)
            grads = [(g + stddev * z) * scale for g, z in zip(grads, noise)]
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            self.compiled_loss(y, y_pred, regularization_losses=self.losses)
            self.compiled_metrics.update_state(y, y_pred)
            return {m.name: m.result() for m in self.metrics}

    return FastDPModel(inputs=model.inputs, outputs=model.outputs, name=f"{model.name}_fast_dp")


def fast_optimizer(
    name: str,
    learning_rate: float,
    l2_norm_clip: float,
    noise_multiplier: float,
    num_microbatches: Optional[int],
    noise_seed: int = 0,
) -> Any:
    """``adam_fast``/``sgd_fast`` as a :class:`FastDP` (num_microbatches equal to the batch: per example)."""
    if name not in FAST_OPTIMIZERS:
        raise ValueError(f"unknown fast DP optimizer {name!r}; valid: {', '.join(FAST_OPTIMIZERS)}")
    return FastDP(
        optimizer=name.split("_")[0],
        learning_rate=learning_rate,
        l2_norm_clip=l2_norm_clip,
        noise_multiplier=noise_multiplier,
        num_microbatches=num_microbatches,
        noise_seed=noise_seed,
    )
