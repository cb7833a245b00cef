"""Trial kind `shokri`: the shadow-model attack of Shokri et al. (2017) by what the attacker knows.

One trial is one replicate of the paper's experiment on a tabular dataset. Its records (drawn by the
trial's ``seed``) split into the target's training set (the members), as many held-out records (the
non-members the attack is scored on), and, for the attackers who hold real records, the attacker's
records. The target is trained; the attacker builds shadow data as its ``knowledge`` allows
(``privstudy.mia.shokri``: real, noisy, marginals, model-based synthesis through the target's released
outputs, or random), trains ``n_shadows`` shadow models like the target on random halves of it
(IN / OUT), fits one attack classifier per class on the shadows' released outputs, and scores the
target's members and non-members. Defences at inference (temperature, top-k, rounding) apply to the
target and, as the attacker knows the release format, to the shadows.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

import numpy as np
import pandas as pd
import pyarrow as pa

from privstudy.data.tabular import TABULAR_DATASETS, TABULAR_SIZES
from privstudy.harness.config import TrialConfig, check, param
from privstudy.harness.registry import TrialKind
from privstudy.mia.shokri import ATTACK_CLASSIFIERS, KNOWLEDGE

REAL_RECORDS = ("real", "noisy", "marginals")  # knowledge levels that draw on real records


@dataclasses.dataclass(frozen=True)
class ShokriConfig(TrialConfig):
    """Replicate ``seed`` of the shadow-model attack at one level of attacker knowledge."""

    dataset: Literal[TABULAR_DATASETS] = param(
        "location30", "Tabular dataset (privstudy.data.tabular); digits_binary is built in."
    )
    data_dir: str = param("", "Folder holding the dataset; empty: $PRIVSTUDY_DATA and Keras' cache.")
    tabular_classes: Optional[int] = param(
        None, "Records re-labelled into this many classes by k-means (Purchase-2..100); null: as distributed."
    )
    target_size: int = param(
        1200, "Records the target trains on (the members); as many non-members are scored."
    )
    knowledge: Literal[KNOWLEDGE] = param(
        "real",
        "Attacker's shadow data: real (disjoint records of the population), noisy (real with "
        "noise_fraction of features flipped), marginals (per-class feature frequencies), model "
        "(Algorithm 1 through the target's released outputs), random (none).",
    )
    noise_fraction: float = param(0.1, "knowledge noisy: fraction of each record's binary features flipped.")
    attacker_size: int = param(
        0,
        "Records the attacker holds or synthesises (each shadow trains on half of them); 0: 2 x target_size.",
    )
    n_shadows: int = param(10, "Shadow models.")
    attack_classifier: Literal[ATTACK_CLASSIFIERS] = param(
        "gbdt",
        "Per-class attack model (scikit-learn): gradient boosting, a 64-unit MLP, or logistic regression.",
    )
    synth_k_max: int = param(128, "knowledge model: features re-drawn per step at first (paper: 128).")
    synth_k_min: int = param(4, "knowledge model: fewest features re-drawn per step (paper: 4).")
    synth_conf_min: float = param(0.2, "knowledge model: confidence a released record needs (paper: 0.2).")
    synth_rej_max: int = param(10, "knowledge model: rejections before halving k (paper: 10).")
    synth_iter_max: int = param(1000, "knowledge model: queries before a search gives up (paper: not given).")
    synth_max_searches: int = param(
        0, "knowledge model: searches before giving up on filling attacker_size; 0: 5 x attacker_size."
    )
    hidden: tuple[int, ...] = param(
        (128,), "Widths of the tanh hidden layers of target and shadows (the paper's local model: 128)."
    )
    epochs: int = param(100, "Training epochs of target and shadows.")
    batch_size: int = param(100, "Training batch size.")
    learning_rate: float = param(1e-3, "Adam learning rate.")
    l2: float = param(0.0, "Defence: L2 weight penalty on every kernel (target and shadows).")
    temperature: float = param(1.0, "Defence at inference: released probabilities are softmax(logits / T).")
    round_decimals: Optional[int] = param(None, "Defence at inference: released probabilities rounded.")
    release_top_k: Optional[int] = param(
        None, "Defence at inference: only the k largest probabilities released (1: the label only)."
    )
    null_membership: bool = param(
        False, "Train the target on other records: the scored members were never seen (null test)."
    )
    deterministic: bool = param(False, "TensorFlow deterministic ops.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.target_size >= 10, "target_size", f"must be >= 10, got {self.target_size}")
        check(0 < self.noise_fraction <= 1, "noise_fraction", f"must be in (0, 1], got {self.noise_fraction}")
        check(self.attacker_size >= 0, "attacker_size", f"must be >= 0, got {self.attacker_size}")
        check(
            self.attacker_size == 0 or self.attacker_size >= 2 * self.target_size,
            "attacker_size",
            f"must be 0 or at least 2 x target_size = {2 * self.target_size} (each shadow trains on "
            f"target_size records and holds out as many), got {self.attacker_size}",
        )
        check(self.n_shadows >= 1, "n_shadows", f"must be >= 1, got {self.n_shadows}")
        check(
            self.tabular_classes is None or self.tabular_classes >= 2,
            "tabular_classes",
            f"must be >= 2, got {self.tabular_classes}",
        )
        check(
            1 <= self.synth_k_min <= self.synth_k_max, "synth_k_min", "need 1 <= synth_k_min <= synth_k_max"
        )
        check(0 <= self.synth_conf_min < 1, "synth_conf_min", "must be in [0, 1)")
        check(self.synth_rej_max >= 0 and self.synth_iter_max >= 1, "synth_iter_max", "must be >= 1")
        check(self.synth_max_searches >= 0, "synth_max_searches", "must be >= 0")
        check(len(self.hidden) >= 1 and min(self.hidden) >= 1, "hidden", "needs at least one positive width")
        check(self.epochs >= 1 and self.batch_size >= 1, "epochs", "epochs and batch_size must be >= 1")
        check(self.learning_rate > 0, "learning_rate", "must be > 0")
        check(self.l2 >= 0, "l2", "must be >= 0")
        check(self.temperature > 0, "temperature", "must be > 0")
        check(self.round_decimals is None or self.round_decimals >= 0, "round_decimals", "must be >= 0")
        check(self.release_top_k is None or self.release_top_k >= 1, "release_top_k", "must be >= 1")
        need = self.records_needed
        check(
            need <= TABULAR_SIZES[self.dataset],
            "target_size",
            f"{self.dataset} has {TABULAR_SIZES[self.dataset]} records; this trial needs {need} "
            f"(members and non-members: 2 x target_size"
            + (", the attacker's records" if self.knowledge in REAL_RECORDS else "")
            + (", the null target's training set" if self.null_membership else "")
            + "); lower target_size or attacker_size",
        )

    @property
    def shadow_records(self) -> int:
        return self.attacker_size or 2 * self.target_size

    @property
    def records_needed(self) -> int:
        real = self.shadow_records if self.knowledge in REAL_RECORDS else 0
        return 2 * self.target_size + real + (self.target_size if self.null_membership else 0)


ATTACK = pa.schema(
    [
        ("n_classes", pa.int32()),
        ("n_features", pa.int32()),
        ("target_train_accuracy", pa.float64()),  # on its members
        ("target_test_accuracy", pa.float64()),  # on the scored non-members
        ("shadow_train_accuracy", pa.float64()),  # mean over shadows, on their own IN records
        ("shadow_test_accuracy", pa.float64()),  # mean over shadows, on the target's non-members
        ("attacker_records", pa.int64()),  # the shadow data the attacker ended with
        ("shadow_size", pa.int64()),  # records each shadow trained on
        ("auc", pa.float64()),
        ("precision", pa.float64()),  # at the attack models' 0.5 threshold (the paper's measure)
        ("recall", pa.float64()),
        ("accuracy", pa.float64()),
        ("advantage", pa.float64()),  # max over thresholds of TPR - FPR
        ("tpr_at_fpr_1pct", pa.float64()),
        ("tpr_at_fpr_10pct", pa.float64()),
        ("n_members", pa.int64()),
        ("n_nonmembers", pa.int64()),
        ("synth_searches", pa.int64()),  # knowledge model: hill-climbing searches run (else 0)
        ("synth_found", pa.int64()),
        ("synth_queries", pa.int64()),  # queries to the target, all searches
        ("synth_queries_per_record", pa.float64()),  # all queries / records found
        ("synth_confidence", pa.float64()),  # target's mean confidence in the class of the found records
        ("train_s", pa.float64()),  # target + shadows
    ]
)

PER_CLASS = pa.schema(
    [
        ("label", pa.int32()),
        ("n_members", pa.int64()),
        ("n_nonmembers", pa.int64()),
        ("shadow_rows", pa.int64()),  # shadow (record, IN/OUT) rows the class's attack model learnt from
        ("precision", pa.float64()),
        ("recall", pa.float64()),
        ("auc", pa.float64()),
    ]
)

TABLES = {"shokri_attack": ATTACK, "shokri_class": PER_CLASS}


def _split(cfg: ShokriConfig, n: int) -> dict[str, np.ndarray]:
    """Disjoint record sets of replicate ``cfg.seed``: members, non-members, attacker, null training."""
    perm = np.random.default_rng([cfg.seed, 0x73686B72]).permutation(n)
    t = cfg.target_size
    parts = {"members": perm[:t], "nonmembers": perm[t : 2 * t]}
    at = 2 * t
    if cfg.knowledge in REAL_RECORDS:
        parts["attacker"] = perm[at : at + cfg.shadow_records]
        at += cfg.shadow_records
    if cfg.null_membership:
        parts["null_train"] = perm[at : at + t]
    return parts


def _train(cfg: ShokriConfig, x: np.ndarray, y: np.ndarray, n_classes: int, seed: int):
    from privstudy.models.tabular import build_tabular_model
    from privstudy.models.training import FitOptions, fit, seed_everything

    seed_everything(seed, cfg.deterministic)
    model = build_tabular_model(x.shape[1], n_classes, cfg.hidden, l2=cfg.l2)
    opts = FitOptions(
        epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, seed=seed
    )
    fr = fit(model, np.asarray(x, np.float32), y, opts)
    return model, fr.train_s


def _release(cfg: ShokriConfig, model):
    """The released output of a model: records -> probability vectors, as the defence allows."""
    import tensorflow as tf

    from privstudy.defences.release import released_probs

    # called eagerly, chunk by chunk: the synthesis queries thousands of small batches of varying size,
    # each of which Model.predict would trace anew
    sub = tf.keras.Model(model.input, model.get_layer("logits").output)

    def query(records: np.ndarray) -> np.ndarray:
        records = np.asarray(records, np.float32)
        chunks = [sub(records[i : i + 4096], training=False).numpy() for i in range(0, len(records), 4096)]
        logits = np.concatenate(chunks).astype(np.float64) if chunks else np.zeros((0, sub.output_shape[-1]))
        return released_probs(logits, cfg.temperature, cfg.round_decimals, cfg.release_top_k)

    return query


def _precision_recall(pred: np.ndarray, member: np.ndarray) -> tuple[float, float]:
    tp = float((pred & member).sum())
    precision = tp / pred.sum() if pred.any() else float("nan")
    recall = tp / member.sum() if member.any() else float("nan")
    return precision, recall


NO_SYNTHESIS = {  # the synthesis columns of an attacker that synthesises nothing
    "synth_searches": 0,
    "synth_found": 0,
    "synth_queries": 0,
    "synth_queries_per_record": float("nan"),
    "synth_confidence": float("nan"),
}


def _model_synthesis(cfg: ShokriConfig, query, n_classes: int, d: int, rng: np.random.Generator):
    from privstudy.mia.shokri import SynthesisParams, synthesize

    params = SynthesisParams(
        cfg.synth_k_max, cfg.synth_k_min, cfg.synth_conf_min, cfg.synth_rej_max, cfg.synth_iter_max
    )
    want, cap = cfg.shadow_records, cfg.synth_max_searches or 5 * cfg.shadow_records
    xs, ys, queries, searches, confs = [], [], 0, 0, []
    while sum(len(a) for a in ys) < want and searches < cap:
        batch = min(want, cap - searches)
        classes = (np.arange(searches, searches + batch) % n_classes).astype(np.int64)  # balanced classes
        syn = synthesize(query, classes, d, params, rng)
        xs.append(syn.x)
        ys.append(syn.y)
        queries += int(syn.queries.sum())
        searches += batch
        confs.append(syn.best_conf[syn.found])
    x, y = np.concatenate(xs)[:want], np.concatenate(ys)[:want]
    found = len(np.concatenate(ys))
    stats = {
        "synth_searches": searches,
        "synth_found": found,
        "synth_queries": queries,
        "synth_queries_per_record": queries / found if found else float("nan"),
        "synth_confidence": float(np.concatenate(confs).mean()) if found else float("nan"),
    }
    return x, y, stats


def attacker_data(cfg: ShokriConfig, x, y, n_classes, parts, query, rng):
    """The attacker's labelled shadow data at ``cfg.knowledge``, and the synthesis statistics."""
    from privstudy.mia import shokri

    stats = dict(NO_SYNTHESIS)
    d = x.shape[1]
    if cfg.knowledge == "real":
        return x[parts["attacker"]], y[parts["attacker"]], stats
    if cfg.knowledge == "noisy":
        return (
            shokri.flip_features(x[parts["attacker"]], cfg.noise_fraction, rng),
            y[parts["attacker"]],
            stats,
        )
    if cfg.knowledge == "marginals":
        if not np.isin(x, (0, 1)).all():
            raise ValueError("knowledge marginals samples binary features: this dataset has non-binary ones")
        prior, freq = shokri.class_marginals(x[parts["attacker"]], y[parts["attacker"]], n_classes)
        xs, ys = shokri.sample_marginals(prior, freq, cfg.shadow_records, rng)
        return xs, ys, stats
    if cfg.knowledge == "random":
        xs, ys = shokri.random_records(cfg.shadow_records, d, n_classes, rng)
        return xs, ys, stats
    return _model_synthesis(cfg, query, n_classes, d, rng)


