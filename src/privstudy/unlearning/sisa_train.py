"""Training SISA shard models stage by stage with checkpoints, and retraining a shard after deletion.

Every stage starts from the previous stage's checkpoint (the weights) with a fresh optimizer and its
own seed (of the data order), so a shard resumed from an unaffected checkpoint and retrained on its
surviving points follows exactly the path a shard trained from scratch on those points follows: with
TensorFlow's op determinism on, the weights are bit-identical (tests/test_sisa.py checks it).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from privstudy.unlearning.sisa import ShardPlan


@dataclasses.dataclass
class CheckpointStore:
    """Checkpoints (lists of weight arrays) by stage key; ``nbytes`` is what storing them costs."""

    weights: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=dict)

    def put(self, key: str, model) -> None:
        self.weights[key] = [w.copy() for w in model.get_weights()]

    def get(self, key: str) -> list[np.ndarray]:
        if key not in self.weights:
            raise KeyError(f"no checkpoint {key}: the shard was never trained through that stage")
        return self.weights[key]

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for ws in self.weights.values() for w in ws)


def stage_seed(seed: int, shard: int, stage: int) -> int:
    """The seed of one stage's data order (and of the shard's initial weights at stage 0)."""
    return int(np.random.default_rng([seed, shard, stage, 0x73747167]).integers(1 << 31))


@dataclasses.dataclass(frozen=True)
class StageCost:
    """Work done by one (re)training: stages run, point-epochs, wall seconds."""

    stages: int
    point_epochs: int
    seconds: float


def train_shard(
    shard: ShardPlan,
    shard_index: int,
    schedule: list[int],
    x: np.ndarray,
    y: np.ndarray,
    make_model: Callable[[], object],
    fit_stage: Callable[[object, np.ndarray, np.ndarray, int, int], None],
    store: CheckpointStore,
    seed: int,
    from_stage: int = 0,
):
    """Train (or resume) one shard through stages from_stage+1..R; return (model, StageCost).

    Args:
        make_model: builds an untrained model (called after seeding with the shard's stage-0 seed).
        fit_stage: fit(model, x, y, epochs, seed): trains in place with a fresh optimizer.
        from_stage: 0 trains from scratch; k resumes from the checkpoint of stage k (its key must be
            in ``store``: after a deletion, ``sisa.delete`` names the last unaffected stage).
    """
    import tensorflow as tf

    tf.keras.utils.set_random_seed(stage_seed(seed, shard_index, 0))
    model = make_model()
    if from_stage:
        model.set_weights(store.get(shard.key(from_stage)))
    start, work = time.perf_counter(), 0
    for stage in range(from_stage + 1, len(schedule) + 1):
        idx = shard.seen(stage)
        epochs = schedule[stage - 1]
        if epochs and len(idx):
            tf.keras.utils.set_random_seed(stage_seed(seed, shard_index, stage))
            fit_stage(model, x[idx], y[idx], epochs, stage_seed(seed, shard_index, stage))
            work += epochs * len(idx)
        store.put(shard.key(stage), model)
    return model, StageCost(len(schedule) - from_stage, work, time.perf_counter() - start)
