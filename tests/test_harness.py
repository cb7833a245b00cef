"""The harness end to end: sweeps, resume, failures, retries, status, atomic shards, conformance."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import run_cli, small_lp_spec
from privstudy.harness import results
from privstudy.harness.config import from_mapping, trial_id
from privstudy.harness.registry import get_kind, kind_names
from privstudy.harness.spec import load_study


def _records(study_dir):
    return results.read_records(study_dir).set_index("trial_id")


def test_sweep_then_rerun_skips_finished_trials(tmp_path, write_spec, capsys):
    spec = write_spec(small_lp_spec(seeds=2))
    root = tmp_path / "results"
    assert run_cli("sweep", str(spec), "--results", str(root), "--executor", "inline", "--no-progress") == 0
    study = root / "lp"
    first = _records(study)
    assert len(first) == 4 and (first["status"] == "done").all()
    out = capsys.readouterr().out
    assert "to run: 4; already done: 0" in out
    assert run_cli("sweep", str(spec), "--results", str(root), "--executor", "inline", "--no-progress") == 0
    assert "to run: 0; already done: 4" in capsys.readouterr().out
    pd.testing.assert_frame_equal(first, _records(study))  # not rewritten: same started_at
    assert not list(study.rglob("*.tmp"))


def test_rows_carry_provenance_and_explicit_schema(tmp_path, write_spec):
    root = tmp_path / "r"
    run_cli(
        "sweep",
        str(write_spec(small_lp_spec(seeds=1))),
        "--results",
        str(root),
        "--executor",
        "inline",
        "--no-progress",
    )
    study = root / "lp"
    kind = get_kind("linprog")
    for table, cols in kind.tables.items():
        files = sorted((study / results.SHARDS_DIR / table).glob("*.parquet"))
        assert len(files) == 2
        schema = pq.read_schema(files[0])
        assert schema.remove_metadata().equals(results.table_schema(cols))
        t = pq.read_table(files[0]).to_pandas()
        assert (t["study"] == "lp").all() and (t["status"] == "done").all()
        assert (t["schema_version"] == results.SCHEMA_VERSION).all()
        cfg = json.loads(t["config_json"].iloc[0])
        assert t["trial_id"].iloc[0] == trial_id("linprog", from_mapping(kind.config_cls, cfg))
        assert t["code_version"].iloc[0].startswith("0.")
        assert t["started_at"].dt.tz is not None and (t["duration_s"] > 0).all()


def test_failed_trials_are_recorded_and_retried(tmp_path, write_spec, test_kinds, capsys):
    spec = write_spec({"name": "e", "kind": "echo", "fixed": {"fail_seeds": [1, 3]}, "seeds": 5})
    root = tmp_path / "r"
    assert run_cli("sweep", str(spec), "--results", str(root), "--executor", "inline", "--no-progress") == 1
    captured = capsys.readouterr()
    assert "seed 1 fails on purpose" in captured.err and "--retry-failed" in captured.err
    rec = _records(root / "e")
    assert sorted(rec["status"]) == ["done", "done", "done", "failed", "failed"]
    failed = rec[rec["status"] == "failed"]
    assert failed["error"].str.contains("Traceback").all()
    assert not list((root / "e" / results.SHARDS_DIR / "echo").glob(f"{failed.index[0]}*"))

    assert run_cli("status", str(root / "e"), "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["done"], status["failed"], status["pending"]) == (3, 2, 0)
    assert {f["error"] for f in status["failures"]} == {
        "RuntimeError: seed 1 fails on purpose",
        "RuntimeError: seed 3 fails on purpose",
    }
    # A plain rerun leaves failures alone; --retry-failed reruns exactly those.
    assert run_cli("sweep", str(spec), "--results", str(root), "--executor", "inline", "--no-progress") == 1
    assert "to run: 0; already done: 3; failed before (not retried): 2" in capsys.readouterr().out
    fixed = write_spec({"name": "e", "kind": "echo", "fixed": {"fail_seeds": [1, 3]}, "seeds": 5})
    before = _records(root / "e")
    # Same configs (same trial ids), so --retry-failed runs the two failures again: they fail again.
    assert (
        run_cli(
            "sweep",
            str(fixed),
            "--results",
            str(root),
            "--executor",
            "inline",
            "--no-progress",
            "--retry-failed",
        )
        == 1
    )
    after = _records(root / "e")
    changed = [t for t in after.index if after.loc[t, "started_at"] != before.loc[t, "started_at"]]
    assert sorted(changed) == sorted(failed.index)


def test_status_counts_pending_trials_of_a_partial_study(tmp_path, write_spec, capsys):
    spec = small_lp_spec(seeds=3)
    root = tmp_path / "r"
    study = load_study(write_spec(spec))
    from privstudy.harness.sweep import run_sweep

    run_sweep(load_study(write_spec(small_lp_spec(seeds=1))), root, "inline", None, False, False, False)
    from privstudy.harness.sweep import write_manifest

    write_manifest(study, root / "lp", extend=True)  # the same study with more seeds
    capsys.readouterr()
    assert run_cli("status", str(root / "lp"), "--json") == 0
    assert json.loads(capsys.readouterr().out) == {
        "done": 2,
        "failed": 0,
        "pending": 4,
        "failures": [],
        "damaged": [],
        "slurm_tasks": {},
    }
    assert run_cli("status", str(root / "lp")) == 0
    assert "6 trials: 2 done, 0 failed, 4 pending" in capsys.readouterr().out


def test_dry_run_writes_nothing(tmp_path, write_spec, capsys):
    assert (
        run_cli("sweep", str(write_spec(small_lp_spec())), "--results", str(tmp_path / "r"), "--dry-run") == 0
    )
    out = capsys.readouterr().out
    assert "study lp: 6 trials (linprog: 6)" in out and "dry run: nothing written" in out
    assert not (tmp_path / "r").exists()


def test_smoke_variant_goes_to_its_own_folder(tmp_path, write_spec):
    spec = small_lp_spec(seeds=5)
    spec["smoke"] = {"seeds": 1, "fixed": {"test_size": 2000}}
    study = load_study(write_spec(spec), smoke=True)
    assert study.name == "lp_smoke" and len(study.trials) == 2
    assert all(t.config.test_size == 2000 for t in study.trials)


def test_trial_ids_are_stable_and_config_sensitive():
    cls = get_kind("linprog").config_cls
    a = from_mapping(cls, {"seed": 1, "percent": 5})
    b = from_mapping(cls, {"percent": 5.0, "seed": 1})
    assert trial_id("linprog", a) == trial_id("linprog", b)
    # A pinned value: ids must not drift between releases, or finished trials would rerun.
    assert trial_id("linprog", cls()) == "c4d31e409eadb6ca"
    assert trial_id("linprog", from_mapping(cls, {"seed": 2})) != trial_id("linprog", a)


@pytest.mark.parametrize("kind_name", kind_names())
def test_conformance_of_every_registered_kind(kind_name, tmp_path):
    """Rows validate against the schema, the trial id is stable, the same seed gives the same numbers."""
    from privstudy.harness.worker import TrialTask, execute_trial

    kind = get_kind(kind_name)
    cfg = from_mapping(kind.config_cls, {"seed": 3, **kind.smoke})
    again = from_mapping(kind.config_cls, cfg.to_dict())
    assert trial_id(kind_name, cfg) == trial_id(kind_name, again)
    out1, out2 = kind.run(cfg), kind.run(again)
    assert set(out1) <= set(kind.tables)
    for name in out1:  # same config, same rows (wall-clock columns aside)
        timing = [c for c in out1[name].columns if c.endswith("_s")]
        pd.testing.assert_frame_equal(out1[name].drop(columns=timing), out2[name].drop(columns=timing))
    task = TrialTask("conf", str(tmp_path), kind_name, cfg.to_dict(), trial_id(kind_name, cfg), "test")
    assert execute_trial(task).status == "done"
    for name in out1:
        table = pq.read_table(results.shard_path(tmp_path, name, task.trial_id))
        assert table.schema.remove_metadata().equals(results.table_schema(kind.tables[name]))
        assert table.num_rows == len(out1[name])
    assert execute_trial(task).status == "skipped"


def test_plugin_kinds_env_is_validated(monkeypatch):
    from privstudy.harness import registry

    monkeypatch.setenv("PRIVSTUDY_KINDS", "oops")
    with pytest.raises(ValueError, match="name=module"):
        registry.kind_names()


def test_analysis_never_imports_tensorflow(tmp_path, write_spec):
    import subprocess
    import sys

    root = tmp_path / "r"
    run_cli(
        "sweep",
        str(write_spec(small_lp_spec(seeds=1))),
        "--results",
        str(root),
        "--executor",
        "inline",
        "--no-progress",
    )
    code = (
        "import sys, runpy; sys.argv=['aggregate.py', %r]; "
        "from privstudy.analysis.aggregate import main; rc = main([%r]); "
        "assert 'tensorflow' not in sys.modules, 'analysis imported tensorflow'; "
        "assert 'privstudy.linprog_runner' not in sys.modules; sys.exit(rc)"
    ) % (str(root / "lp"), str(root / "lp"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_published_linprog_command_line_runs_through_the_harness(tmp_path, capsys):
    from privstudy.linprog_runner import main

    args = [
        "--exp_name",
        "lp_flags",
        "--train_size",
        "5",
        "--test_size",
        "2000",
        "--grid_size",
        "60",
        "--granularity",
        "1",
        "--percent",
        "5",
        "--num_trials",
        "2",
        "--same_class",
        "True",
        "--num_dimensions",
        "2",
        "--ideal_weights",
        "1",
        "-1",
        "--ideal_bias",
        "0",
        "--use_multiprocessing",
        "false",
        "--objective",
        "both",
        "--results",
        str(tmp_path),
    ]
    assert main(args) == 0
    study = tmp_path / "lp_flags"
    rec = results.read_records(study)
    assert len(rec) == 4 and (rec["status"] == "done").all()
    cfgs = [json.loads(c) for c in rec["config_json"]]
    assert {c["objective"] for c in cfgs} == {"slack", "max_margin"}
    assert all(c["same_class"] and c["train_size"] == 5 for c in cfgs)
    # The equivalent spec is kept, and reruns through `privstudy sweep` as a no-op.
    capsys.readouterr()
    assert run_cli("sweep", str(study / "spec.yaml"), "--results", str(tmp_path), "--executor", "inline") == 0
    assert "to run: 0; already done: 4" in capsys.readouterr().out


def test_light_trials_never_import_tensorflow(tmp_path, write_spec):
    import subprocess
    import sys

    spec = write_spec(small_lp_spec(seeds=1))
    code = (
        "import sys; from privstudy.cli import main; "
        f"rc = main(['sweep', {str(spec)!r}, '--results', {str(tmp_path / 'r')!r}, '--executor', 'inline', "
        "'--no-progress']); assert rc == 0, rc; "
        "assert 'tensorflow' not in sys.modules, 'a linprog sweep imported tensorflow'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