def run(cfg: ShokriConfig) -> dict[str, pd.DataFrame]:
    from privstudy.data.tabular import load_tabular, relabelled
    from privstudy.mia import shokri
    from privstudy.mia.metrics import attack_metrics, rank_auc

    data = relabelled(load_tabular(cfg.dataset, cfg.data_dir or None), cfg.tabular_classes)
    x, y, n_classes = data.x, data.y, data.n_classes
    if cfg.records_needed > len(x):
        raise ValueError(
            f"{cfg.dataset} at {data.source} has {len(x)} records; the trial needs {cfg.records_needed}: "
            "lower target_size or attacker_size"
        )
    parts = _split(cfg, len(x))
    rng = np.random.default_rng([cfg.seed, 0x61747472])
    train_idx = parts["null_train"] if cfg.null_membership else parts["members"]
    target, train_s = _train(cfg, x[train_idx], y[train_idx], n_classes, seed=cfg.seed * 1000 + 999)
    query = _release(cfg, target)

    ax, ay, stats = attacker_data(cfg, x, y, n_classes, parts, query, rng)
    size = min(cfg.target_size, len(ax) // 2)
    if size < 1:
        raise RuntimeError(
            f"the attacker ended with {len(ax)} records, too few for a shadow; raise synth_iter_max or "
            "synth_max_searches, or lower synth_conf_min"
        )
    probs, labels, is_in, sh_train, sh_test = [], [], [], [], []
    eval_idx = np.concatenate([parts["members"], parts["nonmembers"]])
    for s, (inn, out) in enumerate(shokri.shadow_splits(len(ax), size, cfg.n_shadows, cfg.seed)):
        model, t = _train(cfg, ax[inn], ay[inn], n_classes, seed=cfg.seed * 1000 + s)
        train_s += t
        release = _release(cfg, model)
        both = np.concatenate([inn, out])
        p = release(ax[both])
        probs.append(p)
        labels.append(ay[both])
        is_in.append(np.arange(len(both)) < len(inn))
        sh_train.append(float((p[: len(inn)].argmax(1) == ay[inn]).mean()))
        sh_test.append(float((release(x[parts["nonmembers"]]).argmax(1) == y[parts["nonmembers"]]).mean()))
    probs, labels, is_in = np.concatenate(probs), np.concatenate(labels), np.concatenate(is_in)
    models = shokri.fit_attack_models(probs, labels, is_in, n_classes, cfg.attack_classifier, cfg.seed)

    tp = query(x[eval_idx])
    ty = y[eval_idx]
    member = np.arange(len(eval_idx)) < cfg.target_size
    score = models.score(tp, ty)
    pred = score > 0.5
    m = attack_metrics(score, member, fpr_points=(0.01, 0.1))
    precision, recall = _precision_recall(pred, member)
    correct = tp.argmax(1) == ty
    row = {
        "n_classes": n_classes,
        "n_features": x.shape[1],
        "target_train_accuracy": float(correct[member].mean()),
        "target_test_accuracy": float(correct[~member].mean()),
        "shadow_train_accuracy": float(np.mean(sh_train)),
        "shadow_test_accuracy": float(np.mean(sh_test)),
        "attacker_records": len(ax),
        "shadow_size": size,
        "auc": m["auc"],
        "precision": precision,
        "recall": recall,
        "accuracy": float((pred == member).mean()),
        "advantage": m["advantage"],
        "tpr_at_fpr_1pct": m["tpr_at_fpr_1pct"],
        "tpr_at_fpr_10pct": m["tpr_at_fpr_10pct"],
        "n_members": int(member.sum()),
        "n_nonmembers": int((~member).sum()),
        **stats,
        "train_s": train_s,
    }
    per_class = []
    for c in range(n_classes):
        rows = ty == c
        if not rows.any():
            continue
        pc, rc = _precision_recall(pred[rows], member[rows])
        both = member[rows].any() and (~member[rows]).any()
        per_class.append(
            {
                "label": c,
                "n_members": int(member[rows].sum()),
                "n_nonmembers": int((~member[rows]).sum()),
                "shadow_rows": int((labels == c).sum()),
                "precision": pc,
                "recall": rc,
                "auc": rank_auc(score[rows], member[rows]) if both else float("nan"),
            }
        )
    return {"shokri_attack": pd.DataFrame([row]), "shokri_class": pd.DataFrame(per_class)}


KIND = TrialKind(
    name="shokri",
    description="Shokri et al.'s shadow-model attack on tabular data at one level of attacker knowledge.",
    config_cls=ShokriConfig,
    run=run,
    tables=TABLES,
    uses_tensorflow=True,
    smoke={
        "dataset": "digits_binary",
        "target_size": 200,
        "n_shadows": 2,
        "epochs": 5,
        "knowledge": "model",
        "synth_iter_max": 100,
        "deterministic": True,
    },
)
