"""The confidence-vs-nearest-neighbour tables and figure of the LP pipeline (`linprog`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from privstudy.analysis.common import StudyData, intervals, save_figure
from privstudy.analysis.similarity import ALL, SimilarityTables, build_similarity, scientific, setting_label

KIND = "linprog"


def build(study: StudyData, out_dir: Path) -> list[str]:
    """Write the LP tables and figure; return the report's Markdown lines."""
    return build_similarity(TABLES, study, out_dir)


def _figure(curve: pd.DataFrame, params: list[str], keys: list[str], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = sorted(curve["confidence_type"].unique())
    fig, axes = plt.subplots(1, len(types), figsize=(5.5 * len(types), 4.2), squeeze=False, sharey=True)
    for ax, ctype in zip(axes[0], types):
        sub = curve[curve["confidence_type"] == ctype]
        for key, g in sub.groupby([ALL] + params, sort=True):
            label = setting_label([ALL] + params, key)
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


TABLES = SimilarityTables(
    kind=KIND,
    prefix="linprog",
    extra_keys=["confidence_type"],
    summary=[
        ("top_train_distance_mean", "train dist. (top)"),
        ("bottom_train_distance_mean", "train dist. (bottom)"),
        ("top_members_recall", "members in top set"),
        ("bottom_members_recall", "members in bottom set"),
        ("top_member_share", None),  # tiny by design (members are few); kept in the CSV
        ("bottom_member_share", None),
        ("spearman_confidence_train_distance", "Spearman(conf., dist.)"),
        ("auc_confidence_membership", "AUC conf. -> member"),
        ("saturated_share", "share conf. = 1"),
    ],
    model_columns=[("accuracy", "accuracy")],
    model_hidden=[],
    curve=[
        ("train_distance_mean", "train_distance"),
        ("nonmember_train_distance_mean", "nonmember_train_distance"),
        ("confidence_mean", "confidence"),
        ("member_share", "member_share"),
    ],
    curve_shown=[
        ("confidence", "confidence", intervals),
        ("train_distance", "train distance", intervals),
        ("member_share", "members", scientific),
    ],
    summary_title="LP pipeline: confidence vs nearest training point (mean [95% CI] over trials)",
    curve_title="LP pipeline: confidence bin (1 = least confident) -> mean normalised distance to the "
    "nearest "
    "training point",
    heading="### Linear-programming pipeline ({n} trials)",
    explanation="Train distance is the Euclidean distance to the nearest training point divided by the "
    "trial's "
    "largest such distance; 'top'/'bottom' are the most/least confident query points.",
    figure=_figure,
)
