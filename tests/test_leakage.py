"""No leakage across splits (issue 28): a dataset re-split after it was combined is caught when
a run trained on the combination is scored on it; near-duplicate images (the same scan re-saved,
shifted or re-scaled) are found by ``prepare``, kept in one split and fold by ``split``, and
counted by ``evaluate`` when a run's split did not keep them together."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from conftest import make_dataset, run_cli

TINY = ["--model", "smallcnn", "--weights", "none", "--img-size", "32", "--batch-size", "16",
        "--epochs", "1", "--cache", "none"]


def _lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# ---- a combined dataset carries each member's split ---------------------------------------------
def test_a_member_resplit_after_combining_is_refused_when_scored_on_it(synth_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    data3 = make_dataset(tmp_path / "d3", cases=24, seed=5, sides=(64, 80),
                         ratio=(0.6, 0.2, 0.2), split_seed=1)
    comb, run = tmp_path / "comb", tmp_path / "run"
    assert run_cli("combine", str(data), str(data3), "--out", str(comb)).returncode == 0
    proc = run_cli("train-cls", str(comb), *TINY, "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    recorded = json.loads((run / "config.json").read_text())["data"]
    assert sorted(Path(m["path"]) for m in recorded["members"]) == sorted(
        p.resolve() for p in (data, data3))
    # scored on one member whose split is the combination's: allowed
    proc = run_cli("evaluate", str(run), "--data", str(data3), "--split", "test",
                   "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr

    proc = run_cli("split", str(data3), "--seed", "7", "--folds", "3")
    assert proc.returncode == 0, proc.stderr
    # the leak the record prevents: cases of data3's new test split were trained on
    trained = pd.read_csv(comb / "splits.csv", dtype=str)
    trained = {c.split("-", 1)[1] for c, s in zip(trained["case_id"], trained["split"])
               if s == "train" and c.startswith("d3_data-")}
    now = pd.read_csv(data3 / "splits.csv", dtype=str)
    assert trained & set(now.loc[now["split"] == "test", "case_id"])
    before = sorted(p.name for p in run.iterdir())
    proc = run_cli("evaluate", str(run), "--data", str(data3), "--split", "test",
                   "--bootstrap", "0")
    assert proc.returncode == 2, proc.stderr
    line = _lines(proc.stderr)
    assert len(line) == 1 and "combined dataset" in line[0] and "re-split" in line[0]
    assert str(data3) in line[0] and "Traceback" not in proc.stderr
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written
    # the combination itself still holds the split the run trained on
    proc = run_cli("evaluate", str(run), "--split", "test", "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    # a member left alone still evaluates; every case (--split all) asks no split question
    for args in (["--data", str(data), "--split", "test"], ["--data", str(data3), "--split", "all"]):
        proc = run_cli("evaluate", str(run), *args, "--bootstrap", "0")
        assert proc.returncode == 0, (args, proc.stderr)
