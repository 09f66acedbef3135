"""`breastus sweep --slurm` against a real Slurm: submit, wait, collect, re-submit, resume.

The cluster is not started here: `.ci/run` runs scripts/slurm-local.sh (a one-node Slurm on
127.0.0.1) before the tests. The tests that need it skip, with the reason, when `sbatch` is
missing or `sinfo` cannot reach a controller; the --dry-run test runs everywhere (a stand-in
`sbatch` on PATH proves nothing is submitted).

The array tasks run on this machine as the submitting user, so the pytest tmp dirs (under /tmp)
are shared with them.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import FAST_CLS, run_cli

pytestmark = pytest.mark.slurm

ARRAY_TIMEOUT = 600  # seconds a submitted array may take (the machine is shared: be patient)
GRID = ["--lr", "1e-3,1e-2", "--epochs", "1,2"]
SLURM_OPTS = ["--cpus-per-task", "1", "--time", "0:15:00"]


@functools.lru_cache(maxsize=1)
def _slurm_missing() -> str | None:
    """Why Slurm cannot be used here, or None when it can."""
    if shutil.which("sbatch") is None:
        return "sbatch not on PATH (start a local Slurm with scripts/slurm-local.sh)"
    if shutil.which("sinfo") is None:
        return "sinfo not on PATH"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %a %D %T"], capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 60 s (is slurmctld running?)"
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines() or [f"rc {proc.returncode}"]
        return f"sinfo cannot reach a Slurm controller: {why[-1]}"
    return None


@pytest.fixture(scope="module")
def slurm() -> None:
    reason = _slurm_missing()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def submitted() -> list[str]:
    """Job ids submitted by this module; any still queued at the end are cancelled."""
    jobs: list[str] = []
    yield jobs
    if jobs and shutil.which("scancel"):
        subprocess.run(["scancel", *jobs], capture_output=True, timeout=60)


def _queued(job: str) -> str:
    proc = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %T %r"], capture_output=True,
                          text=True, timeout=60)
    # once slurmctld has purged a finished job, squeue says "Invalid job id": it left the queue
    return proc.stdout.strip() if proc.returncode == 0 else ""


def wait_for(job: str, timeout: float = ARRAY_TIMEOUT) -> float:
    """Poll squeue until the job (all its array tasks) left the queue; returns the seconds."""
    start = time.monotonic()
    while True:
        queued = _queued(job)
        if not queued:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            nodes = subprocess.run(["sinfo", "-N", "-o", "%N %T %E"], capture_output=True,
                                   text=True, timeout=60).stdout
            subprocess.run(["scancel", job], capture_output=True, timeout=60)
            pytest.fail(f"Slurm job {job} still queued after {timeout:.0f} s (cancelled):\n"
                        f"{queued}\nnodes:\n{nodes}")
        time.sleep(1)


def submit_sweep(data: Path, out: Path, submitted: list[str], *extra: str) -> str:
    """`breastus sweep cls ... --slurm`; returns the array's job id (from sweep.json)."""
    proc = run_cli("sweep", "cls", str(data), *FAST_CLS, *extra, "--out", str(out), "--slurm",
                   *SLURM_OPTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = json.loads((out / "sweep.json").read_text()).get("slurm_jobs") or []
    match = re.search(r"submitted Slurm job (\d+)", proc.stdout + proc.stderr)
    job = jobs[-1] if jobs else (match.group(1) if match else None)
    assert job and re.fullmatch(r"\d+", job), f"no job id in sweep.json or output:\n{proc.stdout}"
    if match:
        assert match.group(1) == job
    submitted.append(job)
    return job


def task_logs(out: Path, job: str) -> dict[int, str]:
    return {int(p.stem.split("_")[1]): p.read_text()
            for p in sorted((out / "logs").glob(f"{job}_*.out"))}


def trial_configs(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())
            for p in sorted((out / "trials").glob("*/config.json"))}


def grid_values(out: Path) -> pd.DataFrame:
    """results.csv without the path columns (collect writes them as the folder was named)."""
    frame = pd.read_csv(out / "results.csv")
    return frame.drop(columns=["run_dir", "model"]).sort_values(["lr", "epochs"]) \
        .reset_index(drop=True)


