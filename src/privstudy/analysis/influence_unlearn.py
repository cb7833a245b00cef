"""Tables and figures of kind `influence_unlearn`: every unlearning method against retraining.

``unlearn_methods``: per setting and method, mean [95% CI] over seeds of the evaluation accuracy,
validation accuracy (with a validation split), macro-F1, restored fraction (label poisoning),
agreement with the retrained model's predictions, relative parameter distance to it, training-loss gap,
gradient residual, time as a share of retraining, the membership AUC of the old labels (0.5: no trace of
them) and the refit's chosen L2; with the number of diverged solves.
``unlearn_trials``: per setting, the clean and poisoned accuracies and the training times. Figure
``unlearn_tradeoff``: restored fraction (or agreement, for feature changes) against time over retraining.
"""

from __future__ import annotations

import json
from pathlib import Path

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
from privstudy.influence_runner import METHODS

KIND = "influence_unlearn"
SHOWN = [
    ("acc", "accuracy"),
    ("acc_val", "val. accuracy"),
    ("macro_f1", "macro-F1"),
    ("restored", "restored"),
    ("agreement", "agreement"),
    ("param_dist", "param. distance"),
    ("loss_gap", "loss gap"),
    ("grad_residual", "grad. residual"),
    ("time_ratio", "time / retrain"),
    ("old_label_auc", "old-label AUC"),
    ("l2", "refit L2"),
]


def with_time_ratio(methods: pd.DataFrame) -> pd.DataFrame:
    """Add ``time_ratio``: each method's wall time over its own trial's retraining time."""
    retrain = methods[methods["method"] == "retrain"].set_index("trial_id")["wall_s"]
    out = methods.copy()
    denom = out["trial_id"].map(retrain)
    out["time_ratio"] = out["wall_s"] / denom.where(denom > 0)
    return out


def method_summary(methods: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    """Mean [95% CI] of every measure per setting and method, methods in their canonical order."""
    by = params + ["method"]
    out = summarise_columns(methods, by, [c for c, _ in SHOWN] + ["wall_s", "hvps", "grad_examples"])
    diverged = methods.groupby(by, dropna=False)["diverged"].sum().rename("diverged").reset_index()
    out = out.merge(diverged, on=by, how="left")
    out["_m"] = out["method"].map({m: i for i, m in enumerate(METHODS)})
    return out.sort_values(params + ["_m"], kind="mergesort").drop(columns="_m").reset_index(drop=True)


def _figure(summary: pd.DataFrame, params: list[str], labels: bool, out_dir: Path) -> Path | None:
    col = "restored" if labels else "agreement"
    rows = summary[
        summary["method"].isin(["first_order", "second_order", "refit", "finetune", "sisa", "retrain"])
    ]
    if not rows[f"{col}_mean"].notna().any():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    groups = rows.groupby(params, sort=True, dropna=False) if params else [((), rows)]
    markers = dict(zip(METHODS, "xos*d^v"))
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        setting = ", ".join(f"{p}={v}" for p, v in zip(params, key))
        for _, r in g.iterrows():
            m = r["method"]
            mean, err = interval_bars(pd.DataFrame([r]), col)
            ax.errorbar(
                [r["time_ratio_mean"]],
                mean,
                yerr=err,
                marker=markers[m],
                ls="",
                capsize=3,
                label=f"{m}" + (f" ({setting})" if setting else ""),
            )
    ax.set_xscale("log")
    ax.set_xlabel("time / retraining time (log)")
    ax.set_ylabel("restored fraction" if labels else "agreement with retraining")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, out_dir, "unlearn_tradeoff")


def build(study: StudyData, out_dir: Path) -> list[str]:
    """Write the influence_unlearn tables and figure; return the report's Markdown lines."""
    methods = study.table(KIND, "unlearn_method")
    trials = study.table(KIND, "unlearn_trial")
    if not len(methods):
        return []
    params = varying_params(trials["config_json"].unique())
    methods = add_setting_columns(with_time_ratio(methods), params)
    trials = add_setting_columns(trials, params)
    summary = method_summary(methods, params)
    shown = summary[params + ["method"]].copy()
    for col, title in SHOWN:
        shown[title] = intervals(summary, col)
    shown["diverged"] = summary["diverged"].astype(int)
    shown["seeds"] = summary["n_trials"]
    lines = [f"### Closed-form unlearning ({len(trials)} trials)", ""]
    w = write_table(out_dir, "unlearn_methods", summary, shown, "Unlearning methods against retraining")
    lines += [
        "Every method on one evaluation split, mean [95% CI] over seeds: accuracy (and on the validation "
        "split, when the trials have one), macro-F1, the restored "
        "fraction of the accuracy lost to label poisoning, agreement of predictions and relative parameter "
        "distance to the retrained model, training-loss gap to it, gradient residual on the corrected set "
        "(the unlearned parameters), time over retraining's, and the membership AUC of the old labels "
        "(changed points against unchanged ones of their class; 0.5: no trace of the old labels); "
        "`refit L2`: the strength the refit chose on the validation split. "
        "`diverged`: trials whose solve failed (the update was not applied).",
        "",
        w.markdown,
    ]
    base = summarise_columns(
        trials,
        params or ["kind"],
        ["acc_clean", "acc_poisoned", "train_s", "retrain_s", "n_changed", "n_unlearned"],
    )
    shown = base[params].copy() if params else pd.DataFrame(index=base.index)
    for col in ("acc_clean", "acc_poisoned", "train_s", "retrain_s"):
        shown[col] = intervals(base, col)
    shown["changed"] = [f"{v:.0f}" for v in base["n_changed_mean"]]
    shown["unlearned params"] = [f"{v:.0f}" for v in base["n_unlearned_mean"]]
    w = write_table(out_dir, "unlearn_trials", base, shown, "Models before unlearning")
    lines += [
        "Before unlearning: accuracy of the clean and changed-set models, training times.",
        "",
        w.markdown,
    ]
    labels = any(json.loads(c).get("setting") == "labels" for c in trials["config_json"].unique())
    fig = _figure(summary, params, labels, out_dir)
    if fig is not None:
        lines += [f"![{fig.stem}]({fig.relative_to(out_dir)})", ""]
    return lines
