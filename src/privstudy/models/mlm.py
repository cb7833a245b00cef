"""A small BERT-style masked language model in Keras (TensorFlow 2.15), its masked-LM training, and its
pseudo-log-likelihood.

The model is built from the standard layers (Embedding, MultiHeadAttention, LayerNormalization, Dense),
post-layer-norm as in BERT, GELU feed-forward blocks, learnt position embeddings, and an output layer over
the vocabulary. Padding (id 0) is masked out of attention. The output layer is applied only where a loss
or a likelihood is needed (the masked positions), which saves most of its cost.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from privstudy.data.subword import MASK, PAD


@dataclasses.dataclass(frozen=True)
class MlmShape:
    """Size of the encoder."""

    vocab_size: int
    seq_len: int
    dim: int = 128  # hidden width
    layers: int = 2
    heads: int = 4
    ff_dim: int = 512  # feed-forward width
    dropout: float = 0.1


def build_mlm(shape: MlmShape):
    """(encoder, head): encoder maps tokens (batch, seq_len) int32 to hidden states (batch, seq_len, dim);
    head maps hidden states (..., dim) to vocabulary logits (..., vocab_size)."""
    import tensorflow as tf

    layers = tf.keras.layers
    tokens = tf.keras.Input(shape=(shape.seq_len,), dtype="int32", name="tokens")
    x = layers.Embedding(shape.vocab_size, shape.dim, name="token_embedding")(tokens)
    positions = tf.zeros_like(tokens) + tf.range(shape.seq_len, dtype=tf.int32)[tf.newaxis, :]
    x = x + layers.Embedding(shape.seq_len, shape.dim, name="position_embedding")(positions)
    x = layers.LayerNormalization(epsilon=1e-12, name="embedding_norm")(x)
    x = layers.Dropout(shape.dropout)(x)
    # (batch, 1, seq_len): every query position may attend to every non-padding key
    attend = tf.cast(tf.not_equal(tokens, PAD), tf.int32)[:, tf.newaxis, :]
    for i in range(shape.layers):
        att = layers.MultiHeadAttention(
            shape.heads, shape.dim // shape.heads, dropout=shape.dropout, name=f"attention_{i}"
        )(x, x, attention_mask=attend)
        x = layers.LayerNormalization(epsilon=1e-12, name=f"attention_norm_{i}")(
            x + layers.Dropout(shape.dropout)(att)
        )
        f = layers.Dense(shape.ff_dim, activation="gelu", name=f"ff_in_{i}")(x)
        f = layers.Dense(shape.dim, name=f"ff_out_{i}")(f)
        x = layers.LayerNormalization(epsilon=1e-12, name=f"ff_norm_{i}")(
            x + layers.Dropout(shape.dropout)(f)
        )
    encoder = tf.keras.Model(tokens, x, name="encoder")
    hidden = tf.keras.Input(shape=(shape.dim,), name="hidden")
    head = tf.keras.Model(hidden, layers.Dense(shape.vocab_size, name="vocab")(hidden), name="head")
    return encoder, head


def n_params(encoder, head) -> int:
    return int(sum(int(np.prod(w.shape)) for w in encoder.trainable_weights + head.trainable_weights))


def mask_batch(
    tokens: np.ndarray, lengths: np.ndarray, vocab_size: int, rng: np.random.Generator, rate: float = 0.15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BERT's masking of a batch: each real token is chosen with probability ``rate`` (at least one per
    row); a chosen token becomes [MASK] 80% of the time, a random non-special token 10%, stays 10%.

    Returns:
        (inputs (b, T) int32, rows (k,), cols (k,)): the masked inputs and the chosen positions.
    """
    b, t = tokens.shape
    real = np.arange(t)[None, :] < lengths[:, None]
    chosen = real & (rng.random((b, t)) < rate)
    none = ~chosen.any(axis=1)
    if none.any():  # one position per row at least: every row carries a loss
        pick = (rng.random(int(none.sum())) * lengths[none]).astype(np.int64)
        chosen[np.flatnonzero(none), pick] = True
    rows, cols = np.nonzero(chosen)
    inputs = tokens.copy()
    u = rng.random(len(rows))
    inputs[rows[u < 0.8], cols[u < 0.8]] = MASK
    rnd = (u >= 0.8) & (u < 0.9)
    inputs[rows[rnd], cols[rnd]] = rng.integers(MASK + 1, vocab_size, int(rnd.sum()))
    return inputs.astype(np.int32), rows, cols


@dataclasses.dataclass(frozen=True)
class MlmFit:
    """What training did: seconds, tokens seen per epoch, the last epoch's mean masked-token loss."""

    train_s: float
    tokens_per_epoch: int
    final_loss: float
    epoch_s: tuple[float, ...]


