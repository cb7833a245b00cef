"""Membership-inference tables and figures: every attack on every target model of each study setting.

A setting is the set of `mia_train` trials that differ only in the model index (their seed). Each
model in turn is the target; the others are its shadow / reference models. Per attack, the metrics
are averaged over targets (mean and 95% Student-t interval).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from privstudy.analysis.common import (
    AnalysisError,
    StudyData,
    Written,
    interval_bars,
    intervals,
    save_figure,
    summarise_columns,
    varying_params,
    write_table,
)
from privstudy.analysis.dp_audit import audit_setting, write_audit
from privstudy.harness import attack_stage as stage
from privstudy.harness import results
from privstudy.harness.attack_stage import FPR_GRID, RMIA_A, SHADOW_SEED, SHADOW_TARGETS, SettingPlan
from privstudy.mia.attacks import THRESHOLD_ATTACKS, ScoreSet, run_attack
from privstudy.mia.metrics import FPR_POINTS, MIN_RESOLVING_NONMEMBERS, attack_metrics, resolves

KIND = "mia_train"
RISK_COLUMNS = ["auc", "balanced_accuracy", "advantage"] + [
    f"{m}_at_fpr_{p * 100:g}pct" for p in FPR_POINTS for m in ("tpr", "ppv")
]
SHOWN = [
    ("auc", "AUC"),
    ("balanced_accuracy", "bal. acc."),
    ("advantage", "advantage max(TPR-FPR)"),
    ("tpr_at_fpr_0.1pct", "TPR@0.1%FPR"),
    ("tpr_at_fpr_1pct", "TPR@1%FPR"),
    ("tpr_at_fpr_10pct", "TPR@10%FPR"),
    ("ppv_at_fpr_1pct", "PPV@1%FPR"),
]
POOLED_SHOWN = [("pooled_auc", "pooled AUC")] + [
    (f"pooled_tpr_at_fpr_{p * 100:g}pct", f"pooled TPR@{p * 100:g}%FPR") for p in FPR_POINTS[:2]
]
UNRESOLVED = "unresolved"  # a TPR at an FPR that fewer than MIN_RESOLVING_NONMEMBERS non-members can resolve
INTERVALS_NOTE = (
    "Per-target columns: mean over target models [95% Student-t interval over targets, clipped to [0, 1]]; "
    "the targets share their shadow models, so the interval is indicative, not a guarantee. Pooled columns: "
    "one ROC over every target's examples together (as the LiRA authors report). A TPR at an FPR that fewer "
    f"than {MIN_RESOLVING_NONMEMBERS} non-members can resolve "
    f"(n_nonmembers x FPR < {MIN_RESOLVING_NONMEMBERS}) "
    f"is shown as '{UNRESOLVED}'. PPV is averaged over the targets where the attack flags anything; "
    "'(k/n)' says over how many. Advantage is max(TPR - FPR) (TensorFlow Privacy: max |TPR - FPR|). "
    "No epsilon lower bound is derived from one model's examples: they are not independent trials."
)


def attack_rows(
    store: Path, plan: SettingPlan, max_targets: Optional[int]
) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Per-target metrics of every attack on one setting from the stored units, the pooled metrics (one
    row per attack, columns ``pooled_*``: one ROC over every target's examples) and each attack's scores
    on the first target (with the target's membership, for the histograms).

    Raises:
        AnalysisError: a unit is missing or failed (run ``privstudy attack`` to compute it).
    """
    frames, first, pooled = [], {}, []
    for name in plan.attacks:
        targets = plan.targets(name, max_targets)
        uids = [stage.unit_id(plan.trial_ids, name, t, RMIA_A, SHADOW_SEED) for t in targets]
        units = stage.read_units(store, uids)
        done = units[units["status"] == "done"] if len(units) else units
        if len(done) != len(uids):
            failed = units[units["status"] != "done"] if len(units) else units
            why = (
                f"{len(failed)} failed (first: {failed['error'].iloc[0].strip().splitlines()[-1]})"
                if len(failed)
                else f"{len(uids) - len(units)} not computed"
            )
            raise AnalysisError(
                f"{store}: attack {name} on setting {plan.setting_id}: {why} of {len(uids)} target "
                f"units; run `privstudy attack` on the study to compute them"
            )
        done = done.set_index("trial_id").loc[uids].reset_index()
        frames.append(done[["attack", "target", *stage.METRIC_COLUMNS, "roc_tpr_json"]])
        all_scores, all_truth = [], []
        for uid in uids:
            sc = stage.read_scores(store, uid)
            all_scores.append(sc["score"].to_numpy())
            all_truth.append(sc["is_member"].to_numpy(bool))
        first[name] = (all_scores[0], all_truth[0])
        pm = attack_metrics(np.concatenate(all_scores), np.concatenate(all_truth))
        pooled.append(
            {"attack": name, **{f"pooled_{k}": v for k, v in pm.items() if not k.startswith("ppv")}}
        )
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return table, first, pd.DataFrame(pooled)


