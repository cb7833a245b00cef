"""The attack stage of `mia_train` studies: (setting, attack, target) units, stored, resumable, fanned out.

Each unit's result is committed like a trial's: its per-example scores first, then one row of metrics
(the commit point), both Parquet files written atomically with the provenance columns::

    attacks/units/<unit_id>.parquet    one row: the attack's metrics on one target and its ROC on a grid
    attacks/scores/<unit_id>.parquet   the target's per-example scores (the pooled ROC and figures use them)

A unit's id hashes what its result depends on: the setting's model trials (their ids, in model order:
a model finishing later changes every unit of the setting), the attack, the target model and the
attack's parameters, and ``ATTACK_CODE``. Rerunning computes only what is missing.

Work goes to executors as ``AttackTask`` chunks: one setting, several attacks, several targets. A chunk
reads the setting's score shards once, model by model and only the columns its attacks need, computes
what all its targets share once (``privstudy.mia.shared``), then commits unit after unit; a chunk killed
half-way leaves its finished units behind.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import socket
import time
import traceback
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from privstudy.harness import results
from privstudy.harness.worker import TrialOutcome, _slurm_ids
from privstudy.mia.attacks import RMIA_A

KIND = "mia_attack"  # the provenance `kind` of attack units
ATTACK_CODE = 1
"""Part of every unit id: bump when an attack's definition changes, so that stored units are recomputed."""
ATTACKS_DIR = "attacks"
UNITS_DIR = "attacks/units"
SCORES_DIR = "attacks/scores"
SHADOW_TARGETS = 8  # the shadow attack trains classifiers per class and target: at most this many targets
FPR_GRID = np.logspace(-4, 0, 81)  # the fixed log grid each unit's ROC is stored on
SHADOW_SEED = 0  # the shadow attack's folds and row sample

METRIC_COLUMNS = [
    "auc",
    "balanced_accuracy",
    "advantage",
    "n_members",
    "n_nonmembers",
    "tpr_at_fpr_0.1pct",
    "ppv_at_fpr_0.1pct",
    "tpr_at_fpr_1pct",
    "ppv_at_fpr_1pct",
    "tpr_at_fpr_10pct",
    "ppv_at_fpr_10pct",
]
UNIT_COLUMNS = pa.schema(
    [
        ("setting_id", pa.string()),
        ("attack", pa.string()),
        ("target", pa.int32()),  # the target's model index
        ("n_models", pa.int32()),  # models of the setting used (the target and its shadows)
        *[(c, pa.float64()) for c in METRIC_COLUMNS],
        ("roc_tpr_json", pa.string()),  # TPR at FPR_GRID, as JSON
    ]
)
SCORE_COLUMNS = pa.schema(
    [
        ("example_id", pa.int64()),
        ("is_member", pa.bool_()),
        ("score", pa.float64()),  # higher = more likely a member
    ]
)
# Score columns each attack reads, beyond keep and labels (threshold attacks: the target's own).
NEEDS = {
    "loss": ("loss",),
    "confidence": ("p_true",),
    "entropy": ("entropy",),
    "modified_entropy": ("mentr",),
    "shadow": ("probs",),
    "reference": ("loss",),
    "lira_offset": ("views",),
    "rmia": ("p_true",),
}


@dataclasses.dataclass(frozen=True)
class AttackTask:
    """One chunk of units for an executor: one setting, some attacks, some targets. Small and picklable."""

    study: str
    study_dir: str  # where the score shards are read
    store_dir: str  # where attacks/ is written: the study folder, or the --out folder of a read-only study
    setting_id: str
    config: dict  # the setting's config (without the seed): pool_size, n_models, keep_seed, ...
    trial_ids: tuple[str, ...]  # the setting's done model trials, in model order
    model_ids: tuple[int, ...]  # their model indices
    units: tuple[tuple[str, int], ...]  # (attack, target model index) of every unit of this chunk
    code_version: str
    rmia_a: float = RMIA_A
    seed: int = SHADOW_SEED  # the shadow attack's folds and row sample
    trial_id: str = ""  # the chunk's id (executors key their bookkeeping by it)
    kind: str = KIND
    cpus: int = 1

    def execute(self) -> TrialOutcome:
        """Run the chunk's missing units (what an executor's worker calls)."""
        return execute_chunk_units(self)