@pytest.fixture(scope="module")
def slurm_sweep(slurm, learn_data, tmp_path_factory, submitted) -> dict:
    """The 2 lr x 2 epochs sweep submitted as a 2-task array, finished and collected."""
    out = tmp_path_factory.mktemp("slurm") / "sweep"
    t0 = time.monotonic()
    job = submit_sweep(learn_data, out, submitted, *GRID)
    submit_s = time.monotonic() - t0
    array_s = wait_for(job)
    proc = run_cli("sweep", "collect", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"\nslurm sweep: submit {submit_s:.1f} s, array job {job} {array_s:.1f} s")
    return {"out": out, "job": job, "collect": proc}


def test_the_array_ran_every_trial_under_slurm(slurm_sweep):
    out, job = slurm_sweep["out"], slurm_sweep["job"]
    sbatch = (out / "sweep.sbatch").read_text()
    assert "#SBATCH --array=0-1" in sbatch and "#SBATCH --cpus-per-task=1" in sbatch
    assert "#SBATCH --time=0:15:00" in sbatch

    results = pd.read_csv(out / "results.csv")
    assert len(results) == 4
    assert sorted(zip(results["lr"], results["epochs"])) == [
        (1e-3, 1), (1e-3, 2), (1e-2, 1), (1e-2, 2)]
    assert results["val_auc"].notna().all()
    plan = json.loads((out / "sweep.json").read_text())
    assert plan["trainings"] == 2 and plan["trainings_finished"] == 2
    assert plan["grid_points"] == 4 and plan["missing"] == []
    assert plan["slurm_jobs"] == [job]
    best = json.loads((out / "best.json").read_text())
    assert best["metric"] == "val_auc" and (best["lr"], best["epochs"]) in {
        (lr, e) for lr, e in zip(results["lr"], results["epochs"])}
    assert "best val_auc" in slurm_sweep["collect"].stdout

    logs = task_logs(out, job)
    assert sorted(logs) == [0, 1], sorted(p.name for p in (out / "logs").iterdir())
    for text in logs.values():
        assert "Traceback" not in text, text

    configs = trial_configs(out)
    assert sorted(configs) == ["lr-0.001", "lr-0.01"]
    tasks = set()
    for name, config in configs.items():
        assert config["status"] == "finished", (name, config["status"])
        env = config["environment"]
        # the trial ran inside the array job, as one of its tasks
        assert env.get("slurm_array_job_id") == job, (name, env)
        assert env.get("slurm_job_id"), (name, env)
        assert "sweep trial" in env["command"]
        tasks.add(env.get("slurm_array_task_id"))
        trial = next(t for t in plan["trials"] if t["name"] == name)
        assert env.get("slurm_array_task_id") == str(trial["index"])
        for epochs in (1, 2):
            assert (out / "trials" / name / "grid" / f"epoch-{epochs:03d}.keras").is_file()
    assert tasks == {"0", "1"}


