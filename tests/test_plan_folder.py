"""The plan folder cv and sweep share (engine/orchestration/plan.py), tested on its own.

A new folder gets the plan; the same plan again resumes with the folder's own plan file; a
changed plan is refused with one line naming the first key that differs, nothing written; a
folder breastus did not write is refused, nothing written; a kind may amend a plan (cv takes on
fusion) and the amended plan is written; a part's run directory is new, partial or finished.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from breastus_cli.engine.orchestration.cv import CV_FOLDER
from breastus_cli.engine.orchestration.plan import (
    PlanKind, differing_key, open_plan, part_command, part_state, read_own_plan,
)
from breastus_cli.engine.orchestration.sweep import SWEEP_FOLDER
from breastus_cli.errors import InputError
from breastus_cli.runfiles import read_sweep


def _plan(lr: float = 1e-3, **extra) -> dict:
    """A sweep plan: what ownership recognises (task, trials, train) and sweep.json's schema."""
    return {"task": "cls", "data": "/data", "lrs": [lr], "epochs": [1, 2], "independent": False,
            "train": {"model": "smallcnn", "img_size": 64, "cache_dir": "/a/cache"},
            "trials": [{"name": f"lr-{lr:g}", "lr": lr, "epochs": 2, "grid_epochs": [1, 2],
                        "index": 0}], "trainings": 1, **extra}


#: a kind of the routine alone: the sweep marker, a comparison that ignores bookkeeping keys
KIND = PlanKind(name="sweep", part="trial", file="sweep.json", what="sweep", hint="pick another",
                read=read_sweep,
                comparable=lambda p: {k: v for k, v in p.items()
                                      if k not in ("trainings", "collected")})


def _on_disk(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())


def test_a_new_folder_gets_the_plan(tmp_path):
    out = tmp_path / "new" / "sweep"
    plan = _plan()
    assert open_plan(KIND, out, plan) is plan
    assert _on_disk(out) == plan


def test_the_same_plan_resumes_with_the_folders_own_plan(tmp_path):
    out = tmp_path / "s"
    open_plan(KIND, out, _plan(collected="yesterday"))
    before = (out / "sweep.json").read_bytes()
    resumed = open_plan(KIND, out, _plan())  # the same plan, without the bookkeeping
    assert resumed["collected"] == "yesterday"  # the folder's plan (its counters) goes on
    assert (out / "sweep.json").read_bytes() == before  # nothing rewritten


def test_a_changed_plan_is_refused_naming_the_key_that_differs(tmp_path):
    out = tmp_path / "s"
    open_plan(KIND, out, _plan())
    before = (out / "sweep.json").read_bytes()
    changed = _plan()
    changed["train"] = {**changed["train"], "img_size": 96}
    with pytest.raises(InputError) as refused:
        open_plan(KIND, out, changed)
    message = str(refused.value)
    assert "\n" not in message
    assert message == f"{out} holds a different sweep: its train.img_size is 64, this one asks 96"
    assert refused.value.hint == "pick another"
    assert (out / "sweep.json").read_bytes() == before


def test_a_folder_breastus_did_not_write_is_refused_untouched(tmp_path):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a breastus sweep folder"):
        open_plan(KIND, out, _plan())
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    # another kind's folder is foreign too: a cross-validation folder is no sweep folder
    cv = tmp_path / "cv"
    cv.mkdir()
    (cv / "cv.json").write_text(json.dumps({"task": "cls", "folds": 5, "train": {}}))
    with pytest.raises(InputError, match="not a breastus sweep folder"):
        open_plan(KIND, cv, _plan())
    assert not (cv / "sweep.json").exists()


def test_an_amended_plan_is_written_and_a_refused_amendment_writes_nothing(tmp_path):
    out = tmp_path / "s"
    open_plan(KIND, out, _plan())
    wanted = _plan(lr=1e-2)
    seen = []

    def amend(old, new, existing, plan):
        seen.append((old["lrs"], new["lrs"]))
        return {**plan, "collected": "amended"}

    assert open_plan(KIND, out, wanted, amend)["collected"] == "amended"
    assert seen == [([1e-3], [1e-2])] and _on_disk(out)["lrs"] == [1e-2]
    with pytest.raises(InputError, match="its lrs is \\[0.01\\], this one asks \\[0.1\\]"):
        open_plan(KIND, out, _plan(lr=0.1), lambda *plans: None)
    assert _on_disk(out)["lrs"] == [1e-2]


def test_a_command_inside_the_folder_needs_the_kinds_own_folder(tmp_path):
    with pytest.raises(InputError, match="is not a sweep folder \\(no sweep.json\\)"):
        read_own_plan(KIND, tmp_path)
    (tmp_path / "other.txt").write_text("x")
    with pytest.raises(InputError, match="not a breastus sweep folder"):
        read_own_plan(KIND, tmp_path)
    (tmp_path / "other.txt").unlink()
    open_plan(KIND, tmp_path, _plan())
    assert read_own_plan(KIND, tmp_path)["lrs"] == [1e-3]


def test_a_parts_state(tmp_path):
    run = tmp_path / "fold-0"
    assert part_state(run) == "new"
    run.mkdir()
    assert part_state(run) == "new"  # killed before its first epoch: started clean
    (run / "config.json").write_text(json.dumps({"task": "cls", "status": "interrupted"}))
    assert part_state(run) == "partial"
    (run / "config.json").write_text(json.dumps({"task": "cls", "status": "finished"}))
    assert part_state(run) == "finished"
    (run / "config.json").write_text(json.dumps({"task": "cls", "threshold": "NaN"}))
    with pytest.raises(InputError, match="bad run file"):
        part_state(run)  # a tampered config.json: one line, not a guess


def test_differing_key_goes_into_nested_objects():
    assert differing_key({"a": 1, "t": {"x": 1}}, {"a": 1, "t": {"x": 1}}) is None
    assert differing_key({"a": 1, "t": {"x": 1, "y": 2}}, {"a": 1, "t": {"x": 1, "y": 3}}) == "t.y"
    assert differing_key({"a": 1}, {"a": 1, "b": None}) is None  # a missing key reads as null
    assert differing_key({"a": [1]}, {"a": [1, 2]}) == "a"
    assert differing_key(1, 2) == "(the plan)"


def test_cv_and_sweep_share_the_routine(tmp_path):
    """Both commands' folders are kinds of this routine: their part commands and plan files."""
    assert part_command(CV_FOLDER, tmp_path)[-4:] == ["cv", "fold", str(tmp_path.resolve()),
                                                      "--index"]
    assert part_command(SWEEP_FOLDER, tmp_path)[-4:] == ["sweep", "trial",
                                                         str(tmp_path.resolve()), "--index"]
    assert (CV_FOLDER.file, SWEEP_FOLDER.file) == ("cv.json", "sweep.json")
    # an older sweep.json (before the settings TRAIN_ADDED names) compares equal to today's
    old = _plan()
    new = {**old, "train": {**SWEEP_FOLDER.comparable(old)["train"], "cache_dir": "/b/cache"}}
    assert SWEEP_FOLDER.comparable(old) == SWEEP_FOLDER.comparable(new)
