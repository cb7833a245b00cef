"""The published IMDB LSTM and its tokenizer (Keras' TextVectorization fitted on the training text only)."""

from __future__ import annotations

from typing import Optional

import numpy as np


def build_text_model(
    vocab_size: int = 20000,
    embed_dim: int = 128,
    lstm_units: int = 128,
    dropout: Optional[float] = None,
    l2: float = 0.0,
):
    """The published IMDB model: Embedding(20000, 128) -> LSTM(128, dropout 0.2, recurrent dropout 0.2)
    -> Dense(1) "logits" -> sigmoid. Inputs are token ids (see ``make_vectorizer``)."""
    import tensorflow as tf

    layers = tf.keras.layers
    reg = tf.keras.regularizers.l2(l2) if l2 > 0 else None
    rate = 0.2 if dropout is None else dropout
    inputs = tf.keras.Input(shape=(None,), dtype="int64", name="tokens")
    x = layers.Embedding(vocab_size, embed_dim, embeddings_regularizer=reg)(inputs)
    x = layers.LSTM(
        lstm_units, dropout=rate, recurrent_dropout=rate, kernel_regularizer=reg, name="features"
    )(x)
    logits = layers.Dense(1, name="logits", kernel_regularizer=reg)(x)
    probs = layers.Activation("sigmoid", name="probs")(logits)
    return tf.keras.Model(inputs, probs, name="lstm")


def make_vectorizer(train_texts: np.ndarray, vocab_size: int = 20000, seq_len: int = 100):
    """Keras' TextVectorization fitted on the model's own training text only."""
    import tensorflow as tf

    vec = tf.keras.layers.TextVectorization(
        max_tokens=vocab_size, output_mode="int", output_sequence_length=seq_len
    )
    vec.adapt(tf.constant(np.asarray(train_texts, dtype=object).astype(str)), batch_size=1024)
    return vec


def vectorize(vec, texts: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Token ids (n, seq_len) int64 of raw texts (pandas/NumPy object arrays, never StringDtype)."""
    import tensorflow as tf

    arr = np.asarray(texts, dtype=object).astype(str)
    parts = [vec(tf.constant(arr[i : i + batch])).numpy() for i in range(0, len(arr), batch)]
    return (
        np.concatenate(parts).astype(np.int64)
        if parts
        else np.zeros((0, vec.get_config()["output_sequence_length"]), np.int64)
    )
