"""The Slurm executor's pieces that need no cluster: packing, sbatch flags, executor choice, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, run_cli, small_lp_spec
from privstudy.harness.slurm import chunks_for, sbatch_parameters, sbatch_script
from privstudy.harness.spec import Resources
from privstudy.harness.worker import TrialTask

GOLDEN = Path(__file__).parent / "golden" / "sbatch_gpu_study.txt"
GPU = Resources(
    cpus=8,
    mem_gb=32,
    gpus=1,
    timeout_min=240,
    partition="gpu",
    qos="normal",
    account="privacy",
    constraint="a100|v100",
    sbatch=("--exclusive", "--mail-type=END"),
    trials_per_task=4,
    array_parallelism=32,
)


def test_sbatch_script_of_a_gpu_study_matches_the_golden_file():
    text = sbatch_script(GPU, "privstudy-mia_cifar10-mia_train", "/RESULTS/mia_cifar10/slurm/RUN", n_tasks=16)
    assert text == GOLDEN.read_text(), f"the sbatch script changed; if on purpose, review and update {GOLDEN}"
    for flag in (
        "--gpus-per-node=1",
        "--cpus-per-task=8",
        "--mem=32GB",
        "--time=240",
        "--partition=gpu",
        "--qos=normal",
        "--account=privacy",
        "--constraint='a100|v100'",
        "--exclusive",
        "--mail-type=END",
        "--array=0-15%16",
        "--signal=USR2@90",
    ):
        assert f"#SBATCH {flag}\n" in text, flag


def test_extra_sbatch_flags_become_submitit_parameters():
    p = sbatch_parameters(GPU, "x")
    assert p["slurm_additional_parameters"] == {"exclusive": True, "mail-type": "END"}
    assert p["gpus_per_node"] == 1 and p["slurm_array_parallelism"] == 32
    assert "gpus_per_node" not in sbatch_parameters(Resources(), "x")


@pytest.mark.parametrize(
    "res, size",
    [
        (Resources(), 1),
        (Resources(trials_per_task=5), 5),
        (Resources(timeout_min=60, trial_min=10), 4),  # 80% of 60 min / 10 min per trial
        (Resources(timeout_min=5, trial_min=10), 1),
    ],
)
def test_trials_per_array_task(res, size):
    assert res.chunk_size() == size


def test_chunks_group_by_resources_and_keep_every_trial_once():
    tasks = [TrialTask("s", "/tmp/s", "linprog", {}, f"t{i}", "v") for i in range(7)]
    res = {f"t{i}": Resources(trials_per_task=3) if i < 5 else Resources(gpus=1) for i in range(7)}
    groups = chunks_for(tasks, res)
    assert [[len(c) for c in chunks] for _, chunks in groups] == [[3, 2], [1, 1]]
    assert sorted(t.trial_id for _, chunks in groups for c in chunks for t in c) == sorted(res)


def test_bad_sbatch_flag_is_a_one_line_spec_error(write_spec, capsys, tmp_path):
    spec = small_lp_spec()
    spec["resources"] = {"sbatch": ["exclusive"]}
    assert run_cli("sweep", str(write_spec(spec)), "--results", str(tmp_path / "r")) == 2
    err = capsys.readouterr().err.strip()
    assert "resources.sbatch[0]" in err and "'--name=value'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_auto_falls_back_to_the_local_pool_without_slurm(write_spec, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    spec = small_lp_spec(seeds=1)
    assert (
        run_cli(
            "sweep",
            str(write_spec(spec)),
            "--executor",
            "auto",
            "--results",
            str(tmp_path / "r"),
            "--no-progress",
            "--workers",
            "1",
        )
        == 0
    )
    assert "executor auto: local (sbatch is not on PATH)" in capsys.readouterr().out


def test_slurm_executor_without_slurm_is_refused_before_writing(write_spec, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert (
        run_cli(
            "sweep", str(write_spec(small_lp_spec())), "--executor", "slurm", "--results", str(tmp_path / "r")
        )
        == 2
    )
    assert "Slurm is not reachable here (sbatch is not on PATH)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_no_wait_needs_the_slurm_executor(write_spec, capsys, tmp_path):
    assert run_cli("sweep", str(write_spec(small_lp_spec())), "--no-wait", "--results", str(tmp_path)) == 2
    assert "--no-wait needs the slurm executor" in capsys.readouterr().err


def test_dry_run_shows_the_array_packing(capsys, tmp_path):
    assert (
        run_cli(
            "sweep",
            str(ROOT / "jobs" / "ci_slurm.yaml"),
            "--executor",
            "slurm",
            "--dry-run",
            "--results",
            str(tmp_path),
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "slurm: 4 array tasks of up to 3 linprog trials" in out
    assert not any(tmp_path.iterdir())
