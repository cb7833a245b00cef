"""Tables and figure of kind `shokri`: the shadow-model attack by attacker knowledge and class count.

``shokri_attack``: per setting, mean [95% CI] over replicates of the attack's precision and recall (at
the attack models' 0.5 threshold: the paper's measure), AUC, TPR at 1% FPR, the target's train and test
accuracy and, for model-based synthesis, the queries per synthetic record. ``shokri_vs_real``: what each
weaker attacker loses against the attacker with real shadow data, paired by replicate (trials with the
same seed and the other parameters equal share their target model and scored records). ``shokri_class``
(CSV only): per-class precision, recall and AUC.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from privstudy.analysis.common import (
    StudyData,
    add_setting_columns,
    interval_bars,
    intervals,
    save_figure,
    summarise_columns,
    varying_params,
    write_table,
)
from privstudy.stats.intervals import mean_interval

KIND = "shokri"
SUMMARY = [
    ("precision", "precision"),
    ("recall", "recall"),
    ("auc", "AUC"),
    ("tpr_at_fpr_1pct", "TPR @ 1% FPR"),
    ("target_train_accuracy", "target train acc."),
    ("target_test_accuracy", "target test acc."),
]
KNOWLEDGE_ORDER = {"real": 0, "noisy": 1, "marginals": 2, "model": 3, "random": 4}
# Parameters of the attacker's knowledge only: a weaker attacker is paired with the real-data attacker
# of the same replicate whatever these are set to.
KNOWLEDGE_PARAMS = ("knowledge", "noise_fraction", "attacker_size") + tuple(
    f"synth_{p}" for p in ("k_max", "k_min", "conf_min", "rej_max", "iter_max", "max_searches")
)


def _with_settings(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    params = varying_params(rows["config_json"].unique())
    rows = add_setting_columns(rows, params)
    return rows, params


def _order(frame: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    if "knowledge" in params:
        frame = frame.assign(_k=frame["knowledge"].map(KNOWLEDGE_ORDER))
        own = [p for p in params if p in KNOWLEDGE_PARAMS and p != "knowledge"]
        keys = [p for p in params if p not in KNOWLEDGE_PARAMS] + ["_k"] + own
        return frame.sort_values(keys, kind="mergesort").drop(columns="_k").reset_index(drop=True)
    return frame.sort_values(params, kind="mergesort").reset_index(drop=True) if params else frame


def _paired_losses(rows: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    """Per setting with knowledge != real: precision and AUC minus those of knowledge real, paired."""
    if "knowledge" not in params or "real" not in set(rows["knowledge"]):
        return pd.DataFrame()
    others = [p for p in params if p not in KNOWLEDGE_PARAMS]
    own = [p for p in params if p in KNOWLEDGE_PARAMS]  # knowledge first, then its own parameters
    real = rows[rows["knowledge"] == "real"].set_index(others + ["seed"])[["precision", "auc"]]
    if real.index.has_duplicates:
        return pd.DataFrame()  # more than one real-data attacker per replicate: nothing to pair with
    out = []
    for key, g in rows[rows["knowledge"] != "real"].groupby(others + own, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        g = g.set_index(others + ["seed"])
        both = g.index.intersection(real.index)
        if not len(both):
            continue
        row = dict(zip(others + own, key))
        for col in ("precision", "auc"):
            d = (g.loc[both, col] - real.loc[both, col]).to_numpy(dtype=np.float64)
            m, lo, hi, n = mean_interval(d)
            row.update({f"{col}_loss_mean": m, f"{col}_loss_ci_low": lo, f"{col}_loss_ci_high": hi})
        row["n_pairs"] = len(both)
        out.append(row)
    return _order(pd.DataFrame(out), others + own) if out else pd.DataFrame()


def _shown_params(frame: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    """The setting columns as shown: a knowledge level's own parameters only on its rows (noise_fraction
    on noisy, synth_* on model), the distributed labels (tabular_classes null) as '-'."""
    shown = frame[params].copy() if params else pd.DataFrame(index=frame.index)
    for p in params:
        col = shown[p].astype(object)
        blank = col.isna()
        if "knowledge" in params and p == "noise_fraction":
            blank |= frame["knowledge"] != "noisy"
        elif "knowledge" in params and p.startswith("synth_"):
            blank |= frame["knowledge"] != "model"
        shown[p] = col.where(~blank, "-")
    return shown


def _figure(summary: pd.DataFrame, params: list[str], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, 4.2))
    x_param = "tabular_classes" if "tabular_classes" in params else None
    groups = [p for p in params if p != x_param]
    shown = _shown_params(summary, params)
    # a curve's label names only what differs from the study's most common setting
    common = {p: shown[p].astype(str).mode().iloc[0] for p in groups}
    frames = summary.groupby(groups, sort=False, dropna=False) if groups else [((), summary)]
    for _key, g in frames:
        first = shown.loc[g.index[0]]
        label = ", ".join(f"{p}={first[p]}" for p in groups if str(first[p]) != common[p]) or "base"
        if x_param:
            g = g.sort_values("n_classes_mean")
            xs = g["n_classes_mean"].to_numpy()
        else:
            xs = np.arange(len(g))
        mean, err = interval_bars(g, "precision")
        ax.errorbar(xs, mean, yerr=err, marker="o", capsize=3, label=label)
    if x_param:
        ax.set_xscale("log")
        ax.set_xlabel("number of classes")
    else:
        ax.set_xticks(np.arange(len(summary)))
        ax.set_xticklabels(
            [", ".join(str(summary.iloc[i][p]) for p in params) for i in range(len(summary))],
            rotation=30,
            ha="right",
            fontsize=7,
        )
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_ylabel("attack precision (mean, 95% CI)")
    ax.set_ylim(0.4, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return save_figure(fig, out_dir, "shokri_precision")


def build(study: StudyData, out_dir: Path) -> list[str]:
    """Write the shokri tables and figure; return the report's Markdown lines."""
    rows = study.table(KIND, "shokri_attack")
    if not len(rows):
        return []
    rows, params = _with_settings(rows)
    numeric = summarise_columns(
        rows,
        params or ["kind"],
        [c for c, _ in SUMMARY]
        + ["advantage", "accuracy", "synth_queries_per_record", "synth_confidence", "n_classes"],
    )
    numeric = _order(numeric, params)
    pretty = _shown_params(numeric, params)
    for col, title in SUMMARY:
        pretty[title] = intervals(numeric, col)
    if rows["synth_searches"].gt(0).any():
        pretty["queries / record"] = [
            "-" if np.isnan(v) else f"{v:.0f}" for v in numeric["synth_queries_per_record_mean"]
        ]
    pretty["trials"] = numeric["n_trials"]
    lines = [f"### Shadow-model attack by attacker knowledge ({len(rows)} trials)", ""]
    written = write_table(
        out_dir,
        "shokri_attack",
        numeric,
        pretty,
        "Shokri et al.'s shadow-model attack (mean [95% CI] over replicates)",
    )
    lines += [
        "Precision and recall at the attack models' 0.5 threshold over equal numbers of members and "
        "non-members (chance: precision 0.5).",
        "",
        written.markdown,
    ]
    losses = _paired_losses(rows, params)
    if len(losses):
        shown = _shown_params(losses, [p for p in params if p in losses.columns])
        shown["precision - real"] = intervals(losses, "precision_loss")
        shown["AUC - real"] = intervals(losses, "auc_loss")
        shown["pairs"] = losses["n_pairs"]
        w = write_table(
            out_dir,
            "shokri_vs_real",
            losses,
            shown,
            "Each attacker against real shadow data, paired by replicate",
        )
        lines += [
            "What each weaker attacker loses against real shadow data (paired by replicate):",
            "",
            w.markdown,
        ]
    per_class = study.table(KIND, "shokri_class")
    if len(per_class):
        pc, pparams = _with_settings(per_class)
        pc_num = _order(summarise_columns(pc, pparams + ["label"], ["precision", "recall", "auc"]), pparams)
        write_table(out_dir, "shokri_class", pc_num, pc_num, "Per-class attack precision, recall, AUC")
    fig = _figure(numeric, params, out_dir)
    lines += [f"![attack precision]({fig.relative_to(out_dir)})", ""]
    cfg = json.loads(rows["config_json"].iloc[0])
    lines += [f"Dataset: {cfg['dataset']}; shadows per trial: {cfg['n_shadows']}.", ""]
    return lines