def side_rows(study_dir: Path, trial_ids: Sequence[str]) -> pd.DataFrame:
    """The score rows of a setting's models that are not pool examples (externals and canaries), in
    model order: the pool rows (M x N of them) are read only by the attack stage, column by column."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tables = []
    for tid in trial_ids:
        path = results.shard_path(study_dir, "mia_scores", tid)
        source = pq.read_table(path, columns=["source"]).column("source")
        keep = pc.not_equal(source, "pool")
        if pc.any(keep).as_py():  # else the whole shard is pool rows: nothing more to read
            t = pq.read_table(path)
            tables.append(t.filter(keep))
    if not tables:
        return pd.DataFrame(columns=["source", "model_index", "example_id"])
    return pa.concat_tables(tables).to_pandas().sort_values(["model_index", "example_id"], kind="mergesort")


def external_set(
    study_dir: Path, plan: SettingPlan, rows: pd.DataFrame
) -> Optional[tuple[ScoreSet, ScoreSet]]:
    """(pool, externals) scores for the members-vs-externals table, or None without externals."""
    ext = rows[rows["source"] == "external"]
    if not len(ext):
        return None
    m = len(plan.model_ids)
    n_ext = len(ext) // m

    def mat(col: str) -> np.ndarray:
        return ext[col].to_numpy(float).reshape(m, n_ext)

    external = ScoreSet(
        keep=np.zeros((m, n_ext), bool),
        labels=ext["label"].to_numpy()[:n_ext],
        loss=mat("loss"),
        p_true=mat("p_true"),
        entropy=mat("entropy"),
        mentr=mat("mentr"),
        views=mat("lira")[..., None],
    )
    pool = stage.load_setting(
        study_dir, plan.trial_ids, plan.model_ids, plan.config, ("loss", "p_true", "entropy", "mentr")
    )
    return pool, external


def ensure_units(
    study: StudyData,
    attacks: Optional[Sequence[str]] = None,
    max_targets: Optional[int] = None,
    executor: str = "inline",
    workers: Optional[int] = None,
    targets_per_task: Optional[int] = None,
    timeout_min: int = 120,
    out=None,
    err=None,
    show_progress: bool = False,
) -> tuple[list[SettingPlan], int, int]:
    """Compute the attack units of the study that are not stored yet; return the settings and the counts
    (units in all, units computed now). Finished units are never recomputed."""
    import sys

    from privstudy.harness.executors import make_executor
    from privstudy.harness.worker import code_version

    out = out or sys.stdout
    err = err or sys.stderr
    plans = stage.setting_plans(study.manifest, study.records, attacks)
    run = make_executor(executor, workers)
    n_workers = getattr(run, "workers", 1)
    tasks, total, todo = stage.plan_tasks(
        study.name,
        study.study_dir,
        study.attack_store,
        plans,
        code_version(),
        max_targets=max_targets,
        targets_per_task=targets_per_task,
        workers=n_workers,
        rmia_a=RMIA_A,
        seed=SHADOW_SEED,
    )
    if not tasks:
        return plans, total, 0
    run.check(study.attack_store)
    resources = stage.task_resources(tasks, plans, timeout_min)
    failed = []
    for outcome in run.run(tasks, resources, study.attack_store, show_progress, out, err):
        if outcome.status == "failed":
            failed.append(outcome)
    if failed:
        raise AnalysisError(
            f"{len(failed)} of {len(tasks)} attack chunks failed (first: {failed[0].error}); the units "
            f"that finished are stored: fix the cause, then rerun to compute the rest"
        )
    return plans, total, todo


def build(
    study: StudyData,
    out_dir: Path,
    attacks: Optional[Sequence[str]] = None,
    max_targets: Optional[int] = None,
    ensured: Optional[tuple[list[SettingPlan], int, int]] = None,
) -> list[str]:
    """Write the MIA tables and figures from the stored attack units; return the report's Markdown lines.

    Units not stored yet are computed first, here, one chunk after the other (``privstudy attack`` fans
    them out over workers or a cluster first, and passes what ``ensure_units`` returned as ``ensured``);
    stored units are only read.
    """
    plans, total, computed = ensured or ensure_units(study, attacks, max_targets)
    if not plans:
        return ["No finished mia_train trials yet."]
    models_all_rows = study.table(KIND, "mia_model")
    sid = study.records.set_index("trial_id")["setting_id"]
    params = varying_params([json.dumps(p.config, sort_keys=True) for p in plans], ignore=())
    per_target, pooled_rows, model_tables, ext_rows, figures, notes = [], [], [], [], [], []
    audit_models, audit_settings = [], []
    for i, plan in enumerate(plans):
        cfg = plan.config
        models = models_all_rows[models_all_rows["trial_id"].map(sid) == plan.setting_id]
        coords = {p: _show(cfg[p]) for p in params}
        label = ", ".join(f"{k}={v}" for k, v in coords.items()) or "all models"
        model_ids = np.asarray(plan.model_ids)
        if len(model_ids) < cfg["n_models"]:
            notes.append(
                f"- setting {label}: {len(model_ids)} of {cfg['n_models']} models done; attacks use those"
            )
        table, first, pooled = attack_rows(study.attack_store, plan, max_targets)
        for frame, out in ((table, per_target), (pooled, pooled_rows)):
            frame.insert(0, "setting", i)
            for k, v in coords.items():
                frame[k] = v
            out.append(frame)
        model_tables.append(models.assign(setting=i, **coords))
        rows = side_rows(study.study_dir, plan.trial_ids)
        audit = audit_setting(rows, models, cfg, model_ids)
        if audit is not None:
            per_model, summary = audit
            front = pd.DataFrame({"setting": i, **coords}, index=per_model.index)
            audit_models.append(pd.concat([front, per_model], axis=1))
            audit_settings.append({"setting": i, **coords, **summary})
        external = external_set(study.study_dir, plan, rows)
        if external is not None:
            ext_rows.append(_external_rows(*external, i, coords))
        figures += _figures(table, first, None if external is None else external[1], i, label, out_dir)
    per_target_df = _concat(per_target)
    keys = ["setting"] + params + ["attack"]
    results.write_text_atomic(
        out_dir / "tables" / "mia_attack_per_target.csv",
        per_target_df.drop(columns="roc_tpr_json").to_csv(index=False, float_format="%.10g"),
    )
    numeric = risk_summary(per_target_df, _concat(pooled_rows), keys)
    pretty = risk_cells(numeric, keys)
    risk = write_table(
        out_dir,
        "mia_risk",
        numeric,
        pretty,
        "Membership-inference risk per attack (mean [95% CI] over target models; pooled over all targets)",
    )
    models_all = _concat(model_tables)
    models_all = models_all.assign(gap=models_all["train_accuracy"] - models_all["test_accuracy"])
    model_table = _model_table(models_all, params, out_dir)
    utility, pu_figure = _privacy_utility(numeric, models_all, params, out_dir)
    files = risk.files + model_table.files + utility.files
    figures.append(pu_figure)
    if ext_rows:
        ext = pd.concat(ext_rows, ignore_index=True)
        files += write_table(
            out_dir, "mia_external", ext, ext, "Members vs external examples (AUC, mean over targets)"
        ).files
    audit_files, audit_lines = write_audit(out_dir, audit_models, audit_settings)
    files += audit_files or []
    units_line = f"- attack units (setting x attack x target): {total}, of which {computed} computed now"
    n_trials = len(study.done_ids(KIND))
    lines = [
        f"### Membership inference ({n_trials} model trials, {len(plans)} settings)",
        "",
        f"Settings differ in: {', '.join(params) if params else '(one setting)'}. Each model is attacked "
        f"as the target with the others as shadow / reference models; the shadow attack uses at most "
        f"{SHADOW_TARGETS} targets.",
        "",
    ]
    lines += notes + [units_line]
    lines += [f"- [{p.name}](tables/{p.name})" for p in files]
    lines += ["- [mia_attack_per_target.csv](tables/mia_attack_per_target.csv)", ""]
    lines += [f"![{p.stem}](figures/{p.name})" for p in figures] + [""]
    lines += [utility.markdown, model_table.markdown, INTERVALS_NOTE, "", risk.markdown] + audit_lines
    return lines


def risk_summary(per_target: pd.DataFrame, pooled: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per setting and attack: each metric's mean and Student-t interval over targets (clipped to [0, 1]:
    every metric here is a rate or a probability), the fewest non-members of a target, the number of
    targets with a defined PPV, and the pooled metrics."""
    numeric = summarise_columns(per_target, keys, RISK_COLUMNS).rename(columns={"n_trials": "n_targets"})
    for col in RISK_COLUMNS:
        for side in ("ci_low", "ci_high"):
            numeric[f"{col}_{side}"] = numeric[f"{col}_{side}"].clip(0.0, 1.0)
    groups = per_target.groupby(keys, sort=False, dropna=False)
    extra = groups["n_nonmembers"].min().rename("n_nonmembers_min").to_frame()
    for p in FPR_POINTS:
        col = f"ppv_at_fpr_{p * 100:g}pct"
        extra[f"{col}_n"] = groups[col].count()
    numeric = numeric.merge(extra.reset_index(), on=keys, how="left")
    pooled_cols = [c for c in pooled.columns if c.startswith("pooled_")]
    numeric = numeric.merge(pooled[keys + pooled_cols], on=keys, how="left")
    order = {a: j for j, a in enumerate(per_target["attack"].unique())}
    return numeric.iloc[np.lexsort((numeric["attack"].map(order), numeric["setting"]))].reset_index(drop=True)


