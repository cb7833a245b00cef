"""DP-SGD with tensorflow-privacy's Keras optimizers, and the privacy budget it spends.

Epsilon comes from ``tensorflow_privacy.compute_dp_sgd_privacy_statement`` (add-or-remove-one-example
adjacency) with its RDP and its PLD accountant, each in both of its forms: "each example occurring once
per epoch" (what shuffled batches actually do) and "assuming Poisson sampling" (the usual, smaller,
figure, which holds only for Poisson-sampled batches).
"""

from __future__ import annotations

import math
import re
from typing import Optional

DP_OPTIMIZERS = ("adam", "sgd", "adam_vectorized", "sgd_vectorized", "adam_fast", "sgd_fast")
_EPOCH = re.compile(r"Epsilon with each example occurring once per epoch:\s*([0-9.]+|inf)")
_POISSON = re.compile(r"Epsilon assuming Poisson sampling \(\*\):\s*([0-9.]+|inf)")


def default_delta(n: int) -> float:
    """1/n rounded down to a power of ten (1e-5 for 25,000 examples)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return 10.0 ** math.floor(math.log10(1.0 / n))


ACCOUNTANTS = ("rdp", "pld")
EPSILON_KINDS = ("epoch", "poisson")


def microbatch_size(batch_size: int, num_microbatches: int) -> int:
    """Examples per microbatch: tensorflow-privacy cuts a batch into ``num_microbatches`` contiguous
    slices of ``batch_size / num_microbatches`` examples (``num_microbatches`` 0: one per example)."""
    if num_microbatches < 0 or (num_microbatches and batch_size % num_microbatches):
        raise ValueError(f"num_microbatches must divide batch_size={batch_size}, got {num_microbatches}")
    return batch_size // (num_microbatches or batch_size)


def epsilons(
    n: int, batch_size: int, epochs: float, noise_multiplier: float, delta: float, microbatch_size: int
) -> dict[str, float]:
    """Epsilon of a DP-SGD training at ``delta``, by the RDP and the PLD accountant, in both forms.

    tensorflow-privacy's ``used_microbatching`` means a microbatch of *more than one example*: clipping a
    microbatch's mean gradient bounds one example's influence only by twice the clip (the flag halves the
    noise multiplier in the accounting). It is derived here from ``microbatch_size``; one example per
    microbatch (the usual per-example clipping) is ``used_microbatching=False``.

    Returns:
        ``{"rdp_epoch", "rdp_poisson", "pld_epoch", "pld_poisson"}``: "epoch" is each example occurring
        once per epoch (what shuffled batches do), "poisson" assumes Poisson-sampled batches (smaller;
        holds only for Poisson sampling). PLD is the tighter accountant.
    """
    from tensorflow_privacy import compute_dp_sgd_privacy_statement
    from tensorflow_privacy.privacy.analysis.compute_dp_sgd_privacy_lib import AccountantType

    out = {}
    for name, accountant in (("rdp", AccountantType.RDP), ("pld", AccountantType.PLD)):
        text = compute_dp_sgd_privacy_statement(
            number_of_examples=n,
            batch_size=batch_size,
            num_epochs=epochs,
            noise_multiplier=noise_multiplier,
            delta=delta,
            used_microbatching=microbatch_size > 1,
            accountant_type=accountant,
        )
        a, b = _EPOCH.search(text), _POISSON.search(text)
        if not a or not b:
            raise RuntimeError(f"cannot read epsilon from tensorflow-privacy's statement:\n{text}")
        out[f"{name}_epoch"], out[f"{name}_poisson"] = float(a.group(1)), float(b.group(1))
    return out


def make_optimizer(
    name: str,
    learning_rate: float,
    l2_norm_clip: float,
    noise_multiplier: float,
    num_microbatches: Optional[int],
    noise_seed: int = 0,
):
    """A DP Keras optimizer: DPKerasAdamOptimizer / DPKerasSGDOptimizer or their vectorized variants;
    or, for ``adam_fast``/``sgd_fast``, the settings of DP-SGD by fast gradient clipping
    (:class:`privstudy.defences.fast_dp.FastDP`, which ``models.training.fit`` runs; its noise comes
    from ``noise_seed``)."""
    if name in ("adam_fast", "sgd_fast"):
        from privstudy.defences.fast_dp import fast_optimizer

        return fast_optimizer(
            name, learning_rate, l2_norm_clip, noise_multiplier, num_microbatches, noise_seed
        )
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
