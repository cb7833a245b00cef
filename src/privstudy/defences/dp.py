"""DP-SGD with tensorflow-privacy's Keras optimizers, and the privacy budget it spends.

Epsilon comes from ``tensorflow_privacy.compute_dp_sgd_privacy_statement`` (RDP accountant,
add-or-remove-one-example adjacency), in both of its forms: "each example occurring once per epoch"
(what shuffled batches actually do) and "assuming Poisson sampling" (the usual, smaller, figure, which
holds only for Poisson-sampled batches).
"""

from __future__ import annotations

import math
import re
from typing import Optional

DP_OPTIMIZERS = ("adam", "sgd", "adam_vectorized", "sgd_vectorized")
_EPOCH = re.compile(r"Epsilon with each example occurring once per epoch:\s*([0-9.]+|inf)")
_POISSON = re.compile(r"Epsilon assuming Poisson sampling \(\*\):\s*([0-9.]+|inf)")


def default_delta(n: int) -> float:
    """1/n rounded down to a power of ten (1e-5 for 25,000 examples)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return 10.0 ** math.floor(math.log10(1.0 / n))


def epsilons(
    n: int,
    batch_size: int,
    epochs: float,
    noise_multiplier: float,
    delta: float,
    used_microbatching: bool = True,
) -> tuple[float, float, str]:
    """(epsilon once-per-epoch, epsilon Poisson, the full statement) of a DP-SGD training."""
    from tensorflow_privacy import compute_dp_sgd_privacy_statement

    text = compute_dp_sgd_privacy_statement(
        number_of_examples=n,
        batch_size=batch_size,
        num_epochs=epochs,
        noise_multiplier=noise_multiplier,
        delta=delta,
        used_microbatching=used_microbatching,
    )
    a, b = _EPOCH.search(text), _POISSON.search(text)
    if not a or not b:
        raise RuntimeError(f"cannot read epsilon from tensorflow-privacy's statement:\n{text}")
    return float(a.group(1)), float(b.group(1)), text


def make_optimizer(
    name: str,
    learning_rate: float,
    l2_norm_clip: float,
    noise_multiplier: float,
    num_microbatches: Optional[int],
):
    """A DP Keras optimizer: DPKerasAdamOptimizer / DPKerasSGDOptimizer or their vectorized variants."""
    from tensorflow_privacy.privacy.optimizers import dp_optimizer_keras as dk
    from tensorflow_privacy.privacy.optimizers import dp_optimizer_keras_vectorized as dkv

    classes = {
        "adam": dk.DPKerasAdamOptimizer,
        "sgd": dk.DPKerasSGDOptimizer,
        "adam_vectorized": dkv.VectorizedDPKerasAdamOptimizer,
        "sgd_vectorized": dkv.VectorizedDPKerasSGDOptimizer,
    }
    if name not in classes:
        raise ValueError(f"unknown DP optimizer {name!r}; valid: {', '.join(DP_OPTIMIZERS)}")
    return classes[name](
        l2_norm_clip=l2_norm_clip,
        noise_multiplier=noise_multiplier,
        num_microbatches=num_microbatches,
        learning_rate=learning_rate,
    )
