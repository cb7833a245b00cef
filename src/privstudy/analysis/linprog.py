"""The confidence-vs-nearest-neighbour tables and figures of the LP pipeline."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


from privstudy.analysis.common import StudyData, add_setting_columns, intervals, summarise, summarise_columns
from privstudy.analysis.common import save_figure, varying_params, write_table

KIND = "linprog"

SUMMARY_METRICS = [
    ("top_train_distance_mean", "train dist. (top)"),
    ("bottom_train_distance_mean", "train dist. (bottom)"),
    ("top_members_recall", "members in top set"),
    ("bottom_members_recall", "members in bottom set"),
    ("top_member_share", "member share (top)"),
    ("bottom_member_share", "member share (bottom)"),
    ("spearman_confidence_train_distance", "Spearman(conf., dist.)"),
    ("auc_confidence_membership", "AUC conf. -> member"),
    ("saturated_share", "share conf. = 1"),
]


def build(study: StudyData, out_dir: Path) -> list[str]:
    """Write the LP tables and figures; return the report's Markdown lines."""
    metrics = study.table(KIND, "linprog_metrics")
    if not len(metrics):
        return ["No finished linprog trials yet."]
    params = varying_params(metrics["config_json"].unique())
    metrics = add_setting_columns(metrics, params)
    model = add_setting_columns(study.table(KIND, "linprog_model"), params)
    bins = add_setting_columns(study.table(KIND, "linprog_bins"), params)
    keys = params + ["confidence_type"]

    # Summary: one row per setting and confidence, each metric as mean and interval over trials.
    wide = metrics.pivot_table(index=["trial_id"] + keys, columns="metric", values="value").reset_index()
    numeric = summarise_columns(wide, keys, [metric for metric, _label in SUMMARY_METRICS])
    acc = summarise(model, params or ["objective"], "accuracy")
    acc = acc.drop(columns="n_trials")
    numeric = numeric.merge(acc, on=params or ["objective"], how="left") if params else numeric.assign(
        **{c: acc[c].iloc[0] for c in acc.columns if c.startswith("accuracy")})
    numeric = numeric.sort_values(keys).reset_index(drop=True)
    pretty = numeric[keys + ["n_trials"]].copy()
    pretty["accuracy"] = intervals(numeric, "accuracy")
    for metric, label in SUMMARY_METRICS:
        if metric.endswith("member_share"):
            continue  # tiny by design (members are few); kept in the CSV
        pretty[label] = intervals(numeric, metric)
    files = write_table(out_dir, "linprog_confidence_vs_nn", numeric, pretty,
                        "LP pipeline: confidence vs nearest training point (mean [95% CI] over trials)")

    # Binned curve: confidence bin -> mean train distance, over trials.
    curve = summarise_columns(bins, keys + ["bin"], [
        ("train_distance_mean", "train_distance"), ("nonmember_train_distance_mean", "nonmember_train_distance"),
        ("confidence_mean", "confidence"), ("member_share", "member_share")])
    curve = curve.sort_values(keys + ["bin"]).reset_index(drop=True)
    pretty_curve = curve[keys + ["bin", "n_trials"]].copy()
    pretty_curve["confidence"] = intervals(curve, "confidence")
    pretty_curve["train distance"] = intervals(curve, "train_distance")
    pretty_curve["members"] = [f"{v:.2e}" for v in curve["member_share_mean"]]
    files += write_table(out_dir, "linprog_binned_curve", curve, pretty_curve,
                         "LP pipeline: confidence bin (1 = least confident) -> mean normalised distance "
                         "to the nearest training point")
    figure = _figure(curve, params, out_dir)

    n_trials = len(study.done_ids(KIND))
    lines = [f"### Linear-programming pipeline ({n_trials} trials)", "",
             f"Settings differ in: {', '.join(params) if params else '(one setting)'}.", "",
             "Train distance is the Euclidean distance to the nearest training point divided by the "
             "trial's largest such distance; 'top'/'bottom' are the most/least confident query points.", ""]
    lines += [f"- [{p.name}](tables/{p.name})" for p in files]
    lines += ["", f"![binned curve](figures/{figure.name})", ""]
    lines += [(out_dir / "tables" / "linprog_confidence_vs_nn.md").read_text().split("\n", 2)[2]]
    return lines


def _figure(curve: pd.DataFrame, params: list[str], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = sorted(curve["confidence_type"].unique())
    fig, axes = plt.subplots(1, len(types), figsize=(5.5 * len(types), 4.2), squeeze=False, sharey=True)
    for ax, ctype in zip(axes[0], types):
        sub = curve[curve["confidence_type"] == ctype]
        groups = sub.groupby(params, sort=True) if params else [((), sub)]
        for key, g in groups:
            key = key if isinstance(key, tuple) else (key,)
            label = ", ".join(f"{p}={v}" for p, v in zip(params, key)) or "all trials"
            ax.plot(g["bin"], g["train_distance_mean"], marker="o", ms=3, label=label)
            ax.fill_between(g["bin"], g["train_distance_ci_low"], g["train_distance_ci_high"], alpha=0.2)
        ax.set_title(f"confidence: {ctype}")
        ax.set_xlabel("confidence bin (1 = least confident)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean normalised distance to nearest training point")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    path = save_figure(fig, out_dir, "linprog_binned_curve")
    return path
