"""The confidence-vs-similarity tables shared by the LP and the image pipelines: a summary and a binned curve.

Both kinds write per-trial metrics in long form, one model row per trial and one row per confidence bin;
this module turns them into a summary table (mean [95% CI] over the trials of each setting), a binned
curve table and the report's lines. Each kind's module says which metrics and columns it shows.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional, Sequence

import pandas as pd

from privstudy.analysis.common import (
    StudyData,
    add_setting_columns,
    intervals,
    summarise_columns,
    varying_params,
    write_table,
)

ALL = "_all"  # the group key of a study with a single setting (never written)


@dataclasses.dataclass(frozen=True)
class SimilarityTables:
    """What one kind's confidence-similarity tables are made of."""

    kind: str  # the trial kind
    prefix: (
        str  # table names: <prefix>_metrics, _model, _bins in; <prefix>_confidence_vs_nn, _binned_curve out
    )
    extra_keys: Sequence[str]  # columns of the kind's tables that split a trial's rows (e.g. confidence_type)
    summary: Sequence[tuple[str, Optional[str]]]  # (metric, label shown; None: CSV only)
    model_columns: Sequence[tuple[str, str]]  # (model-row column, label shown) summarised per setting
    model_hidden: Sequence[str]  # further model-row columns summarised into the CSV only
    curve: Sequence[tuple[str, str]]  # (bin-row column, output prefix)
    curve_shown: Sequence[
        tuple[str, str, Callable[[pd.DataFrame, str], list[str]]]
    ]  # (prefix, label, format)
    summary_title: str
    curve_title: str
    heading: str  # the report's section heading, with {n} for the number of trials
    explanation: str  # what the distance and the sets are
    figure: Callable[
        [pd.DataFrame, list[str], list[str], Path], Path
    ]  # (curve, params, keys, out dir) -> path


def scientific(frame: pd.DataFrame, prefix: str) -> list[str]:
    """Each row's ``<prefix>_mean`` in scientific notation (for tiny shares)."""
    return [f"{v:.2e}" for v in frame[f"{prefix}_mean"]]


def build_similarity(spec: SimilarityTables, study: StudyData, out_dir: Path) -> list[str]:
    """Write the summary and binned-curve tables and the figure; return the report's Markdown lines."""
    metrics = study.table(spec.kind, f"{spec.prefix}_metrics")
    if not len(metrics):
        return [f"No finished {spec.kind} trials yet."]
    params = varying_params(metrics["config_json"].unique())
    metrics = add_setting_columns(metrics, params).assign(**{ALL: "all"})
    model = add_setting_columns(study.table(spec.kind, f"{spec.prefix}_model"), params).assign(**{ALL: "all"})
    bins = add_setting_columns(study.table(spec.kind, f"{spec.prefix}_bins"), params).assign(**{ALL: "all"})
    # The constant ALL key makes every grouping and merge work alike with or without varying parameters.
    keys = [ALL] + params + list(spec.extra_keys)

    # Summary: one row per setting (and extra key), each metric as mean and interval over trials.
    wide = metrics.pivot_table(index=["trial_id"] + keys, columns="metric", values="value").reset_index()
    numeric = summarise_columns(wide, keys, [metric for metric, _ in spec.summary])
    model_cols = [c for c, _ in spec.model_columns] + list(spec.model_hidden)
    per_setting = summarise_columns(model, [ALL] + params, model_cols).drop(columns="n_trials")
    numeric = numeric.merge(per_setting, on=[ALL] + params)
    numeric = numeric.sort_values(keys).reset_index(drop=True)
    pretty = numeric[keys + ["n_trials"]].copy()
    for col, label in list(spec.model_columns) + [(m, label) for m, label in spec.summary if label]:
        pretty[label] = intervals(numeric, col)
    summary = write_table(
        out_dir,
        f"{spec.prefix}_confidence_vs_nn",
        numeric.drop(columns=[ALL], errors="ignore"),
        pretty.drop(columns=[ALL], errors="ignore"),
        spec.summary_title,
    )

    # Binned curve: confidence bin -> mean distance to the nearest training point, over trials.
    curve = summarise_columns(bins, keys + ["bin"], list(spec.curve))
    curve = curve.sort_values(keys + ["bin"]).reset_index(drop=True)
    pretty_curve = curve[keys + ["bin", "n_trials"]].copy()
    for prefix, label, fmt in spec.curve_shown:
        pretty_curve[label] = fmt(curve, prefix)
    binned = write_table(
        out_dir,
        f"{spec.prefix}_binned_curve",
        curve.drop(columns=[ALL], errors="ignore"),
        pretty_curve.drop(columns=[ALL], errors="ignore"),
        spec.curve_title,
    )
    figure = spec.figure(curve, params, keys, out_dir)

    lines = [
        spec.heading.format(n=len(study.done_ids(spec.kind))),
        "",
        f"Settings differ in: {', '.join(params) if params else '(one setting)'}.",
        "",
        spec.explanation,
        "",
    ]
    lines += [f"- [{p.name}](tables/{p.name})" for p in summary.files + binned.files]
    lines += ["", f"![binned curve](figures/{figure.name})", "", summary.markdown]
    return lines


def setting_label(keys: Sequence[str], key) -> str:
    """``k=v, ...`` of a group key, without the single-setting key; "all trials" when nothing is left."""
    key = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{k}={v}" for k, v in zip(keys, key) if k != ALL) or "all trials"
