"""Tables and figures of kind `mlm_mia`: membership attacks on masked language models.

``mlm_attacks``: per setting, attack (loss, loss per token, likelihood ratio, ratio per token), level
(sequence; note-level mean or max of its windows' scores) and contrast (members against non-members,
near externals, far externals), mean [95% CI] over trials of the AUC and of the TPR at 1% and 0.1% FPR
(``unresolved`` where the negatives cannot resolve that FPR). ``mlm_duplication``: members grouped by
how many times the sequence (or note) was in the target's training, against all non-members.
``mlm_perplexity``: pseudo-perplexity exp(-sum PLL / sum tokens) of the target and the reference on
every part. Figure ``mlm_roc``: log-log ROC, mean TPR over trials on a log FPR grid. Non-member
windows that equal a member window token for token are members in fact and are left out of the
negatives (their number is in the report).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from privstudy.analysis.common import (
    StudyData,
    add_setting_columns,
    intervals,
    save_figure,
    summarise_columns,
    varying_params,
    write_table,
)
from privstudy.mia.metrics import attack_metrics, resolves, roc_curve, tpr_at_fpr
from privstudy.mia.mlm import ATTACKS, CONTRASTS, attack_scores, by_note, pseudo_perplexity

KIND = "mlm_mia"
UNRESOLVED = "unresolved"
RATES = ((0.01, "tpr_at_fpr_1pct"), (0.001, "tpr_at_fpr_0.1pct"))
LEVELS = {"sequence": None, "note_mean": "mean", "note_max": "max"}


def _group(k: int) -> str:
    return "3+" if k >= 3 else str(int(k))


def _metric_row(pos: np.ndarray, neg: np.ndarray) -> dict[str, float]:
    scores = np.r_[pos, neg]
    truth = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    m = attack_metrics(scores, truth)
    row = {"auc": m["auc"], "n_members": len(pos), "n_nonmembers": len(neg)}
    for fpr, key in RATES:
        row[key] = m[key] if resolves(len(neg), fpr) else np.nan
    return row


def _level_scores(frame: pd.DataFrame, attack: str, level: str) -> pd.DataFrame:
    """One row per unit (sequence or note) of one part: score, and its training count."""
    s = attack_scores(attack, frame["pll_target"], frame["pll_reference"], frame["n_tokens"])
    how = LEVELS[level]
    if how is None:
        return pd.DataFrame({"score": s, "seen": frame["seen_target"].to_numpy()})
    ids, agg = by_note(s, frame["note_id"].to_numpy(), how)
    copies = frame.groupby("note_id")["note_copies"].first().reindex(ids).to_numpy()
    return pd.DataFrame({"score": agg, "seen": copies})


def without_member_copies(scores: pd.DataFrame) -> pd.DataFrame:
    """The rows minus non-member-part windows that equal a member window (members in fact)."""
    return scores[~((scores["part"] != "member") & (scores["seen_target"] > 0))]


def trial_metrics(scores: pd.DataFrame) -> pd.DataFrame:
    """Every attack x level x contrast of one trial's scores, and the duplication groups.

    Returns:
        rows (attack, level, contrast, group, auc, tpr_at_fpr_1pct, tpr_at_fpr_0.1pct, n_members,
        n_nonmembers); ``group`` "all" or the members' training count (1, 2, 3+) against all non-members.
    """
    parts = {p: g for p, g in without_member_copies(scores).groupby("part")}
    rows = []
    if "member" not in parts:
        return pd.DataFrame(rows)
    for attack in ATTACKS:
        for level in LEVELS:
            members = _level_scores(parts["member"], attack, level)
            for contrast in CONTRASTS:
                if contrast not in parts:
                    continue
                neg = _level_scores(parts[contrast], attack, level)["score"].to_numpy()
                base = {"attack": attack, "level": level, "contrast": contrast}
                rows.append({**base, "group": "all", **_metric_row(members["score"].to_numpy(), neg)})
                if contrast != "nonmember":
                    continue
                for group, g in members.groupby(members["seen"].map(_group)):
                    rows.append({**base, "group": group, **_metric_row(g["score"].to_numpy(), neg)})
    return pd.DataFrame(rows)


def perplexities(scores: pd.DataFrame) -> pd.DataFrame:
    """Per part, the target's and the reference's pseudo-perplexity."""
    rows = []
    for part, g in scores.groupby("part"):
        rows.append(
            {
                "part": part,
                "target": pseudo_perplexity(g["pll_target"], g["n_tokens"]),
                "reference": pseudo_perplexity(g["pll_reference"], g["n_tokens"]),
            }
        )
    return pd.DataFrame(rows)


def _cells(summary: pd.DataFrame) -> pd.DataFrame:
    shown = pd.DataFrame(index=summary.index)
    shown["AUC"] = intervals(summary, "auc")
    for fpr, key in RATES:
        cells = intervals(summary, key)
        shown[f"TPR @ {fpr:.1%} FPR"] = [
            c if resolves(int(n), fpr) else UNRESOLVED for c, n in zip(cells, summary["n_nonmembers_mean"])
        ]
    shown["members / negatives"] = [
        f"{m:.0f} / {n:.0f}" for m, n in zip(summary["n_members_mean"], summary["n_nonmembers_mean"])
    ]
    shown["trials"] = summary["n_trials"]
    return shown


def _roc_figure(scores: pd.DataFrame, params: list[str], out_dir: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = scores.groupby(params, sort=True, dropna=False) if params else [((), scores)]
    settings = list(settings)
    contrasts = [c for c in CONTRASTS if (scores["part"] == c).any()]
    if not contrasts:
        return None
    fig, axes = plt.subplots(
        len(settings), len(contrasts), figsize=(4.2 * len(contrasts), 3.6 * len(settings)), squeeze=False
    )
    for r, (key, frame) in enumerate(settings):
        key = key if isinstance(key, tuple) else (key,)
        title = ", ".join(f"{p}={v}" for p, v in zip(params, key))
        for c, contrast in enumerate(contrasts):
            ax = axes[r][c]
            for attack in ATTACKS:
                curves, floor = [], 1.0
                for _, t in frame.groupby("trial_id"):
                    t = without_member_copies(t)
                    pos, neg = t[t["part"] == "member"], t[t["part"] == contrast]
                    if not len(pos) or not len(neg):
                        continue
                    s = attack_scores(
                        attack, *(np.r_[pos[k], neg[k]] for k in ("pll_target", "pll_reference", "n_tokens"))
                    )
                    fpr, tpr, _ = roc_curve(s, np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)])
                    floor = min(floor, 1.0 / len(neg))
                    curves.append((fpr, tpr))
                if not curves:
                    continue
                grid = np.logspace(np.log10(floor), 0, 60)
                mean = np.mean([[tpr_at_fpr(f, t, g)[0] for g in grid] for f, t in curves], axis=0)
                ax.plot(grid, np.maximum(mean, 1e-4), label=attack)
            ax.plot([1e-4, 1], [1e-4, 1], color="grey", lw=0.8, ls=":")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(1e-3, 1)
            ax.set_ylim(1e-3, 1)
            ax.set_xlabel("FPR")
            ax.set_ylabel("TPR")
            ax.set_title(f"members vs {CONTRASTS[contrast]}" + (f"\n{title}" if title else ""), fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, out_dir, "mlm_roc")


def build(study: StudyData, out_dir: Path) -> list[str]:
    """Write the mlm_mia tables and figure; return the report's Markdown lines."""
    scores = study.table(KIND, "mlm_scores")
    trials = study.table(KIND, "mlm_trial")
    if not len(scores):
        return []
    params = varying_params(trials["config_json"].unique())
    scores = add_setting_columns(scores, params)
    trials = add_setting_columns(trials, params)
    per_trial = []
    ppl = []
    setting_of = scores.groupby("trial_id")[params].first() if params else None
    for trial_id, g in scores.groupby("trial_id"):
        m = trial_metrics(g)
        p = perplexities(g)
        for frame in (m, p):
            frame["trial_id"] = trial_id
            for col in params:
                frame[col] = setting_of.loc[trial_id, col]
        per_trial.append(m)
        ppl.append(p)
    metrics = pd.concat(per_trial, ignore_index=True)
    by = params + ["attack", "level", "contrast"]
    lines = [f"### Masked language models: membership inference ({len(trials)} trials)", ""]
    overall = metrics[metrics["group"] == "all"]
    summary = summarise_columns(
        overall, by, ["auc", "tpr_at_fpr_1pct", "tpr_at_fpr_0.1pct", "n_members", "n_nonmembers"]
    )
    order = {a: i for i, a in enumerate(ATTACKS)}
    summary = summary.sort_values(
        params + ["contrast", "level", "attack"],
        key=lambda s: s.map(order) if s.name == "attack" else s,
        kind="mergesort",
    ).reset_index(drop=True)
    shown = pd.concat([summary[by], _cells(summary)], axis=1)
    w = write_table(out_dir, "mlm_attacks", summary, shown, "Membership attacks on the masked LM")
    excluded = int(trials["member_windows_in_nonmembers"].sum())
    lines += [
        "Scores: loss = the target's pseudo-log-likelihood (PLL); ratio = PLL target - PLL reference; "
        "`_per_token`: divided by the window's tokens. Levels: sequence (one window), note (mean or max "
        "over its scored windows). Mean [95% CI] over trials; TPR at an FPR is the best TPR at a "
        f"threshold whose FPR does not exceed it (`{UNRESOLVED}`: too few negatives to resolve it). "
        f"Negative windows equal to a member window ({excluded} in all trials) are left out.",
        "",
        w.markdown,
    ]
    dup = metrics[(metrics["contrast"] == "nonmember") & (metrics["group"] != "all")]
    dup = dup[dup["attack"].isin(["loss", "ratio"]) & dup["level"].isin(["sequence", "note_mean"])]
    if len(dup):
        by_d = params + ["attack", "level", "group"]
        summary = summarise_columns(
            dup, by_d, ["auc", "tpr_at_fpr_1pct", "tpr_at_fpr_0.1pct", "n_members", "n_nonmembers"]
        )
        shown = pd.concat(
            [summary[by_d].rename(columns={"group": "seen in training"}), _cells(summary)], axis=1
        )
        w = write_table(out_dir, "mlm_duplication", summary, shown, "Membership by times seen in training")
        lines += [
            "Members by the times the sequence (level sequence: the exact window) or the note (note level) "
            "was in the target's training, each group against all non-members.",
            "",
            w.markdown,
        ]
    ppl = pd.concat(ppl, ignore_index=True)
    summary = summarise_columns(ppl, params + ["part"], ["target", "reference"])
    shown = summary[params + ["part"]].copy()
    shown["target"] = intervals(summary, "target")
    shown["reference"] = intervals(summary, "reference")
    shown["trials"] = summary["n_trials"]
    w = write_table(out_dir, "mlm_perplexity", summary, shown, "Pseudo-perplexity by part")
    base = summarise_columns(
        trials,
        params or ["kind"],
        ["target_final_loss", "target_train_s", "target_epoch_s", "score_s", "n_params"],
    )
    first = base.iloc[0]
    lines += [
        "Pseudo-perplexity exp(-sum PLL / sum tokens), mean [95% CI] over trials: the target's members are "
        "`member`, the reference's are `population`.",
        "",
        w.markdown,
        f"Models: {first['n_params_mean']:.0f} parameters; target training "
        f"{first['target_train_s_mean']:.0f} s ({first['target_epoch_s_mean']:.1f} s per epoch), "
        f"scoring {first['score_s_mean']:.0f} s (first setting, mean over trials).",
        "",
    ]
    fig = _roc_figure(scores, params, out_dir)
    if fig is not None:
        lines += [f"![{fig.stem}]({fig.relative_to(out_dir)})", ""]
    return lines