def train_mlm(
    encoder,
    head,
    tokens: np.ndarray,
    lengths: np.ndarray,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    mask_rate: float = 0.15,
) -> MlmFit:
    """Masked-LM training: Adam, linear warm-up over the first 6% of steps then linear decay to 0 (BERT's
    schedule), loss = mean cross-entropy over the masked positions of a batch. Data order and masks come
    from ``seed``.

    Args:
        tokens: (n, seq_len) int32 windows (a duplicated window is simply several rows).
        lengths: (n,) real tokens of each.
    """
    import tensorflow as tf

    vocab = int(head.output_shape[-1])
    rng = np.random.default_rng(seed)
    n = len(tokens)
    steps_per_epoch = -(-n // batch_size)
    total = max(epochs * steps_per_epoch, 1)
    warm = max(int(0.06 * total), 1)

    class Schedule(tf.keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            up = step / warm
            down = tf.maximum((total - step) / max(total - warm, 1), 0.0)
            return learning_rate * tf.minimum(up, down)

    opt = tf.keras.optimizers.Adam(Schedule())
    variables = encoder.trainable_variables + head.trainable_variables

    @tf.function(reduce_retracing=True)
    def step(inputs, rows, cols, targets):
        with tf.GradientTape() as tape:
            h = encoder(inputs, training=True)
            logits = head(tf.gather_nd(h, tf.stack([rows, cols], axis=1)), training=True)
            loss = tf.reduce_mean(
                tf.keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
            )
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    start, epoch_s, loss = time.perf_counter(), [], float("nan")
    for _ in range(epochs):
        t0, losses = time.perf_counter(), []
        order = rng.permutation(n)
        for b in range(steps_per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            inputs, rows, cols = mask_batch(tokens[idx], lengths[idx], vocab, rng, mask_rate)
            targets = tokens[idx][rows, cols]
            losses.append(
                float(
                    step(
                        tf.constant(inputs),
                        tf.constant(rows, tf.int32),
                        tf.constant(cols, tf.int32),
                        tf.constant(targets, tf.int32),
                    )
                )
            )
        loss = float(np.mean(losses)) if losses else float("nan")
        epoch_s.append(time.perf_counter() - t0)
    return MlmFit(time.perf_counter() - start, int(lengths.sum()), loss, tuple(epoch_s))


def masked_copies(tokens: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One copy of each sequence per real position, that position replaced by [MASK].

    Returns:
        (copies (sum(lengths), T) int32, pos (sum(lengths),) the masked position of each copy,
        true (sum(lengths),) the token it hid); copies of sequence i are contiguous, in position order.
    """
    copies = np.repeat(tokens, lengths, axis=0)
    pos = np.concatenate([np.arange(k) for k in lengths]) if len(lengths) else np.zeros(0, np.int64)
    rows = np.arange(len(copies))
    true = copies[rows, pos].copy()
    copies[rows, pos] = MASK
    return copies.astype(np.int32), pos.astype(np.int64), true.astype(np.int64)


def pll(encoder, head, tokens: np.ndarray, lengths: np.ndarray, batch_copies: int = 2048) -> np.ndarray:
    """Pseudo-log-likelihood PLL(s) = sum over real positions t of log p(s_t | s with t masked), as
    batches of masked copies (``masked_copies``), ``batch_copies`` copies per forward pass.

    Args:
        tokens: (n, T) int32 windows padded with PAD; lengths: (n,) their real tokens.

    Returns:
        (n,) float64 PLL in nats.
    """
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def logp(copies, pos, true):
        h = encoder(copies, training=False)
        idx = tf.stack([tf.range(tf.shape(pos)[0]), pos], axis=1)
        z = tf.nn.log_softmax(head(tf.gather_nd(h, idx), training=False))
        return tf.gather(z, true, batch_dims=1)

    lengths = np.asarray(lengths, np.int64)
    out = np.zeros(len(lengths), np.float64)
    per = max(1, batch_copies // max(int(tokens.shape[1]), 1))  # sequences per pass
    for s in range(0, len(lengths), per):
        copies, pos, true = masked_copies(tokens[s : s + per], lengths[s : s + per])
        if not len(copies):
            continue
        lp = logp(tf.constant(copies), tf.constant(pos, tf.int32), tf.constant(true, tf.int32)).numpy()
        seq = np.repeat(np.arange(len(lengths[s : s + per])), lengths[s : s + per])
        out[s : s + per] = np.bincount(
            seq, weights=lp.astype(np.float64), minlength=len(lengths[s : s + per])
        )
    return out


def pll_one_position_at_a_time(encoder, head, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The same PLL by the definition: one forward pass per (sequence, position). For tests and the
    throughput benchmark only."""
    import tensorflow as tf

    out = np.zeros(len(lengths), np.float64)
    for i, (row, k) in enumerate(zip(tokens, lengths)):
        for t in range(int(k)):
            x = row.copy()
            x[t] = MASK
            h = encoder(tf.constant(x[None, :].astype(np.int32)), training=False)
            z = tf.nn.log_softmax(head(h[:, t, :], training=False))[0]
            out[i] += float(z[int(row[t])])
    return out