def test_resubmitting_a_finished_sweep_changes_nothing(slurm_sweep, learn_data, submitted):
    out, first = slurm_sweep["out"], slurm_sweep["job"]
    before_values = grid_values(out)
    before_files = {p: p.read_bytes() for p in sorted((out / "trials").glob("*/*"))
                    if p.is_file()}

    t0 = time.monotonic()
    job = submit_sweep(learn_data, out, submitted, *GRID)
    seconds = wait_for(job)
    print(f"\nre-submitted array job {job}: {seconds:.1f} s")
    assert job != first
    assert json.loads((out / "sweep.json").read_text())["slurm_jobs"] == [first, job]

    logs = task_logs(out, job)
    assert sorted(logs) == [0, 1]
    for text in logs.values():
        assert "Traceback" not in text and "epoch " not in text.lower(), text
        assert "finished already" in text, text
    # nothing was trained, resumed or rewritten
    after_files = {p: p.read_bytes() for p in sorted((out / "trials").glob("*/*"))
                   if p.is_file()}
    assert after_files.keys() == before_files.keys()
    changed = [str(p) for p in before_files if after_files[p] != before_files[p]]
    assert not changed, changed
    assert all("resumes" not in c for c in trial_configs(out).values())

    proc = run_cli("sweep", "collect", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pd.testing.assert_frame_equal(grid_values(out), before_values)
    assert time.monotonic() - t0 < ARRAY_TIMEOUT


def test_a_cancelled_task_resumes_when_the_sweep_is_resubmitted(slurm, learn_data,
                                                                tmp_path_factory, submitted):
    """A wall-time kill, played by scancel mid-training: the same command re-submits the
    array, the task resumes its trial after the last finished epoch."""
    out = tmp_path_factory.mktemp("slurm-kill") / "sweep"
    grid = ["--lr", "1e-3", "--epochs", "2,40"]
    first = submit_sweep(learn_data, out, submitted, *grid)
    history = out / "trials" / "lr-0.001" / "history.csv"
    start = time.monotonic()
    while True:  # cancel once two epochs are on disk
        rows = history.read_text().count("\n") - 1 if history.is_file() else 0
        if rows >= 2:
            break
        if not _queued(first):
            pytest.fail(f"job {first} left the queue before its second epoch: "
                        f"{task_logs(out, first)}")
        assert time.monotonic() - start < ARRAY_TIMEOUT, f"job {first}: no epochs"
        time.sleep(0.2)
    subprocess.run(["scancel", first], check=True, timeout=60)
    wait_for(first)
    config = trial_configs(out)["lr-0.001"]
    epochs_done = len(pd.read_csv(history))
    assert config["status"] != "finished" and epochs_done < 40, (
        f"the trial finished ({epochs_done} epochs) before scancel: the machine was too fast "
        "for this test's 40 epochs")
    assert "CANCELLED" in task_logs(out, first)[0]

    second = submit_sweep(learn_data, out, submitted, *grid)
    wait_for(second)
    proc = run_cli("sweep", "collect", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr

    config = trial_configs(out)["lr-0.001"]
    assert config["status"] == "finished"
    assert config["environment"]["slurm_array_job_id"] == first
    assert [r.get("slurm_array_job_id") for r in config["resumes"]] == [second]
    assert pd.read_csv(history)["epoch"].tolist() == list(range(1, 41))
    assert "resuming" in (out / "trials" / "lr-0.001" / "train.log").read_text()
    results = pd.read_csv(out / "results.csv")
    assert sorted(results["epochs"]) == [2, 40]
    plan = json.loads((out / "sweep.json").read_text())
    assert plan["slurm_jobs"] == [first, second] and plan["trainings_finished"] == 1


def test_dry_run_writes_the_array_script_and_submits_nothing(learn_data, tmp_path):
    """Runs with or without Slurm: a stand-in sbatch first on PATH records any call."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "sbatch-calls"
    (fake_bin / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho 999\n')
    (fake_bin / "sbatch").chmod(0o755)

    out = tmp_path / "sweep"
    proc = run_cli("sweep", "cls", str(learn_data), *FAST_CLS, *GRID, "--out", str(out),
                   "--slurm", "--dry-run", "--partition", "shortq", "--time", "0:05:00",
                   "--cpus-per-task", "2", "--mem", "2G", "--sbatch-arg=--qos=short",
                   env={"PATH": f"{fake_bin}{os.pathsep}{os.environ.get('PATH', '')}"})
    assert proc.returncode == 0, proc.stdout + proc.stderr

    script = out / "sweep.sbatch"
    text = script.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("#!")
    for expected in ("#SBATCH --array=0-1", "#SBATCH --partition=shortq",
                     "#SBATCH --time=0:05:00", "#SBATCH --cpus-per-task=2", "#SBATCH --mem=2G",
                     "#SBATCH --qos=short", f"#SBATCH --output={out.resolve()}/logs/%A_%a.out"):
        assert expected in lines, (expected, text)
    command = [line for line in lines if "sweep trial" in line]
    assert len(command) == 1, text
    assert re.search(rf"-m breastus_cli .*sweep trial {re.escape(str(out.resolve()))} "
                     r'--index "\$SLURM_ARRAY_TASK_ID"$', command[0]), command[0]
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert (out / "logs").is_dir()

    # nothing submitted, nothing trained
    assert not calls.exists(), calls.read_text()
    plan = json.loads((out / "sweep.json").read_text())
    assert not plan.get("slurm_jobs") and plan["trainings"] == 2
    assert "submitted" not in proc.stdout
    assert not list(out.glob("trials/*/config.json"))
