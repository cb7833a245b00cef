"""Training SISA shard models stage by stage with checkpoints, and retraining a shard after deletion.

A shard model is a list of weight arrays; one ``KerasTrainer`` per trial trains and evaluates all of
them with one Keras model and one traced training step (tracing a step per stage would cost more than
the stages of a small shard). Every stage starts from the previous stage's weights with a freshly reset
Adam optimizer (moments and step count zero) and its own seed of the data order, so a shard resumed
from an unaffected checkpoint and retrained on its surviving points follows exactly the path a shard
trained from scratch on those points follows. With TensorFlow's op determinism on and no stochastic
layer, the weights are bit-identical (tests/test_sisa.py checks it). Dropout masks come from the traced
step's own random state, which a resumption does not rewind: with dropout, a retrained shard is a draw
from the distribution of shards trained without the points (exact unlearning in distribution), not
the same draw.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterable

import numpy as np

from privstudy.unlearning.sisa import ShardPlan

Weights = list  # of np.ndarray, in model.get_weights() order


@dataclasses.dataclass
class CheckpointStore:
    """Checkpoints (weight lists) by stage key; ``nbytes`` is what storing them costs now, ``peak_nbytes``
    the most it ever cost."""

    weights: dict[str, Weights] = dataclasses.field(default_factory=dict)
    peak_nbytes: int = 0

    def put(self, key: str, weights: Weights) -> None:
        self.weights[key] = [np.array(w, copy=True) for w in weights]
        self.peak_nbytes = max(self.peak_nbytes, self.nbytes)

    def get(self, key: str) -> Weights:
        if key not in self.weights:
            raise KeyError(f"no checkpoint {key}: the shard was never trained through that stage")
        return self.weights[key]

    def keep_only(self, keys: Iterable[str]) -> None:
        """Drop every checkpoint not named: after a deletion, the old keys of the retrained stages can
        never be reached again (points are only ever removed)."""
        keys = set(keys)
        self.weights = {k: w for k, w in self.weights.items() if k in keys}

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for ws in self.weights.values() for w in ws)


def stage_seed(seed: int, shard: int, stage: int) -> int:
    """The seed of one stage's data order (and of the shard's initial weights at stage 0)."""
    return int(np.random.default_rng([seed, shard, stage, 0x73747167]).integers(1 << 31))


class KerasTrainer:
    """Trains and evaluates models of one architecture, held as weight lists.

    Args:
        build: builds an untrained Keras model (softmax output, a layer named ``logits``, or one
            sigmoid unit); called once for the working model and once per fresh initialisation.
        batch_size, learning_rate: of the mini-batch Adam training.
    """

    def __init__(self, build: Callable[[], object], batch_size: int, learning_rate: float):
        import tensorflow as tf

        self.build = build
        self.batch_size = batch_size
        self.model = model = build()
        self.binary = int(model.output_shape[-1]) == 1
        self.opt = opt = tf.keras.optimizers.Adam(learning_rate)
        opt.build(model.trainable_variables)
        loss_fn = (
            tf.keras.losses.BinaryCrossentropy()
            if self.binary
            else tf.keras.losses.SparseCategoricalCrossentropy()
        )
        x_spec = tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32)
        y_spec = tf.TensorSpec((None, 1) if self.binary else (None,), tf.float32 if self.binary else tf.int64)

        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
                if model.losses:
                    loss += tf.add_n(model.losses)
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))

        batch = tf.constant(batch_size, tf.int32)

        # All epochs of a stage in one call: the batches are cut from ``order`` (the epochs' permutations,
        # concatenated) inside the graph, so a step costs no Python round trip.
        @tf.function(input_signature=[x_spec, y_spec, tf.TensorSpec((None,), tf.int32)])
        def run_epochs(x, y, order):
            n = tf.shape(x)[0]
            steps = (n + batch - 1) // batch
            for e in tf.range(tf.shape(order)[0] // n):
                for i in tf.range(steps):
                    lo = e * n + i * batch
                    idx = order[lo : tf.minimum(lo + batch, (e + 1) * n)]
                    step(tf.gather(x, idx), tf.gather(y, idx))

        head = tf.keras.Model(model.input, model.get_layer("logits").output)

        @tf.function(input_signature=[x_spec])
        def logits(xb):
            return head(xb, training=False)

        self._run_epochs, self._logits = run_epochs, logits

    def init(self, seed: int) -> Weights:
        """Fresh initial weights, a function of ``seed``: every kernel and bias drawn by its layer's own
        initializer, seeded (no global seed is touched: re-seeding TensorFlow makes the next call of a
        traced function re-instantiate it, 0.15 s each time). A model with other weights is rebuilt."""
        import tensorflow as tf

        drawn = {}
        for i, layer in enumerate(self.model.layers):
            for attr in ("kernel", "bias"):
                var, ini = getattr(layer, attr, None), getattr(layer, f"{attr}_initializer", None)
                if var is None or ini is None:
                    continue
                config = ini.get_config()
                if "seed" in config:
                    config["seed"] = int(np.random.default_rng([seed, i, attr == "bias"]).integers(1 << 31))
                drawn[id(var)] = type(ini).from_config(config)(var.shape, var.dtype).numpy()
        if all(id(v) in drawn for v in self.model.weights):
            return [drawn[id(v)] for v in self.model.weights]
        tf.keras.utils.set_random_seed(seed)
        return self.build().get_weights()

    def fit(self, weights: Weights, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> Weights:
        """``epochs`` epochs of Adam from ``weights`` with a fresh optimizer; the data order from ``seed``."""
        import tensorflow as tf

        self.model.set_weights(weights)
        for v in self.opt.variables:  # iterations and moments: a fresh optimizer, the step kept traced
            v.assign(tf.zeros_like(v))
        rng = np.random.default_rng(seed)
        y = np.asarray(y, np.float32).reshape(-1, 1) if self.binary else np.asarray(y, np.int64)
        order = np.concatenate([rng.permutation(len(x)) for _ in range(epochs)]).astype(np.int32)
        self._run_epochs(x, y, order)
        return self.model.get_weights()

    def logits(self, weights: Weights, x: np.ndarray, batch: int = 2048) -> np.ndarray:
        """(n, classes) float64 pre-softmax outputs; a sigmoid unit's logit z as (0, z)."""
        self.model.set_weights(weights)
        z = np.concatenate([self._logits(x[i : i + batch]).numpy() for i in range(0, len(x), batch)])
        z = z.astype(np.float64)
        return np.concatenate([np.zeros_like(z), z], axis=1) if self.binary else z


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
    trainer: KerasTrainer,
    store: CheckpointStore,
    seed: int,
    from_stage: int = 0,
) -> tuple[Weights, StageCost]:
    """Train (or resume) one shard through stages from_stage+1..R; return (weights, StageCost).

    ``from_stage`` 0 trains from fresh weights (seeded by the shard's stage-0 seed); k resumes from the
    checkpoint of stage k (its key must be in ``store``: after a deletion, ``sisa.delete`` names the last
    unaffected stage). Every stage's weights are checkpointed under its key.
    """
    start, work = time.perf_counter(), 0
    if from_stage:
        weights = store.get(shard.key(from_stage))
    else:
        weights = trainer.init(stage_seed(seed, shard_index, 0))
    for stage in range(from_stage + 1, len(schedule) + 1):
        idx = shard.seen(stage)
        epochs = schedule[stage - 1]
        if epochs and len(idx):
            weights = trainer.fit(weights, x[idx], y[idx], epochs, stage_seed(seed, shard_index, stage))
            work += epochs * len(idx)
        store.put(shard.key(stage), weights)
    return weights, StageCost(len(schedule) - from_stage, work, time.perf_counter() - start)
