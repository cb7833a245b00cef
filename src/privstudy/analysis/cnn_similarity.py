"""The confidence-vs-nearest-neighbour tables and figure of the image pipeline (`cnn_similarity`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from privstudy.analysis.common import StudyData, intervals, save_figure
from privstudy.analysis.similarity import SimilarityTables, build_similarity, setting_label

KIND = "cnn_similarity"


def build(study: StudyData, out_dir: Path) -> list[str]:
    """Write the image-pipeline tables and figure; return the report's Markdown lines."""
    return build_similarity(TABLES, study, out_dir)


def _figure(curve: pd.DataFrame, params: list[str], keys: list[str], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for key, g in curve.groupby(keys, sort=True):
        label = setting_label(keys, key)
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


TABLES = SimilarityTables(
    kind=KIND,
    prefix="cnn",
    extra_keys=[],
    summary=[
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
    ],
    model_columns=[("train_accuracy", "train acc."), ("nonmember_accuracy", "non-member acc.")],
    model_hidden=["epochs_run"],
    curve=[
        ("member_nn_distance_mean", "member_nn_distance"),
        ("nonmember_nn_distance_mean", "nonmember_nn_distance"),
        ("confidence_mean", "confidence"),
        ("member_share", "member_share"),
    ],
    curve_shown=[
        ("confidence", "confidence", intervals),
        ("member_nn_distance", "NN dist. members", intervals),
        ("nonmember_nn_distance", "NN dist. non-members", intervals),
        ("member_share", "member share", intervals),
    ],
    summary_title="Image pipeline: confidence vs nearest training point in feature space "
    "(mean [95% CI] over trials)",
    curve_title="Image pipeline: confidence decile (1 = least confident) -> mean normalised angular distance "
    "to "
    "the nearest training point",
    heading="### Image confidence-similarity pipeline ({n} trials)",
    explanation="NN dist. is arccos(cos_sim)/pi between a point's 128-d feature and its nearest training "
    "point's "
    "(members: the nearest other one); 'top'/'bottom' are the most/least confident points.",
    figure=_figure,
)
