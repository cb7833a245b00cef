"""Tables and figures of kind `sisa`: accuracy against sharding and slicing, the cost of unlearning
against full retraining (measured and predicted), and membership inference on forgotten points.

``sisa_accuracy``: per setting, mean [95% CI] over ensembles of the test accuracy of each aggregation
before and after the requests, of the monolithic model retrained on the surviving points (S = 1, R = 1,
the same epochs), and the paired gap vote-after minus monolithic. ``sisa_cost``: wall seconds and
point-epochs per request (or batch), the full retrain's, the measured speed-ups (time and work) and the
cost model's prediction for uniform requests, and checkpoint storage. ``sisa_membership``: for every
phase (the ensemble before unlearning, after it, the retrained baseline) and attack, the AUC of
separating forgotten points from never-seen ones and retained points from never-seen ones, per target
ensemble, using the setting's other ensembles as reference models (their never-seen points as OUT).
Exact unlearning puts the forgotten AUC after unlearning at 0.5; the retained AUC shows the attack has
the power to see membership at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from privstudy.analysis.common import (
    AnalysisError,
    StudyData,
    add_setting_columns,
    interval_bars,
    intervals,
    save_figure,
    summarise_columns,
    varying_params,
    write_table,
)
from privstudy.mia.attacks import ScoreSet, run_attack
from privstudy.mia.keep import keep_matrix
from privstudy.stats.intervals import mean_interval
from privstudy.stats.ranks import auc as rank_auc

KIND = "sisa"
ACCURACY = [
    ("acc_vote_before", "vote"),
    ("acc_average_before", "average"),
    ("acc_stacked_before", "stacked"),
    ("acc_vote_after", "vote, after"),
    ("acc_retrain", "S=1 retrained"),
    ("gap", "vote after - S=1"),
]
COST = [
    ("seconds_per_batch", "s / request"),
    ("retrain_s", "s full retrain"),
    ("speedup_time", "speed-up (time)"),
    ("speedup_work", "speed-up (point-epochs)"),
]
ATTACKS = ("loss", "lira_offline", "rmia")  # reference attacks need OUT ensembles: n_models >= 4
REFERENCE_ATTACKS = ("lira_offline", "rmia")
GROUPS = ("forgotten", "retained")  # each against the never-seen points
PHASES = ("before", "after", "retrain")  # as the trial writes them


def forgetting_aucs(scores: np.ndarray, member: np.ndarray, forgotten: np.ndarray) -> dict[str, float]:
    """AUC of membership scores for forgotten vs never-seen and retained vs never-seen points.

    Args:
        scores: (n,) higher = more likely trained on.
        member: (n,) in the training set before any request; forgotten: (n,) requested (members).
    """
    never = ~member
    out = {}
    for name, group in (("forgotten", member & forgotten), ("retained", member & ~forgotten)):
        if group.any() and never.any():
            both = group | never
            out[name] = rank_auc(scores[both], group[both])
        else:
            out[name] = float("nan")
    return out


def _phase_scoreset(rows: pd.DataFrame, n: int, keep: np.ndarray) -> ScoreSet:
    rows = rows.sort_values(["_model", "example_id"], kind="mergesort")
    m = len(rows) // n

    def mat(col: str) -> np.ndarray:
        return rows[col].to_numpy().reshape(m, n)

    return ScoreSet(
        keep=keep,
        labels=rows["label"].to_numpy()[:n],
        loss=mat("loss").astype(float),
        p_true=mat("p_true").astype(float),
        entropy=mat("entropy").astype(float),
        mentr=mat("mentr").astype(float),
        views=mat("lira").astype(float)[..., None],
    )


def membership_rows(scores: pd.DataFrame) -> pd.DataFrame:
    """Per setting, phase, attack and target ensemble: the forgotten and retained AUCs."""
    out = []
    for cfg_json, rows in scores.groupby("_setting", sort=False):
        cfg = json.loads(cfg_json)
        n = cfg["pool_size"]
        models = np.sort(rows["_model"].unique())
        keep = keep_matrix(cfg["n_models"], n, cfg["keep_seed"])[models]
        for phase, prow in rows.groupby("phase", sort=False):
            if len(prow) != len(models) * n:
                raise AnalysisError(
                    f"setting {cfg_json}: phase {phase} has {len(prow)} score rows, "
                    f"expected {len(models) * n}"
                )
            if not np.array_equal(_matrix(prow, "member", len(models), n), keep):
                raise AnalysisError(f"setting {cfg_json}: recorded membership differs from the keep matrix")
            data = _phase_scoreset(prow, n, keep)
            forgotten = _matrix(prow, "forgotten", len(models), n).astype(bool)
            attacks = ATTACKS if len(models) >= 4 else ("loss",)
            for attack in attacks:
                for t in range(len(models)):
                    s = run_attack(attack, data, t)
                    aucs = forgetting_aucs(s, data.keep[t], forgotten[t])
                    out.append(
                        {
                            "_setting": cfg_json,
                            "phase": phase,
                            "attack": attack,
                            "target": int(models[t]),
                            **aucs,
                        }
                    )
    return pd.DataFrame(out)


def _matrix(rows: pd.DataFrame, col: str, m: int, n: int) -> np.ndarray:
    """Column ``col`` as (models, examples), models in index order."""
    return rows.sort_values(["_model", "example_id"], kind="mergesort")[col].to_numpy().reshape(m, n)


def _verdict(lo: float, hi: float, group: str) -> str:
    if np.isnan(lo):
        return "-"
    if lo > 0.5:
        return "separated"
    if hi < 0.5:
        return "below chance"
    return "indistinguishable" if group == "forgotten" else "not separated"


def _figure_accuracy(numeric: pd.DataFrame, params: list[str], out_dir: Path) -> Path | None:
    if "shards" not in params:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    groups = [p for p in params if p != "shards"]
    frames = numeric.groupby(groups, sort=True, dropna=False) if groups else [((), numeric)]
    for key, g in frames:
        key = key if isinstance(key, tuple) else (key,)
        g = g.sort_values("shards")
        label = ", ".join(f"{p}={v}" for p, v in zip(groups, key)) or "SISA"
        mean, err = interval_bars(g, "acc_vote_after")
        ax.errorbar(g["shards"], mean, yerr=err, marker="o", capsize=3, label=label)
    base = numeric["acc_retrain_mean"].mean()
    ax.axhline(base, color="grey", ls="--", lw=1, label=f"S=1 retrained ({base:.3f})")
    ax.set_xlabel("shards S")
    ax.set_ylabel("test accuracy, label vote (mean, 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out_dir, "sisa_accuracy")


def _figure_speedup(numeric: pd.DataFrame, out_dir: Path) -> Path | None:
    ok = numeric["speedup_predicted_mean"].notna() & numeric["speedup_time_mean"].notna()
    if not ok.any():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = numeric[ok]
    fig, ax = plt.subplots(figsize=(5.0, 4.5))
    for col, marker, label in (("speedup_time", "o", "wall time"), ("speedup_work", "s", "point-epochs")):
        mean, err = interval_bars(g, col)
        ax.errorbar(g["speedup_predicted_mean"], mean, yerr=err, marker=marker, ls="", capsize=3, label=label)
    top = float(
        np.nanmax(np.r_[g["speedup_predicted_mean"], g["speedup_time_ci_high"], g["speedup_work_ci_high"]])
    )
    ax.plot([0, top * 1.05], [0, top * 1.05], color="grey", lw=0.8, ls="--", label="prediction")
    ax.set_xlabel("predicted speed-up (cost model, uniform requests)")
    ax.set_ylabel("measured speed-up over full retraining")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_dir, "sisa_speedup")


def build(study: StudyData, out_dir: Path) -> list[str]:
    """Write the sisa tables and figures; return the report's Markdown lines."""
    trials = study.table(KIND, "sisa_trial")
    if not len(trials):
        return []
    params = varying_params(trials["config_json"].unique())
    trials = add_setting_columns(trials, params)
    trials["gap"] = trials["acc_vote_after"] - trials["acc_retrain"]
    trials["seconds_per_batch"] = trials["unlearn_s"] / trials["n_batches"].where(trials["n_batches"] > 0)
    # measured in wall time: the full retrain over the mean batch (NaN where nothing was unlearnt)
    trials["speedup_time"] = (trials["retrain_s"] / trials["seconds_per_batch"]).where(
        trials["speedup_work"].notna()
    )
    by = params or ["kind"]
    acc = summarise_columns(trials, by, [c for c, _ in ACCURACY] + ["acc_shard_mean"])
    shown = acc[params].copy() if params else pd.DataFrame(index=acc.index)
    for col, title in ACCURACY:
        shown[title] = intervals(acc, col)
    shown["trials"] = acc["n_trials"]
    lines = [f"### SISA ({len(trials)} ensembles)", ""]
    w = write_table(out_dir, "sisa_accuracy", acc, shown, "SISA test accuracy (mean [95% CI] over ensembles)")
    lines += [
        "Test accuracy by aggregation before the requests, label vote after them, and the monolithic model "
        "retrained from scratch on the surviving points (S = 1, R = 1, same epochs); the gap is paired by "
        "ensemble.",
        "",
        w.markdown,
    ]

    cost = summarise_columns(
        trials, by, [c for c, _ in COST] + ["speedup_predicted", "checkpoint_bytes", "model_bytes", "train_s"]
    )
    shown = cost[params].copy() if params else pd.DataFrame(index=cost.index)
    for col, title in COST:
        shown[title] = intervals(cost, col)
    shown["predicted"] = [f"{v:.2f}" if np.isfinite(v) else "-" for v in cost["speedup_predicted_mean"]]
    shown["checkpoints MB"] = [f"{v / 1e6:.1f}" for v in cost["checkpoint_bytes_mean"]]
    shown["model MB"] = [f"{v / 1e6:.2f}" for v in cost["model_bytes_mean"]]
    w = write_table(out_dir, "sisa_cost", cost, shown, "SISA unlearning cost against full retraining")
    lines += [
        "Unlearning cost: seconds per request (per batch when batched), the full retrain on the surviving "
        "points, speed-up measured in wall time and in point-epochs, and the cost model's prediction "
        "(uniform requests only; `-` otherwise). Checkpoints: S x R stored stages.",
        "",
        w.markdown,
    ]
    requests = study.table(KIND, "sisa_request")
    if len(requests):
        requests = add_setting_columns(requests, params)
        cols = params + [
            "trial_id",
            "batch",
            "n_points",
            "shards_retrained",
            "from_stages",
            "point_epochs",
            "point_epochs_predicted",
            "wall_s",
        ]
        write_table(out_dir, "sisa_request", requests[cols], requests[cols], "Every request batch")

    scores = study.table(KIND, "sisa_scores")
    if len(scores):
        cfgs = {c: json.loads(c) for c in scores["config_json"].unique()}
        scores["_model"] = scores["config_json"].map(lambda c: cfgs[c]["seed"])
        scores["_setting"] = scores["config_json"].map(
            lambda c: json.dumps({k: v for k, v in cfgs[c].items() if k != "seed"}, sort_keys=True)
        )
        per_target = membership_rows(scores)
        rows = []
        for (setting, phase, attack), g in per_target.groupby(["_setting", "phase", "attack"], sort=False):
            cfg = json.loads(setting)
            row = {p: cfg[p] for p in params if p != "seed"}
            row.update({"phase": phase, "attack": attack, "targets": len(g)})
            for group in GROUPS:
                m, lo, hi, _ = mean_interval(g[group].to_numpy(dtype=float))
                row.update({f"{group}_mean": m, f"{group}_ci_low": lo, f"{group}_ci_high": hi})
            rows.append(row)
        mia = pd.DataFrame(rows)
        mia = mia.assign(_p=mia["phase"].map({p: i for i, p in enumerate(PHASES)}))
        mia = mia.sort_values([p for p in params if p in mia.columns] + ["_p"], kind="mergesort")
        mia = mia.drop(columns="_p").reset_index(drop=True)
        shown = mia[[p for p in params if p in mia.columns] + ["phase", "attack"]].copy()
        for group in GROUPS:
            shown[f"AUC {group} vs never-seen"] = intervals(mia, group)
            shown[f"{group}"] = [
                _verdict(lo, hi, group) for lo, hi in zip(mia[f"{group}_ci_low"], mia[f"{group}_ci_high"])
            ]
        shown["targets"] = mia["targets"]
        w = write_table(out_dir, "sisa_membership", mia, shown, "Membership inference on forgotten points")
        lines += [
            "Membership inference: AUC of telling forgotten (then retained) points from points the ensemble "
            "never trained on, mean [95% CI] over target ensembles; the other ensembles of the setting are "
            "the reference models (their never-seen points as OUT). After exact unlearning the forgotten "
            "points must be indistinguishable; before it they were members.",
            "",
            w.markdown,
        ]
    for fig in (_figure_accuracy(acc, params, out_dir), _figure_speedup(cost, out_dir)):
        if fig is not None:
            lines += [f"![{fig.stem}]({fig.relative_to(out_dir)})", ""]
    first = json.loads(trials["config_json"].iloc[0])
    lines += [
        f"Dataset: {first['dataset']}; arch {first['arch']}; {first['n_models']} ensembles per setting.",
        "",
    ]
    return lines