def _fpr_of(col: str) -> float | None:
    """The FPR point of a ``..._at_fpr_<x>pct`` column, else None."""
    if "_at_fpr_" not in col:
        return None
    return float(col.rsplit("_at_fpr_", 1)[1].removesuffix("pct")) / 100


def risk_cells(numeric: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The Markdown cells of the risk table: intervals, 'unresolved' low-FPR rates, PPV target counts."""
    pretty = numeric[keys + ["n_targets"]].copy()
    for col, name in SHOWN:
        cells = intervals(numeric, col)
        fpr = _fpr_of(col)
        if col.startswith("tpr_"):
            cells = [
                c if resolves(int(n), fpr) else UNRESOLVED for c, n in zip(cells, numeric["n_nonmembers_min"])
            ]
        elif col.startswith("ppv_"):
            cells = [
                c if k == n else f"{c} ({k}/{n})"
                for c, k, n in zip(cells, numeric[f"{col}_n"], numeric["n_targets"])
            ]
        pretty[name] = cells
    for col, name in POOLED_SHOWN:
        if col not in numeric:
            continue
        fpr = _fpr_of(col)
        pretty[name] = [
            UNRESOLVED if fpr is not None and not resolves(int(n), fpr) else f"{v:.3f}"
            for v, n in zip(numeric[col], numeric["pooled_n_nonmembers"])
        ]
    return pretty


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """pd.concat of frames some of whose columns are all NaN (e.g. epsilon without DP), quietly."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return pd.concat(frames, ignore_index=True)


def _show(v):
    return json.dumps(v) if isinstance(v, (list, dict)) else v


def _count_column(params: list[str]) -> str:
    """The name of the models-per-setting count: n_models, or models_done where settings differ in the
    n_models parameter (a column of that name is already a setting coordinate)."""
    return "models_done" if "n_models" in params else "n_models"


def _model_table(models: pd.DataFrame, params: list[str], out_dir: Path) -> Written:
    keys = ["setting"] + params
    numeric = summarise_columns(
        models, keys, ["train_accuracy", "test_accuracy", "gap", "epochs_run", "train_s"]
    ).rename(columns={"n_trials": _count_column(params)})
    pretty = numeric[keys + [_count_column(params)]].copy()
    for col, name in (
        ("train_accuracy", "train acc."),
        ("test_accuracy", "test acc."),
        ("gap", "gap"),
        ("train_s", "train s"),
    ):
        pretty[name] = intervals(numeric, col)
    return write_table(
        out_dir, "mia_models", numeric, pretty, "Target / shadow models: utility (mean [95% CI] over models)"
    )


EPS = ("eps_rdp_epoch", "eps_rdp_poisson", "eps_pld_epoch", "eps_pld_poisson")  # DP-SGD epsilon columns
PU_ATTACKS = ("loss", "lira_online", "lira_offline")


def _privacy_utility(risk: pd.DataFrame, models: pd.DataFrame, params: list[str], out_dir: Path):
    """Per setting: utility, the generalisation gap, the threshold and LiRA attacks' AUC and TPR at low
    FPR, DP-SGD's epsilon, training time (mean [95% CI] over models / target models)."""
    keys = ["setting"] + params
    cols = [c for c in ("train_accuracy", "test_accuracy", "gap", "train_s", *EPS) if c in models]
    numeric = summarise_columns(models, keys, cols).rename(columns={"n_trials": _count_column(params)})
    for attack in PU_ATTACKS:
        sub = risk[risk["attack"] == attack]
        if not len(sub):
            continue
        cols = {
            f"{m}_{k}": f"{attack}_{m}_{k}"
            for m in ("auc", "tpr_at_fpr_0.1pct", "tpr_at_fpr_1pct")
            for k in ("mean", "ci_low", "ci_high")
        }
        cols["n_nonmembers_min"] = f"{attack}_n_nonmembers_min"
        numeric = numeric.merge(sub[keys + list(cols)].rename(columns=cols), on=keys, how="left")
    pretty = numeric[keys + [_count_column(params)]].copy()
    shown = [("test_accuracy", "test acc."), ("gap", "gap")]
    shown += [
        (f"{a}_{m}", f"{a} {label}")
        for a in PU_ATTACKS
        for m, label in (("auc", "AUC"), ("tpr_at_fpr_0.1pct", "TPR@0.1%"), ("tpr_at_fpr_1pct", "TPR@1%"))
        if f"{a}_{m}_mean" in numeric
    ]
    for col, label in shown:
        cells = intervals(numeric, col)
        fpr = _fpr_of(col)
        if fpr is not None:
            attack = col.split("_tpr_at_fpr_")[0]
            # NaN: the attack did not run on this setting (e.g. online LiRA with fewer than 4 models).
            cells = [
                "-" if not np.isfinite(n) else c if resolves(int(n), fpr) else UNRESOLVED
                for c, n in zip(cells, numeric[f"{attack}_n_nonmembers_min"])
            ]
        pretty[label] = cells
    nan = pd.Series(np.nan, index=numeric.index)
    for accountant in ("rdp", "pld"):
        eps_a = numeric.get(f"eps_{accountant}_epoch_mean", nan)
        eps_b = numeric.get(f"eps_{accountant}_poisson_mean", nan)
        pretty[f"epsilon {accountant.upper()} (epoch / Poisson)"] = [
            f"{a:.2f} / {b:.2f}" if not np.isnan(a) else "-" for a, b in zip(eps_a, eps_b)
        ]
    pretty["train s"] = [f"{v:.1f}" for v in numeric["train_s_mean"]]
    written = write_table(
        out_dir,
        "privacy_utility",
        numeric,
        pretty,
        "Privacy-utility: utility, membership-inference risk and epsilon per setting "
        "(mean [95% CI] over models)",
    )
    return written, _privacy_utility_figure(numeric, params, out_dir)


def _privacy_utility_figure(numeric: pd.DataFrame, params: list[str], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attack = next(
        (a for a in ("lira_online", "lira_offline", "loss") if f"{a}_tpr_at_fpr_1pct_mean" in numeric), None
    )
    fig, ax = plt.subplots(figsize=(7, 5))
    labels: list = []
    if attack is not None:
        x, xerr = interval_bars(numeric, f"{attack}_tpr_at_fpr_1pct")
        y, yerr = interval_bars(numeric, "test_accuracy")
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", ms=4, capsize=2)
        # Label each point with what sets it apart: the parameters that differ from their most common value.
        modes = {p: numeric[p].astype(str).mode().iloc[0] for p in params}
        for i, r in enumerate(numeric.to_dict("records")):
            label = ", ".join(f"{p}={r[p]}" for p in params if str(r[p]) != modes[p]) or "baseline"
            eps = r.get("eps_pld_epoch_mean")
            if eps is not None and not np.isnan(eps):  # noqa: SIM102
                label = f"eps(PLD)={eps:.2f}: {label}"
            labels.append((x[i], y[i], label[:70]))
        ax.axvline(0.01, color="k", ls="--", lw=0.8, label="chance (TPR = FPR)")
        ax.set_xlabel(f"{attack}: TPR at 1% FPR")
        ax.legend(fontsize=7)
    ax.set_ylabel("test accuracy")
    ax.set_title("privacy-utility (mean over models)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()  # before the labels, which may run past the axes and must not shrink them
    for lx, ly, text in labels:
        ax.annotate(
            text, (lx, ly), fontsize=6, xytext=(4, 3), textcoords="offset points", annotation_clip=False
        )
    path = save_figure(fig, out_dir, "privacy_utility")
    return path


def _external_rows(data: ScoreSet, ext: ScoreSet, setting: int, coords: dict) -> pd.DataFrame:
    rows = []
    for name in THRESHOLD_ATTACKS:
        m_vs_e, n_vs_e = [], []
        for t in range(data.n_models):
            own, ex = run_attack(name, data, t), run_attack(name, ext, t)
            mem, non = own[data.keep[t]], own[~data.keep[t]]
            m_vs_e.append(
                attack_metrics(np.r_[mem, ex], np.r_[np.ones(len(mem), bool), np.zeros(len(ex), bool)])["auc"]
            )
            n_vs_e.append(
                attack_metrics(np.r_[non, ex], np.r_[np.ones(len(non), bool), np.zeros(len(ex), bool)])["auc"]
            )
        rows.append(
            {
                "setting": setting,
                **coords,
                "attack": name,
                "auc_members_vs_external": float(np.mean(m_vs_e)),
                "auc_nonmembers_vs_external": float(np.mean(n_vs_e)),
            }
        )
    return pd.DataFrame(rows)


def _figures(
    table: pd.DataFrame,
    first: dict,
    external: Optional[ScoreSet],
    setting: int,
    label: str,
    out_dir: Path,
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(5.5, 5))
    colours = plt.get_cmap("tab20").colors
    for i, (name, g) in enumerate(table.groupby("attack", sort=False)):
        tpr = np.mean([json.loads(s) for s in g["roc_tpr_json"]], axis=0)
        auc = g["auc"].mean()
        ax.loglog(
            FPR_GRID,
            np.maximum(tpr, 1e-5),
            color=colours[(2 * i) % 20 + (i >= 10)],
            ls="-" if i < 8 else "--",
            label=f"{name} (AUC {auc:.3f})",
        )
    ax.loglog(FPR_GRID, FPR_GRID, "k--", lw=0.8, label="chance")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(1e-4, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (mean over targets)")
    ax.set_title(f"ROC, {label}", fontsize=9)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path = save_figure(fig, out_dir, f"mia_roc_setting{setting}")
    paths.append(path)

    shown = [a for a in ("loss", "lira_online", "lira_offline") if a in first][:2]
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 3.8), squeeze=False)
    for ax, name in zip(axes[0], shown):
        s, member = first[name]
        finite = np.isfinite(s)
        lo, hi = np.percentile(s[finite], [0.5, 99.5])
        bins = np.linspace(lo, hi, 60)
        ax.hist(np.clip(s[member], lo, hi), bins=bins, alpha=0.6, density=True, label="members")
        ax.hist(np.clip(s[~member], lo, hi), bins=bins, alpha=0.6, density=True, label="non-members")
        if external is not None and name == "loss":
            ax.hist(np.clip(-external.loss[0], lo, hi), bins=bins, alpha=0.4, density=True, label="external")
        ax.set_title(f"{name} score, target model 0", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = save_figure(fig, out_dir, f"mia_scores_setting{setting}")
    paths.append(path)
    return paths
