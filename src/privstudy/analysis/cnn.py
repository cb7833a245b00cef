"""The confidence-vs-nearest-neighbour tables and figure of the image pipeline (`cnn_similarity`)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from privstudy.analysis.common import StudyData, add_setting_columns, intervals, summarise_columns
from privstudy.analysis.common import save_figure, varying_params, write_table

KIND = "cnn_similarity"

SUMMARY = [
    ("member_confidence_mean", "conf. members"),
    ("nonmember_confidence_mean", "conf. non-members"),
    ("member_nn_distance_mean", "NN dist. members"),
    ("nonmember_nn_distance_mean", "NN dist. non-members"),
    ("top_nn_distance_mean", "NN dist. (top)"),
    ("bottom_nn_distance_mean", "NN dist. (bottom)"),
    ("top_member_share", "members in top set"),
    ("bottom_member_share", "members in bottom set"),
    ("spearman_confidence_nn_distance", "Spearman(conf., dist.)"),
    ("auc_confidence_membership", "AUC conf. -> member"),
]


def build(study: StudyData, out_dir: Path) -> list[str]:
    """Write the image-pipeline tables and figure; return the report's Markdown lines."""
    metrics = study.table(KIND, "cnn_metrics")
    if not len(metrics):
        return ["No finished cnn_similarity trials yet."]
    params = varying_params(metrics["config_json"].unique())
    metrics = add_setting_columns(metrics, params)
    model = add_setting_columns(study.table(KIND, "cnn_model"), params)
    bins = add_setting_columns(study.table(KIND, "cnn_bins"), params)
    keys = params or []
    wide = metrics.pivot_table(index=["trial_id"] + keys, columns="metric", values="value").reset_index()
    if not keys:
        wide["_all"] = "all"
        model["_all"] = "all"
        bins["_all"] = "all"
        keys = ["_all"]
    numeric = summarise_columns(wide, keys, [metric for metric, _ in SUMMARY])
    numeric = numeric.merge(summarise_columns(model, keys, ["train_accuracy", "nonmember_accuracy", "epochs_run"])
                            .drop(columns="n_trials"), on=keys)
    numeric = numeric.sort_values(keys).reset_index(drop=True)
    pretty = numeric[keys + ["n_trials"]].copy()
    for col, label in [("train_accuracy", "train acc."), ("nonmember_accuracy", "non-member acc.")] + SUMMARY:
        pretty[label] = intervals(numeric, col)
    files = write_table(out_dir, "cnn_confidence_vs_nn", numeric.drop(columns=["_all"], errors="ignore"),
                        pretty.drop(columns=["_all"], errors="ignore"),
                        "Image pipeline: confidence vs nearest training point in feature space "
                        "(mean [95% CI] over trials)")
    curve = summarise_columns(bins, keys + ["bin"], [
        ("member_nn_distance_mean", "member_nn_distance"), ("nonmember_nn_distance_mean", "nonmember_nn_distance"),
        ("confidence_mean", "confidence"), ("member_share", "member_share")])
    curve = curve.sort_values(keys + ["bin"]).reset_index(drop=True)
    pretty_curve = curve[keys + ["bin", "n_trials"]].copy()
    for col, label in (("confidence", "confidence"), ("member_nn_distance", "NN dist. members"),
                       ("nonmember_nn_distance", "NN dist. non-members"), ("member_share", "member share")):
        pretty_curve[label] = intervals(curve, col)
    files += write_table(out_dir, "cnn_binned_curve", curve.drop(columns=["_all"], errors="ignore"),
                         pretty_curve.drop(columns=["_all"], errors="ignore"),
                         "Image pipeline: confidence decile (1 = least confident) -> mean normalised angular "
                         "distance to the nearest training point")
    figure = _figure(curve, keys, out_dir)
    n = len(study.done_ids(KIND))
    lines = [f"### Image confidence-similarity pipeline ({n} trials)", "",
             f"Settings differ in: {', '.join(params) if params else '(one setting)'}.", "",
             "NN dist. is arccos(cos_sim)/pi between a point's 128-d feature and its nearest training "
             "point's (members: the nearest other one); 'top'/'bottom' are the most/least confident points.", ""]
    lines += [f"- [{p.name}](tables/{p.name})" for p in files]
    lines += ["", f"![binned curve](figures/{figure.name})", ""]
    lines += [(out_dir / "tables" / "cnn_confidence_vs_nn.md").read_text().split("\n", 2)[2]]
    return lines


def _figure(curve: pd.DataFrame, keys: list[str], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for key, g in curve.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{k}={v}" for k, v in zip(keys, key) if k != "_all") or "all trials"
        for col, style in (("member_nn_distance", "-"), ("nonmember_nn_distance", "--")):
            who = "members" if col.startswith("member") else "non-members"
            ax.plot(g["bin"], g[f"{col}_mean"], style, marker="o", ms=3, label=f"{label}: {who}")
            ax.fill_between(g["bin"], g[f"{col}_ci_low"], g[f"{col}_ci_high"], alpha=0.15)
    ax.set_xlabel("confidence decile (1 = least confident)")
    ax.set_ylabel("mean angular distance to nearest training point")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = save_figure(fig, out_dir, "cnn_binned_curve")
    return path

