"""examples/results_pretrained.sh end to end with stand-ins for breastus and the python steps: which
runs it trains by default and with CHOOSE=1, what each two-view is paired with, that every
command is timed into WORK/times.tsv, and that CHOOSE=1 rewrites the record of the choices.
(The real trainings take hours; these stand-ins write the files the script looks for.)"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# breastus: log the call, then write what the script checks for (a finished run with a
# validation curve, an evaluation's metrics, a CV summary with its fusion and partner)
FAKE_BREASTUS = r'''#!PYTHON
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")

def value(flag):
    return args[args.index(flag) + 1] if flag in args else None

block = {"pooled": 0.8, "ci": [0.7, 0.9]}
metrics = {"n": 10, "n_malignant": 4, "auc": 0.8, "sensitivity": 0.8, "specificity": 0.6,
           "dice": 0.8, "iou": 0.7,
           "ci": {}}
if args[0] in ("train-cls", "train-seg"):
    run = Path(value("--run-dir"))
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({
        "status": "finished", "settings": {"data": args[1], "img_size": 32},
        "data": {"n_train": 10}, "environment": {"started": "2026-12-07T00:00:00+0000",
                                                 "breastus_version": "9.9"}}))
    # the 224 px candidate above the 160 px seeds, as it was: the rule chooses it again
    top = 0.9 if run.name == "lite0-224-f0" else 0.8
    (run / "history.csv").write_text(f"epoch,val_auc,seconds\n1,{top},60\n2,{top},60\n")
elif args[0] == "evaluate":
    run = Path(args[1])
    data = value("--data")
    name = ("eval-test" if data is None else
            f"eval-ensemble-{Path(data).name}-all" if "--ensemble" in args else
            f"eval-{Path(data).name}-all")
    (run / name).mkdir(parents=True)
    (run / name / "metrics.json").write_text(json.dumps(metrics))
elif args[0] == "cv":
    out = Path(value("--out"))
    (out / "fold-0").mkdir(parents=True, exist_ok=True)
    summary = {"task": args[1], "n": 10, "n_malignant": 4,
               "metrics": {"auc": block, "dice": block, "iou": block}}
    if "--fusion" in args:
        summary["fusion"] = {"fused": {"auc": block}}
        if "--fuse-with-cv" in args:
            summary["fusion"]["partner"] = {"auc": block}
    (out / "cv.json").write_text(json.dumps({"fuse_with_cv": value("--fuse-with-cv")}))
    (out / "summary.json").write_text(json.dumps(summary))
else:
    sys.exit(f"fake breastus: {args[0]} not expected")
'''

# python: the example scripts' outputs; write_pretrained.py itself runs for real
FAKE_PYTHON = r'''#!/usr/bin/env bash
echo "python $*" >> "$FAKE_LOG"
case "$1" in
  *write_pretrained.py) exec PYTHON "$@" ;;
  *ood_separation.py) echo "$OOD" > "$4" ;;
  *adabn_crossfit.py) mkdir -p "$4" && echo "$CROSSFIT" > "$4/crossfit.json" ;;
  *local_threshold.py) echo '# local' > "$3" ;;
  *) echo "fake python: $1 not expected" >&2; exit 1 ;;
esac
'''


OOD = {"n_own_test": 10, "n_other": 10, "auc": 0.9, "auc_ci": [0.8, 0.95],
       "out_of_domain_own_test": 0.05, "out_of_domain_other": 0.6, "out_of_domain_validation": 0.05}
CROSSFIT = {"pooled": {"n": 10, "n_malignant": 4, "auc_a": 0.8, "ci_a": [0.7, 0.9], "auc_b": 0.8,
                       "ci_b": [0.7, 0.9], "dice_a": 0.8, "dice_b": 0.8, "difference": 0.0,
                       "ci_difference": [-0.1, 0.1]}}


def _env(tmp_path: Path, choose: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHON": str(bin_dir / "fake-python"), "FAKE_LOG": str(tmp_path / "calls.log"),
            "CHOOSE": choose, "OOD": json.dumps(OOD), "CROSSFIT": json.dumps(CROSSFIT)}


def _executable(path: Path, text: str) -> None:
    path.write_text(text.replace("PYTHON", sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _run(tmp_path: Path, choose: str) -> tuple[list[list[str]], Path, Path]:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES, repo / "examples")
    (repo / "RESULTS.md").write_text("# Results\n\n## How the settings were chosen\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(bin_dir / "breastus", FAKE_BREASTUS)
    _executable(bin_dir / "fake-python", FAKE_PYTHON)
    return _script(tmp_path, repo, tmp_path / "work", choose)


def _script(tmp_path: Path, repo: Path, work: Path, choose: str):
    """Run the script (again); every call so far, in order."""
    proc = subprocess.run(["bash", str(repo / "examples" / "results_pretrained.sh"),
                           str(tmp_path / "busbra"), str(tmp_path / "breast"), str(work)],
                          env=_env(tmp_path, choose), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    calls = [json.loads(line) if line.startswith("[") else line.split()
             for line in (tmp_path / "calls.log").read_text().splitlines()]
    return calls, work, repo


def _trained(calls: list[list[str]]) -> set[str]:
    return {Path(c[c.index("--run-dir") + 1]).name for c in calls
            if c[0] in ("train-cls", "train-seg")}


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash on this machine")
def test_by_default_the_decided_choices_are_not_trained_again(tmp_path):
    calls, work, repo = _run(tmp_path, "0")
    trained = _trained(calls)
    assert {"lite0-224-f0", "lite0-224-f0-s43", "lite0-224-f0-s44", "lite0-160-f0",
            "lite0-roi160-f0", "unet-lite0-128-f0"} <= trained
    assert not trained & {"lite0-160-lr3e-4-f0", "lite0-160-aug2-f0", "lite0-160-freezebn-f0",
                          "lite0-160-headwarm-f0", "lite0-160-f0-s43", "lite0-160-f0-s44",
                          "lite0-224-e40-f0"}
    assert not [c for c in calls if c[0] == "cv" and "cv-breast-lite0-ft-224-s" in c[-1]]
    # two-view: each lesion-centred seed with the 224 px whole-image run of its seed, the BrEaST
    # folds with the 224 px folds
    partners = {Path(c[1]).name: Path(c[c.index("--fuse-with") + 1]).name for c in calls
                if c[0] == "evaluate" and "--fuse-with" in c}
    assert partners == {"lite0-roi160-f0": "lite0-224-f0",
                        "lite0-roi160-f0-s43": "lite0-224-f0-s43",
                        "lite0-roi160-f0-s44": "lite0-224-f0-s44"}
    cv_partner = [Path(c[c.index("--fuse-with-cv") + 1]).name for c in calls
                  if c[0] == "cv" and "--fuse-with-cv" in c]
    assert cv_partner == ["cv-breast-lite0-224"]
    # the BUS-BRA 224 px model fine-tuned on BrEaST's folds, fused with their descriptors
    ft = [c for c in calls if c[0] == "cv" and "cv-breast-lite0-ft-224" in c[-1]]
    assert len(ft) == 1 and "--fusion" in ft[0] and "--img-size" in ft[0]
    # every breastus command and python step timed, the record read, not rewritten
    timed = (work / "times.tsv").read_text().splitlines()
    assert len([t for t in timed if "\tbreastus " in t]) == len(
        [c for c in calls if c[0] != "python"])
    assert any("\tpython " in t and "adabn_crossfit.py" in t for t in timed)
    section = (repo / "RESULTS.md").read_text()
    assert "as recorded on" in section and "pretrained_choices.json" in section
    assert (repo / "examples" / "pretrained_choices.json").read_bytes() == \
        (EXAMPLES / "pretrained_choices.json").read_bytes()
    # run again: everything is there, nothing runs twice
    before = len(calls)
    calls, _, _ = _script(tmp_path, repo, work, "0")
    assert [c for c in calls[before:] if c[0] != "python"] == []


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash on this machine")
def test_choose_1_trains_the_candidates_and_rewrites_their_record(tmp_path):
    calls, work, repo = _run(tmp_path, "1")
    assert {"lite0-160-lr3e-4-f0", "lite0-160-aug2-f0", "lite0-160-freezebn-f0",
            "lite0-160-headwarm-f0", "lite0-160-f0-s43", "lite0-160-f0-s44"} <= _trained(calls)
    seeds = sorted(Path(c[-1]).name for c in calls
                   if c[0] == "cv" and "cv-breast-lite0-ft-224-s" in c[-1])
    assert seeds == ["cv-breast-lite0-ft-224-s43", "cv-breast-lite0-ft-224-s44"]
    warm = [c for c in calls if c[0] == "train-cls" and "lite0-160-headwarm-f0" in c[-1]][0]
    assert warm[warm.index("--head-warmup") + 1] == "2"
    record = json.loads((repo / "examples" / "pretrained_choices.json").read_text())
    assert record["breastus_version"] == "9.9"  # written from these runs
    assert "as recorded on" not in (repo / "RESULTS.md").read_text()