def unit_id(trial_ids: Sequence[str], attack: str, target: int, rmia_a: float, seed: int) -> str:
    """The id of one unit: a hash of everything its result depends on."""
    params: dict = {"attack": attack, "target": int(target), "code": ATTACK_CODE}
    if attack == "rmia":
        params["rmia_a"] = float(rmia_a)
    if attack == "shadow":
        params["seed"] = int(seed)
    text = json.dumps({"trials": list(trial_ids), **params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def unit_path(study_dir: Path, uid: str) -> Path:
    """Where a unit's metrics row (its commit) lives."""
    return Path(study_dir) / UNITS_DIR / f"{uid}.parquet"


def scores_path(study_dir: Path, uid: str) -> Path:
    """Where a unit's per-example scores live."""
    return Path(study_dir) / SCORES_DIR / f"{uid}.parquet"


def done_units(study_dir: Path) -> set[str]:
    """Ids of the units committed as done (failed and damaged ones are recomputed)."""
    folder = Path(study_dir) / UNITS_DIR
    if not folder.is_dir():
        return set()
    return {
        p.stem for p in folder.glob("*.parquet") if not p.name.startswith(".") and _is_done(study_dir, p.stem)
    }


# ----------------------------------------------------------------------------------------------------
# Reading a setting's scores


def load_setting(
    study_dir: Path, trial_ids: Sequence[str], model_ids: Sequence[int], cfg: dict, columns: Iterable[str]
):
    """A setting's pool scores as a ``ScoreSet``, read model by model, only the ``columns`` needed.

    Args:
        study_dir: the study folder.
        trial_ids: the setting's model trials in model order; model_ids: their model indices.
        cfg: the setting's config (pool_size, n_models, keep_seed).
        columns: among loss, p_true, entropy, mentr, views, probs. Columns not read are zeros.

    Raises:
        AttackStageError: a shard that is incomplete or disagrees with the keep matrix.
    """
    from privstudy.mia.attacks import ScoreSet
    from privstudy.mia.keep import keep_matrix

    cols = set(columns)
    m, n = len(trial_ids), int(cfg["pool_size"])
    scalar = {c: np.zeros((m, n)) for c in ("loss", "p_true", "entropy", "mentr")}
    keep = np.zeros((m, n), bool)
    labels = None
    views = probs = None
    read = ["source", "example_id", "is_member", "label"] + [c for c in scalar if c in cols]
    read += ["lira_views"] if "views" in cols else []
    read += ["probs"] if "probs" in cols else []
    for j, tid in enumerate(trial_ids):
        path = results.shard_path(study_dir, "mia_scores", tid)
        table = pq.read_table(path, columns=read)
        table = table.filter(pc.equal(table.column("source"), "pool"))
        table = table.take(pc.sort_indices(table, sort_keys=[("example_id", "ascending")]))
        ids = table.column("example_id").to_numpy()
        if len(ids) != n or not np.array_equal(ids, np.arange(n)):
            raise AttackStageError(
                f"{path}: {len(ids)} pool rows, expected examples 0..{n - 1}; the shard is incomplete: "
                f"delete its trial record and rerun the sweep"
            )
        keep[j] = table.column("is_member").to_numpy(zero_copy_only=False)
        if labels is None:
            labels = table.column("label").to_numpy()
        for c in scalar:
            if c in cols:
                scalar[c][j] = table.column(c).to_numpy()
        if "views" in cols:
            flat = table.column("lira_views").combine_chunks().flatten().to_numpy()
            if views is None:
                views = np.empty((m, n, len(flat) // n))
            views[j] = flat.reshape(n, -1)
        if "probs" in cols:
            flat = table.column("probs").combine_chunks().flatten().to_numpy()
            if len(flat):
                if probs is None:
                    probs = np.empty((m, n, len(flat) // n), np.float32)  # as recorded: float32
                probs[j] = flat.reshape(n, -1)
    expected = keep_matrix(cfg["n_models"], n, cfg["keep_seed"])[np.asarray(model_ids)]
    if not np.array_equal(keep, expected):
        raise AttackStageError(
            f"setting {cfg}: recorded membership differs from the keep matrix of (n_models="
            f"{cfg['n_models']}, pool_size={n}, keep_seed={cfg['keep_seed']})"
        )
    return ScoreSet(
        keep=keep,
        labels=labels,
        views=views if views is not None else np.zeros((m, n, 1)),
        probs=probs,
        **scalar,
    )


class AttackStageError(RuntimeError):
    """The attack stage cannot run on these shards; the message names the problem and the fix."""


# ----------------------------------------------------------------------------------------------------
# Running a chunk


def _needed_columns(attacks: Sequence[str]) -> set[str]:
    cols: set[str] = set()
    for a in attacks:
        cols |= set(NEEDS.get(a, ("views",)))
    return cols


def unit_tables(task: AttackTask, attack: str, target: int, scores: np.ndarray, truth: np.ndarray):
    """The metrics row and the scores table of one unit (without provenance), as DataFrames."""
    from privstudy.mia.metrics import attack_metrics, roc_curve

    roc = roc_curve(scores, truth)
    metrics = attack_metrics(scores, truth, roc=roc)
    fpr, tpr, _ = roc
    grid = [round(float(v), 6) for v in np.interp(FPR_GRID, fpr, tpr)]
    per_example = pd.DataFrame({"example_id": np.arange(len(scores)), "is_member": truth, "score": scores})
    return _unit_row(task, attack, target, metrics, grid), per_example


def _unit_row(task: AttackTask, attack: str, target: int, metrics: dict, roc_grid: list) -> pd.DataFrame:
    """The one metrics row of a unit (a failed unit: NaN metrics, an empty ROC)."""
    row = {
        "setting_id": task.setting_id,
        "attack": attack,
        "target": int(target),
        "n_models": len(task.model_ids),
        **{c: float(metrics.get(c, np.nan)) for c in METRIC_COLUMNS},
        "roc_tpr_json": json.dumps(roc_grid),
    }
    return pd.DataFrame([row])


def _provenance(task: AttackTask, uid: str, target: int, attack: str) -> dict:
    return {
        "study": task.study,
        "trial_id": uid,
        "kind": KIND,
        "schema_version": results.SCHEMA_VERSION,
        "code_version": task.code_version,
        "seed": int(target),
        "status": "done",
        "error": None,
        "started_at": dt.datetime.now(dt.timezone.utc),
        "duration_s": 0.0,
        "host": socket.gethostname(),
        "config_json": json.dumps(
            {
                "setting_id": task.setting_id,
                "attack": attack,
                "target": int(target),
                "trials": list(task.trial_ids),
                "rmia_a": task.rmia_a,
                "seed": task.seed,
                "attack_code": ATTACK_CODE,
            },
            sort_keys=True,
        ),
        **_slurm_ids(),
    }


def _commit(task: AttackTask, uid: str, prov: dict, row: pd.DataFrame, per_example: Optional[pd.DataFrame]):
    study_dir = Path(task.store_dir)
    if per_example is not None:
        results.write_atomic(
            scores_path(study_dir, uid), results.to_arrow(per_example, SCORE_COLUMNS, prov, "attack_scores")
        )
    results.write_atomic(unit_path(study_dir, uid), results.to_arrow(row, UNIT_COLUMNS, prov, "attack_units"))


def execute_chunk_units(task: AttackTask) -> TrialOutcome:
    """Compute and commit every unit of the chunk that is not done yet, on ``task.cpus`` threads.

    The thread limit matters: the shadow attack's gradient boosting uses OpenMP, whose threads spin
    when the cores are busy (measured: 35 s instead of 3.1 s per target on 2 shared cores)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=task.cpus):
        return _execute_chunk_units(task)


def _execute_chunk_units(task: AttackTask) -> TrialOutcome:
    from privstudy.mia.attacks import run_attack
    from privstudy.mia.shared import FAST, SharedStats

    start = time.perf_counter()
    study_dir = Path(task.study_dir)
    index = {int(m): j for j, m in enumerate(task.model_ids)}
    todo = []
    for attack, target in task.units:
        uid = unit_id(task.trial_ids, attack, target, task.rmia_a, task.seed)
        if not _is_done(Path(task.store_dir), uid):
            todo.append((attack, target, uid))
    if not todo:
        return TrialOutcome(task.trial_id, "skipped", None, 0.0)
    wanted = tuple(sorted({a for a, _, _ in todo}))
    try:
        data = load_setting(study_dir, task.trial_ids, task.model_ids, task.config, _needed_columns(wanted))
        fast = [a for a in wanted if a in FAST]
        shared = SharedStats(data, tuple(fast)) if fast else None
    except (AttackStageError, OSError, pa.ArrowException) as err:
        # Nothing of the chunk is committed; the driver reports the reason, and a rerun retries.
        reason = f"setting {task.setting_id}: {err}".splitlines()[0]
        return TrialOutcome(task.trial_id, "failed", reason, time.perf_counter() - start)
    failed = None
    # Target-major order: the shared statistics cache one target's shadow sets at a time.
    order = {a: i for i, (a, _) in enumerate(task.units)}
    for attack, target, uid in sorted(todo, key=lambda u: (u[1], order[u[0]])):
        t = index[int(target)]
        prov = _provenance(task, uid, target, attack)
        t0 = time.perf_counter()
        try:
            if shared is not None and attack in FAST:
                scores = shared.run(attack, t, rmia_a=task.rmia_a, seed=task.seed)
            else:
                scores = run_attack(attack, data, t, rmia_a=task.rmia_a, seed=task.seed)
            row, per_example = unit_tables(task, attack, target, scores, data.keep[t])
        except Exception:  # noqa: BLE001 - a failed unit is recorded; the others carry on
            err = traceback.format_exc()
            failed = err.strip().splitlines()[-1]
            prov.update(status="failed", error=err, duration_s=time.perf_counter() - t0)
            _commit(task, uid, prov, _unit_row(task, attack, target, {}, []), None)
            continue
        prov["duration_s"] = time.perf_counter() - t0
        _commit(task, uid, prov, row, per_example)
    status = "failed" if failed else "done"
    return TrialOutcome(task.trial_id, status, failed, time.perf_counter() - start)


def _is_done(study_dir: Path, uid: str) -> bool:
    path = unit_path(study_dir, uid)
    if not path.exists():
        return False
    try:
        return pq.read_table(path, columns=["status"]).column("status").to_pylist() == ["done"]
    except (pa.ArrowException, OSError):
        return False


# ----------------------------------------------------------------------------------------------------
# Planning


@dataclasses.dataclass(frozen=True)
class SettingPlan:
    """One setting of a study as the attack stage sees it."""

    setting_id: str
    config: dict  # without the seed
    trial_ids: tuple[str, ...]  # done model trials, in model order
    model_ids: tuple[int, ...]
    attacks: tuple[str, ...]  # the attacks that run on it
    resources: dict  # the setting's trial resources, as in the manifest

    def targets(self, attack: str, max_targets: Optional[int]) -> tuple[int, ...]:
        """The target model indices of one attack (the shadow attack: at most SHADOW_TARGETS)."""
        n = len(self.model_ids) if max_targets is None else min(max_targets, len(self.model_ids))
        if attack == "shadow":
            n = min(n, SHADOW_TARGETS)
        return self.model_ids[:n]


def setting_plans(
    manifest: dict, records: pd.DataFrame, attacks: Optional[Sequence[str]]
) -> list[SettingPlan]:
    """The study's `mia_train` settings with their done models, in setting-id order.

    Args:
        manifest: the study manifest; records: its trial records (trial_id, kind, status, config_json).
        attacks: the attacks asked for (None: every attack the setting supports).
    """
    from privstudy.mia.attacks import ATTACKS, ONLINE

    trials = {t["trial_id"]: t for t in manifest["trials"] if t["kind"] == "mia_train"}
    done = records[(records["status"] == "done") & records["trial_id"].isin(list(trials))]
    by_setting: dict[str, list[tuple[int, str]]] = {}
    for tid in done["trial_id"]:
        t = trials[tid]
        by_setting.setdefault(t["setting_id"], []).append((int(t["config"]["seed"]), tid))
    plans = []
    for sid in sorted(by_setting):
        models = sorted(by_setting[sid])
        first = trials[models[0][1]]
        cfg = {k: v for k, v in first["config"].items() if k != "seed"}
        names = [a for a in ATTACKS if attacks is None or a in attacks]
        names = [a for a in names if not (a in ONLINE and len(models) < 4)]
        names = [a for a in names if not (a == "shadow" and not cfg.get("record_probs", False))]
        plans.append(
            SettingPlan(
                setting_id=sid,
                config=cfg,
                trial_ids=tuple(t for _, t in models),
                model_ids=tuple(m for m, _ in models),
                attacks=tuple(names),
                resources=dict(first.get("resources", {})),
            )
        )
    return plans


def plan_tasks(
    study: str,
    study_dir: Path,
    store_dir: Path,
    plans: Sequence[SettingPlan],
    code_version: str,
    max_targets: Optional[int] = None,
    targets_per_task: Optional[int] = None,
    workers: int = 1,
    rmia_a: float = RMIA_A,
    seed: int = SHADOW_SEED,
) -> tuple[list[AttackTask], int, int]:
    """The chunks holding every unit not done yet, and the counts (units in all, units to compute).

    A chunk is one setting, its attacks with missing units and ``targets_per_task`` targets (default:
    the targets shared out over ``workers``, so each worker reads the setting once); the shadow
    attack's units are chunked apart.
    """
    done = done_units(store_dir)
    tasks: list[AttackTask] = []
    total = todo_count = 0
    for plan in plans:
        missing: dict[int, list[str]] = {}
        for attack in plan.attacks:
            for target in plan.targets(attack, max_targets):
                total += 1
                if unit_id(plan.trial_ids, attack, target, rmia_a, seed) not in done:
                    missing.setdefault(int(target), []).append(attack)
        if not missing:
            continue
        todo_count += sum(len(v) for v in missing.values())
        # The shadow attack (seconds per target, the others milliseconds) goes into chunks of its own,
        # so that the pool can balance it against the rest.
        groups = [
            [a for a in plan.attacks if a == "shadow"],
            [a for a in plan.attacks if a != "shadow"],
        ]
        chunks = []
        for names in groups:
            targets = sorted(t for t in missing if any(a in missing[t] for a in names))
            if not targets:
                continue
            size = targets_per_task or max(1, -(-len(targets) // max(1, workers)))
            for i in range(0, len(targets), size):
                chunk = targets[i : i + size]
                chunks.append(tuple((a, t) for a in names for t in chunk if a in missing[t]))
        for units in chunks:
            key = json.dumps([plan.setting_id, list(plan.trial_ids), units, rmia_a, seed])
            tasks.append(
                AttackTask(
                    study=study,
                    study_dir=str(study_dir),
                    store_dir=str(store_dir),
                    setting_id=plan.setting_id,
                    config=plan.config,
                    trial_ids=plan.trial_ids,
                    model_ids=plan.model_ids,
                    units=units,
                    code_version=code_version,
                    rmia_a=rmia_a,
                    seed=seed,
                    trial_id="attack-" + hashlib.sha256(key.encode()).hexdigest()[:16],
                )
            )
    return tasks, total, todo_count


def read_units(study_dir: Path, uids: Iterable[str]) -> pd.DataFrame:
    """The metrics rows of the given units that are committed (done or failed)."""
    tables = []
    for uid in uids:
        path = unit_path(study_dir, uid)
        if path.exists():
            tables.append(pq.read_table(path))
    if not tables:
        return pd.DataFrame()
    return pa.concat_tables(tables).to_pandas()


def read_scores(study_dir: Path, uid: str) -> pd.DataFrame:
    """One unit's per-example scores (example_id, is_member, score)."""
    return pq.read_table(
        scores_path(study_dir, uid), columns=["example_id", "is_member", "score"]
    ).to_pandas()


def task_resources(tasks: Sequence[AttackTask], plans: Sequence[SettingPlan], timeout_min: int = 120) -> dict:
    """What each chunk asks of a Slurm node: one core, memory for the setting's arrays (about 1 KiB per
    model and example with every attack, as measured by benchmarks/bench_attack_stage.py, plus 1 GiB),
    no GPU; partition, account, QoS and constraint as the setting's trials. One chunk per array task."""
    from privstudy.harness.spec import Resources

    by_setting = {p.setting_id: p for p in plans}
    out = {}
    for task in tasks:
        plan = by_setting[task.setting_id]
        r = plan.resources
        gib = len(plan.model_ids) * int(plan.config["pool_size"]) * 1024 / 2**30
        out[task.trial_id] = Resources(
            cpus=1,
            mem_gb=float(round(1 + 2 * gib, 1)),
            timeout_min=timeout_min,
            partition=r.get("partition"),
            qos=r.get("qos"),
            account=r.get("account"),
            constraint=None,
            trials_per_task=1,
            requeues=r.get("requeues", 3),
        )
    return out
