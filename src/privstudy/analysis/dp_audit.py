"""The DP audit of `mia_train` settings with canaries: empirical epsilon lower bounds beside the accountant's.

Per model, the one-run audit (Steinke, Nasr and Jagielski 2023) of its canaries; per setting, the
one-run bounds of all its models together and the many-run audit (Jagielski et al. 2020) over its
models; and the violation check: a bound above an epsilon the accountant claims is a bug (in the
accountant, the optimizer or the training loop), reported loudly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from privstudy.analysis.common import AnalysisError, Written, write_table
from privstudy.defences.dp import default_delta
from privstudy.mia.audit import many_run_canary_audit, one_run_audit
from privstudy.mia.canaries import SCORES, canary_inclusion, canary_scores, default_guesses

CONFIDENCE = 0.95
EPS = ("eps_rdp_epoch", "eps_pld_epoch", "eps_rdp_poisson", "eps_pld_poisson")
VALID_EPS = ("eps_rdp_epoch", "eps_pld_epoch")  # what shuffled training can claim (see defences.dp)
AUDIT_NOTE = (
    f"DP audit ({CONFIDENCE:.0%} confidence, delta = the DP claim's delta: dp_delta, else 1/n_train "
    "rounded down to a power of ten, for undefended models too; the one-run bound cannot exceed 0 unless "
    "2 x canaries x delta is well below 5%). One-run: each model's canaries (each included by a fair coin), "
    "scored by their loss and by online LiRA against the setting's other models (whose coins are "
    "independent), guesses k+ 'in' / k- 'out' fixed in advance, Bonferroni over scores and guesses; the "
    "setting's one-run bound is the largest over its models, each tested at 5%/M (Bonferroni over models). "
    "Many-run: the canary and threshold chosen on a random half of the models, the bound from the other "
    "half (Clopper-Pearson, 2.5% per rate); with few models it cannot exceed a small value whatever the "
    "leak. The models' other training data differ (each trains on its keep half): the many-run audit "
    "counts that draw as part of the training algorithm. A bound above an epsilon the accountant claims "
    "for shuffled batches (the 'epoch' figures) is a violation: a bug. The Poisson figures hold only for "
    "Poisson-sampled batches, which the training does not use; a bound above them is shown, not a bug."
)


def canary_matrices(rows: pd.DataFrame, cfg: dict, model_ids: np.ndarray):
    """(stat, loss, included), each (M, m), of a setting's canary rows; the coins checked against the seed."""
    can = rows[rows["source"] == "canary"].sort_values(["model_index", "example_id"], kind="mergesort")
    m = cfg.get("canaries", 0)
    if not m:
        return None
    if len(can) != len(model_ids) * m:
        raise AnalysisError(
            f"setting {cfg}: {len(can)} canary rows for {len(model_ids)} models of {m} canaries; "
            "a shard is incomplete"
        )
    shape = (len(model_ids), m)
    included = can["is_member"].to_numpy(bool).reshape(shape)
    expected = np.stack([canary_inclusion(m, cfg["canary_seed"], int(j)) for j in model_ids])
    if not np.array_equal(included, expected):
        raise AnalysisError(f"setting {cfg}: recorded canary inclusion differs from canary_seed's coins")
    stat = np.stack(can["lira_views"].to_numpy())[:, 0].reshape(shape).astype(float)
    return stat, can["loss"].to_numpy(float).reshape(shape), included


