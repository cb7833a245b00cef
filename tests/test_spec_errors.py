"""Every bad input is rejected with a one-line message naming file, key and fix; exit 2; nothing written."""

import pytest

from conftest import run_cli, small_lp_spec


def _assert_rejected(capsys, tmp_path, spec_path, *fragments, extra=()):
    results = tmp_path / "results"
    code = run_cli("sweep", str(spec_path), "--results", str(results), "--executor", "inline", *extra)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    assert not results.exists(), "nothing may be written for a rejected spec"
    return err


@pytest.mark.parametrize(
    "mutate, fragments",
    [
        (
            lambda s: s.update(kind="linprg"),
            ["kind", "unknown kind 'linprg'", "valid: cnn_similarity, ", "linprog, mia_train"],
        ),
        (lambda s: s["fixed"].update(tran_size=3), ["fixed.tran_size", "unknown parameter", "train_size"]),
        (lambda s: s["grid"].update(objectve=["slack"]), ["grid.objectve", "unknown parameter"]),
        (lambda s: s["fixed"].update(train_size="ten"), ["fixed.train_size", "expected int", "'ten'"]),
        (lambda s: s["fixed"].update(test_size="1e6"), ["fixed.test_size", "without exponent"]),
        (lambda s: s["fixed"].update(same_class="yes"), ["fixed.same_class", "expected true or false"]),
        (
            lambda s: s["grid"].update(objective=["slack", "hinge"]),
            ["grid.objective", "'hinge'", "valid choices: slack, max_margin"],
        ),
        (lambda s: s["fixed"].update(train_size=100000), ["fixed.train_size", "below the 6561 query points"]),
        (
            lambda s: s["fixed"].update(ideal_weights=[1.0, 2.0, 3.0]),
            ["fixed.ideal_weights", "needs 2 entries"],
        ),
        (lambda s: s.update(seeds=0), ["seeds", "must be >= 1"]),
        (lambda s: s.update(seeds=[1, 1]), ["seeds", "distinct"]),
        (lambda s: s["fixed"].update(seed=3), ["fixed.seed", "seeds:"]),
        (lambda s: s["fixed"].update(objective="slack"), ["grid.objective", "also in `fixed`"]),
        (lambda s: s["grid"].update(same_class=[]), ["grid.same_class", "non-empty list"]),
        (lambda s: s.update(resources={"cpus": 0}), ["resources.cpus", "must be >= 1"]),
        (lambda s: s.update(resources={"mem": 4}), ["resources.mem", "unknown parameter", "mem_gb"]),
        (lambda s: s.update(name="my study"), ["name", "folder-safe"]),
        (lambda s: s.update(colour="red"), ["colour", "unknown key", "experiments"]),
        (lambda s: s.update(smoke={"seed": 2}), ["smoke.seed", "unknown key", "seeds"]),
    ],
)
def test_bad_specs(capsys, tmp_path, write_spec, mutate, fragments):
    spec = small_lp_spec()
    mutate(spec)
    path = write_spec(spec)
    err = _assert_rejected(capsys, tmp_path, path, *fragments)
    assert err.startswith(f"error: {path}:")


def test_grid_point_error_names_the_grid_key(capsys, tmp_path, write_spec):
    spec = small_lp_spec()
    del spec["fixed"]["train_size"]
    spec["grid"]["train_size"] = [4, 100000]
    _assert_rejected(capsys, tmp_path, write_spec(spec), "grid.train_size", "below the 6561 query points")


def test_missing_file_and_bad_yaml(capsys, tmp_path):
    _assert_rejected(capsys, tmp_path, tmp_path / "nope.yaml", "no such spec file", "jobs/")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nkind: linprog\nfixed: {train_size: 3\n")
    _assert_rejected(capsys, tmp_path, bad, "not valid YAML", "line")


def test_duplicate_trials_are_rejected(capsys, tmp_path, write_spec):
    spec = {"name": "dup", "experiments": [small_lp_spec(), small_lp_spec()]}
    for e in spec["experiments"]:
        del e["name"]
    _assert_rejected(capsys, tmp_path, write_spec(spec), "experiments[1]", "listed twice")


def test_smoke_errors_are_caught_only_with_smoke(capsys, tmp_path, write_spec):
    spec = small_lp_spec()
    spec["smoke"] = {"fixed": {"train_size": -1}}
    path = write_spec(spec)
    _assert_rejected(capsys, tmp_path, path, "fixed.train_size", extra=("--smoke",))
    assert run_cli("sweep", str(path), "--dry-run", "--results", str(tmp_path / "r")) == 0
    assert not (tmp_path / "r").exists()


def test_bad_workers_flag(capsys, tmp_path, write_spec):
    _assert_rejected(capsys, tmp_path, write_spec(small_lp_spec()), "--workers", extra=("--workers", "0"))


def test_status_and_aggregate_of_a_folder_that_is_no_study(capsys, tmp_path):
    assert run_cli("status", str(tmp_path)) == 2
    assert "not a study folder" in capsys.readouterr().err
    from privstudy.analysis.aggregate import main

    assert main([str(tmp_path)]) == 2
    assert "no study folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_unknown_executor_is_refused_by_the_cli(capsys, tmp_path, write_spec):
    with pytest.raises(SystemExit) as exc:
        run_cli("sweep", str(write_spec(small_lp_spec())), "--executor", "cloud")
    assert exc.value.code == 2
    assert "invalid choice: 'cloud'" in capsys.readouterr().err


def test_linprog_runner_rejects_bad_flags_without_writing(capsys, tmp_path):
    from privstudy.linprog_runner import main

    code = main(["--exp_name", "x", "--train_size", "1", "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "train_size" in err and "at least 2" in err
    assert not (tmp_path / "r").exists()


def test_a_closed_output_pipe_stops_quietly(tmp_path, write_spec):
    """`privstudy sweep --dry-run | head`: the reader is gone before the listing ends; the command
    stops with the shell's SIGPIPE status and no traceback, and writes nothing."""
    import os
    import subprocess
    import sys

    spec = write_spec(small_lp_spec(seeds=50))
    read, write = os.pipe()
    os.close(read)  # every write to the pipe now fails with EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "privstudy", "sweep", str(spec), "--dry-run", "--results", str(tmp_path)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert not any(tmp_path.rglob("*.parquet"))