def audit_setting(rows: pd.DataFrame, models: pd.DataFrame, cfg: dict, model_ids: np.ndarray):
    """(per-model rows, the setting's row) of the audit, or None without canaries."""
    mats = canary_matrices(rows, cfg, model_ids)
    if mats is None:
        return None
    stat, loss, included = mats
    n_models, m = stat.shape
    p = 1 - CONFIDENCE
    guesses = default_guesses(m)
    models = models.set_index("model_index")
    per_model, joint = [], []
    for t, j in enumerate(model_ids):
        row = models.loc[int(j)]
        if np.isfinite(row["dp_delta"]):
            delta = float(row["dp_delta"])
        elif cfg.get("dp_delta") is not None:
            delta = float(cfg["dp_delta"])
        else:
            delta = default_delta(int(row["n_train"]))
        scores = canary_scores(stat, loss, included, t)
        best, best_joint = None, None
        for name in SCORES:
            # Bonferroni: over the scores here, over the guesses inside one_run_audit, and over the
            # models for the setting's (joint) bound.
            one = one_run_audit(scores[name], included[t], guesses, delta, p / len(SCORES))
            both = one_run_audit(scores[name], included[t], guesses, delta, p / len(SCORES) / n_models)
            if best is None or one["eps_lb"] > best["eps_lb"]:
                best = {**one, "score": name}
            if best_joint is None or both["eps_lb"] > best_joint["eps_lb"]:
                best_joint = {**both, "score": name}
        per_model.append(
            {
                "model_index": int(j),
                "n_canaries": m,
                "n_canaries_in": int(included[t].sum()),
                "delta": delta,
                **{k: float(row[k]) for k in EPS},
                "one_run_eps_lb": best["eps_lb"],
                "score": best["score"],
                "k_plus": best["k_plus"],
                "k_minus": best["k_minus"],
                "guesses": best["r"],
                "correct": best["v"],
            }
        )
        joint.append(best_joint["eps_lb"])
    per_model_df = pd.DataFrame(per_model)
    delta = float(per_model_df["delta"].max())
    many = many_run_canary_audit(stat, included, delta, p, seed=cfg["canary_seed"]) if n_models >= 4 else None
    setting = {
        "n_models": n_models,
        "n_canaries": m,
        "canary_type": cfg.get("canary_type"),
        "delta": delta,
        **{k: float(per_model_df[k].max()) for k in EPS},
        "one_run_eps_lb": float(np.max(joint)),
        "one_run_model": int(model_ids[int(np.argmax(joint))]),
        "one_run_eps_lb_median_model": float(per_model_df["one_run_eps_lb"].median()),
        "many_run_eps_lb": many["eps_lb"] if many else np.nan,
        "many_run_counts": "-",
    }
    if many:
        setting["many_run_counts"] = f"TP {many['tp']}/{many['n_pos']}, FP {many['fp']}/{many['n_neg']}"
    # The check: each model's bound (at 5%/M, so all of them hold together) against its own claim, and
    # the many-run bound against the most generous claim of the setting.
    found = [
        f"model {int(j)}: {v}"
        for j, lb, row in zip(model_ids, joint, per_model)
        if (v := violations({"one_run_eps_lb": lb, **{k: row[k] for k in EPS}}))
    ]
    found.append(violations({"many_run_eps_lb": setting["many_run_eps_lb"], **{k: setting[k] for k in EPS}}))
    setting["violation"] = "; ".join(v for v in found if v)
    return per_model_df, setting


def violations(row: dict) -> str:
    """Which claimed epsilons a bound exceeds: '' if none (or no claim)."""
    found = []
    for bound in ("one_run_eps_lb", "many_run_eps_lb"):
        for eps in VALID_EPS:
            lb, claim = row.get(bound, np.nan), row.get(eps, np.nan)
            if np.isfinite(lb) and np.isfinite(claim) and lb > claim:
                found.append(f"{bound.split('_eps')[0].replace('_', '-')} {lb:.3f} > {eps} {claim:.3f}")
    return "; ".join(found)


def write_audit(
    out_dir: Path, per_model: list[pd.DataFrame], settings: list[dict]
) -> tuple[Optional[list[Path]], list[str]]:
    """Write tables dp_audit (per setting) and dp_audit_models; return (files, report lines)."""
    if not settings:
        return None, []
    setting_df = pd.DataFrame(settings)
    models_df = pd.concat(per_model, ignore_index=True)

    def eps_cell(v: float) -> str:
        return "-" if not np.isfinite(v) else f"{v:.3f}"

    pretty = setting_df.drop(columns=[*EPS, "one_run_eps_lb_median_model", "violation"]).copy()
    for a in ("rdp", "pld"):
        pretty[f"epsilon {a.upper()} epoch / Poisson"] = [
            f"{eps_cell(x)} / {eps_cell(y)}"
            for x, y in zip(setting_df[f"eps_{a}_epoch"], setting_df[f"eps_{a}_poisson"])
        ]
    for col in ("one_run_eps_lb", "many_run_eps_lb"):
        pretty[col] = [eps_cell(v) for v in setting_df[col]]
    pretty["violation"] = [f"**VIOLATION: {v}**" if v else "none" for v in setting_df["violation"]]
    table: Written = write_table(
        out_dir, "dp_audit", setting_df, pretty, "DP audit: empirical epsilon lower bounds (95%) per setting"
    )
    models_table: Written = write_table(
        out_dir,
        "dp_audit_models",
        models_df,
        models_df,
        "DP audit: each model's one-run bound (95% for that model alone)",
    )
    lines = []
    for row in settings:
        if row["violation"]:
            lines.append(
                f"**DP VIOLATION** in setting {row['setting']}: {row['violation']}. An empirical lower bound "
                "above the accountant's epsilon means the training does not have the privacy it claims."
            )
    lines += ["", AUDIT_NOTE, "", table.markdown]
    return table.files + models_table.files, lines
