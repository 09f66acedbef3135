"""Issue 28: one ownership rule for every command that writes (breastus_cli/ownership.py claim).

First the cases the issue reproduced (each failed on the code before the fix): synth
--overwrite deleting a BrEaST look-alike, export overwriting a user's metadata.json and
model.tflite, predict --overwrite deleting a folder without predict.json, predict --resume
writing masks through a symbolic link, --run-dir naming a file. Then the table: every command
of the CLI that writes a folder refuses someone else's non-empty folder and a symbolically
linked sub-folder that leads outside (exit 2, one line, nothing touched); a command added to
the CLI without a row here fails the coverage test.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from test_safety_files import _cli, _error_line, _files, _scans, tiny_runs  # noqa: F401

from conftest import breast_row, write_breast

IMAGES = "BrEaST-Lesions_USG-images_and_masks"
WORKBOOK = "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx"


def _foreign(folder: Path) -> Path:
    """``folder`` holding a user's file (no breastus marker)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thesis.txt").write_text("three years of work")
    return folder


def _outside(tmp_path: Path) -> Path:
    """A user's folder outside every output, with a file a write through a link would hit."""
    folder = tmp_path / "elsewhere"
    folder.mkdir(exist_ok=True)
    for name in ("scan0.png", "model.tflite", "keep.txt"):
        (folder / name).write_bytes(b"the user's own bytes")
    return folder


# ---- synth --overwrite --------------------------------------------------------------------------
def test_synth_overwrite_keeps_a_breast_copy_it_did_not_write(tmp_path, capsys):
    real = write_breast(tmp_path / "real", [breast_row(1), breast_row(2, "malignant")])
    (real / "README.md").write_text("BrEaST-Lesions_USG: 256 cases")
    before = _files(real)
    code, err = _cli(capsys, "synth", real, "--overwrite", "--cases", "4")
    assert code == 2
    line = _error_line(err)
    assert str(real) in line and "synth.json" in line and "--overwrite" not in line
    assert _files(real) == before  # the workbook, README and every image still there


def test_synth_overwrite_keeps_a_folder_that_only_has_the_image_folder_name(tmp_path, capsys):
    v = tmp_path / "v"
    (v / IMAGES).mkdir(parents=True)
    (v / "thesis.txt").write_text("t")
    code, err = _cli(capsys, "synth", v, "--overwrite", "--cases", "4")
    assert code == 2 and str(v) in _error_line(err)
    assert (v / "thesis.txt").read_text() == "t"


def test_synth_overwrite_replaces_its_own_output(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["synth", out, "--cases", "4", "--min-side", "64", "--max-side", "64"]
    assert _cli(capsys, *args)[0] == 0
    assert json.loads((out / "synth.json").read_text())["format"] == "breastus-synth"
    (out / IMAGES / "stray.png").write_bytes(b"old")
    code, err = _cli(capsys, *args, "--overwrite", "--seed", "3")
    assert code == 0, err
    assert not (out / IMAGES / "stray.png").exists() and (out / WORKBOOK).is_file()


# ---- export --out ---------------------------------------------------------------------------------
def test_export_never_overwrites_a_users_files(tiny_runs, tmp_path, capsys):
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    (deploy / "metadata.json").write_text('{"mine": true}')
    (deploy / "model.tflite").write_bytes(b"my own model")
    before = _files(deploy)
    for flags in ([], ["--overwrite"]):
        code, err = _cli(capsys, "export", tiny_runs["cls"], "--out", deploy, *flags)
        assert code == 2, err
        line = _error_line(err)
        assert str(deploy) in line and "metadata.json" in line
        assert _files(deploy) == before


def test_export_overwrite_replaces_only_its_own_exports(tiny_runs, tmp_path, capsys):
    deploy = tmp_path / "deploy"
    run = ["export", tiny_runs["cls"], "--out", deploy]
    assert _cli(capsys, *run, "--quantize", "float16")[0] == 0
    assert _cli(capsys, *run)[0] == 0  # into its own folder: exports accumulate
    assert sorted(json.loads((deploy / "metadata.json").read_text())["exports"]) == [
        "model-float16.tflite", "model.tflite"]
    (deploy / "notes.txt").write_text("kept")
    code, err = _cli(capsys, *run, "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in deploy.iterdir()) == ["metadata.json", "model.tflite",
                                                         "notes.txt"]
    assert list(json.loads((deploy / "metadata.json").read_text())["exports"]) == [
        "model.tflite"]


# ---- predict: only predict.json makes a folder predict's -------------------------------------------
def test_predict_overwrite_keeps_a_folder_without_predict_json(tiny_runs, tmp_path, capsys):
    from breastus_cli.engine.apply.predict_output import COLUMNS

    scans = _scans(tmp_path / "scans")
    out = tmp_path / "results"
    for folder in ("masks", "overlays"):
        (out / folder).mkdir(parents=True)
        (out / folder / "a.png").write_bytes(b"my annotation")
    (out / "predictions.csv").write_text(",".join(COLUMNS) + "\n")  # breastus's header
    before = _files(out)
    for flag in ("--overwrite", "--resume"):
        code, err = _cli(capsys, "predict", scans, "--seg-run", tiny_runs["seg"], "--out", out,
                         "--save-masks", "--save-overlays", flag)
        assert code == 2, err
        line = _error_line(err)
        assert str(out) in line and "predict.json" in line
        assert "--overwrite" not in err  # never recommended for a folder breastus did not write
        assert _files(out) == before


def test_predict_resume_never_writes_through_a_symlinked_masks_folder(tiny_runs, tmp_path,
                                                                      capsys):
    scans = _scans(tmp_path / "scans")
    out = tmp_path / "pred3"
    args = ["predict", scans, "--seg-run", tiny_runs["seg"], "--out", out, "--save-masks"]
    assert _cli(capsys, *args)[0] == 0
    other = _outside(tmp_path)
    shutil.rmtree(out / "masks")
    os.symlink(other, out / "masks")
    rows = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    rows.head(1).to_csv(out / "predictions.csv", index=False)  # two scans left to predict
    before = _files(other)
    code, err = _cli(capsys, *args, "--resume")
    assert code == 2, err
    line = _error_line(err)
    assert str(out / "masks") in line and "symbolic link" in line
    assert _files(other) == before  # scan0.png there not overwritten, nothing added
    assert len(pd.read_csv(out / "predictions.csv")) == 1


# ---- --run-dir ------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["train-cls", "train-seg"])
def test_run_dir_an_existing_file_is_one_line_exit_2(command, synth_data, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("precious")
    code, err = _cli(capsys, command, synth_data, "--weights", "none", "--epochs", "1",
                     "--run-dir", target)
    assert code == 2
    line = _error_line(err)
    assert str(target) in line and "not a folder" in line
    assert target.read_text() == "precious"


# ---- the rule, walked over every command that writes ----------------------------------------------
_SMALL = ["--model", "smallcnn", "--weights", "none"]


class Case:
    """One command that writes: how to call it on ``out`` and what breastus's own ``out`` holds.

    ``args(ctx, out, own)`` gives the command line (``own``: ``out`` holds the marker, the call
    that writes into it or replaces it); ``marker`` the marker file (name, content or
    ``content(ctx)``) that makes ``out`` breastus's; ``output(ctx, out)`` the folder the rule
    applies to (``out`` itself, or a folder inside it)."""

    def __init__(self, args: Callable[[dict, Path, bool], list],
                 marker: tuple[str, dict | Callable[[dict], dict]],
                 output: Callable[[dict, Path], Path] = lambda ctx, out: out) -> None:
        self.args, self.marker, self.output = args, marker, output


_RUN = ("config.json", {"task": "cls", "settings": {}, "environment": {}})
#: an interrupted run --resume would continue (its settings usable)
_RESUMABLE = {task: ("config.json", lambda c, task=task: {
    "task": task, "settings": {"data": str(c["data"]), "weights": "none", "epochs": 2,
                               **({"model": "smallcnn"} if task == "cls" else {})},
    "environment": {}, "status": "running"}) for task in ("cls", "seg")}
_SWEEP = ("sweep.json", {"task": "cls", "trials": [], "train": {}})
_CV = ("cv.json", {"task": "cls", "folds": 3, "train": {}})
_DATASET = ("prepare.json", {"breastus_version": "0", "manifest_sha256": "0"})

CASES: dict[str, Case] = {
    "synth": Case(lambda c, out, own: ["synth", out, "--overwrite", "--cases", "4"],
                  ("synth.json", {"format": "breastus-synth"})),
    "prepare": Case(lambda c, out, own: ["prepare", c["source"], "--out", out, "--overwrite"],
                    _DATASET),
    "split": Case(lambda c, out, own: ["split", c["data_copy"], "--materialize"],
                  ("split.json", {"format": "breastus-split"}),
                  output=lambda c, out: c["data_copy"] / "split"),
    "combine": Case(lambda c, out, own: ["combine", c["data"], c["learn"], "--out", out,
                                         "--overwrite"], _DATASET),
    "train-cls": Case(lambda c, out, own: ["train-cls", "--resume", out] if own else
                      ["train-cls", c["data"], *_SMALL, "--epochs", "1", "--run-dir", out],
                      _RESUMABLE["cls"]),
    "train-seg": Case(lambda c, out, own: ["train-seg", "--resume", out] if own else
                      ["train-seg", c["data"], "--weights", "none", "--epochs", "1",
                       "--run-dir", out], _RESUMABLE["seg"]),
    "evaluate": Case(lambda c, out, own: ["evaluate", out], _RUN),
    "calibrate": Case(lambda c, out, own: ["calibrate", out, "--target-sensitivity", "0.9"],
                      _RUN),
    "predict": Case(lambda c, out, own: ["predict", c["scans"], "--seg-run", c["runs"]["seg"],
                                         "--out", out, "--save-masks"]
                    + (["--resume"] if own else []), ("predict.json",
                                                      {"format": "breastus-predict"})),
    "compare": Case(lambda c, out, own: ["compare", c["evals"][0], c["evals"][1], "--out", out],
                    ("compare.json", {"format": "breastus-compare"})),
    "review": Case(lambda c, out, own: ["review", out], ("predict.json",
                                                          {"format": "breastus-predict"})),
    "shift": Case(lambda c, out, own: ["shift", c["runs"]["cls"], c["scans"], "--out", out],
                  ("shift.json", {"format": "breastus-shift"})),
    "adapt": Case(lambda c, out, own: ["adapt", c["runs"]["cls"], "--data", c["scans"],
                                       "--out", out], _RUN),
    "export": Case(lambda c, out, own: ["export", c["runs"]["cls"], "--out", out, "--overwrite"],
                   ("metadata.json", {"format": "tflite", "exports": {},
                                      "source_model_sha256": "0"})),
    "sweep cls": Case(lambda c, out, own: ["sweep", "cls", c["data"], "--out", out, *_SMALL],
                      _SWEEP),
    "sweep seg": Case(lambda c, out, own: ["sweep", "seg", c["data"], "--out", out,
                                           "--weights", "none"],
                      ("sweep.json", {"task": "seg", "trials": [], "train": {}})),
    "sweep trial": Case(lambda c, out, own: ["sweep", "trial", out, "--index", "0"], _SWEEP),
    "sweep collect": Case(lambda c, out, own: ["sweep", "collect", out], _SWEEP),
    "cv cls": Case(lambda c, out, own: ["cv", "cls", c["learn"], "--folds", "3", "--out", out,
                                        *_SMALL], _CV),
    "cv seg": Case(lambda c, out, own: ["cv", "seg", c["learn"], "--folds", "3", "--out", out,
                                        "--weights", "none"],
                   ("cv.json", {"task": "seg", "folds": 3, "train": {}})),
    "cv fold": Case(lambda c, out, own: ["cv", "fold", out, "--index", "0"], _CV),
    "cv summarize": Case(lambda c, out, own: ["cv", "summarize", out], _CV),
}

#: commands that write no folder the rule could apply to, and why
NOT_FOLDER_WRITERS = {
    "weights list": "writes nothing",
    "weights download": "adds missing files to the shared Keras cache; a file already there is "
                        "skipped, never replaced, and nothing is deleted",
}


def _commands(group, prefix: str = "") -> list[str]:
    """Every command of a Typer group, sub-commands as ``"sweep cls"``."""
    names = []
    for name, command in group.commands.items():
        full = f"{prefix}{name}"
        names.extend(_commands(command, f"{full} ") if hasattr(command, "commands")
                     else [full])
    return names


def test_every_command_is_in_the_ownership_table():
    import typer

    from breastus_cli.cli.app import app

    commands = set(_commands(typer.main.get_command(app)))
    missing = commands - CASES.keys() - NOT_FOLDER_WRITERS.keys()
    assert not missing, f"add these commands to CASES or NOT_FOLDER_WRITERS: {sorted(missing)}"
    assert not (CASES.keys() | NOT_FOLDER_WRITERS.keys()) - commands  # no stale rows


@pytest.fixture
def ctx(tmp_path, synth_data, learn_data, tiny_runs) -> dict:
    data_copy = tmp_path / "data_copy"
    shutil.copytree(synth_data, data_copy)
    return {"data": synth_data, "learn": learn_data, "runs": tiny_runs, "data_copy": data_copy,
            "scans": _scans(tmp_path / "scans"), "evals": _evaluations(tmp_path),
            "source": write_breast(tmp_path / "src", [breast_row(1), breast_row(2, "malignant"),
                                                      breast_row(3)])}


def _evaluations(tmp_path: Path) -> list[Path]:
    """Two evaluation folders of the same 8 cases (what ``compare`` reads)."""
    folders = []
    for k in (0, 1):
        folder = tmp_path / f"eval-{k}"
        folder.mkdir()
        pd.DataFrame({"case_id": [f"c{i}" for i in range(8)], "y_true": [0, 1] * 4,
                      "p_malignant": [(i * (3 + k)) % 8 / 8 for i in range(8)]}
                     ).to_csv(folder / "predictions.csv", index=False)
        folders.append(folder)
    return folders


def _refused(capsys, args: list, *protected: Path) -> str:
    before = [_files(p) for p in protected]
    code, err = _cli(capsys, *args)
    assert code == 2, (args, err)
    line = _error_line(err)
    assert [_files(p) for p in protected] == before, args  # nothing written, nothing deleted
    return line


@pytest.mark.parametrize("command", sorted(CASES))
def test_a_foreign_folder_is_refused(command, ctx, tmp_path, capsys):
    case = CASES[command]
    out = tmp_path / "out"
    folder = _foreign(case.output(ctx, out))
    line = _refused(capsys, case.args(ctx, out, False), folder)
    assert str(folder) in line


@pytest.mark.parametrize("command", sorted(CASES))
def test_a_symlinked_sub_folder_leading_outside_is_refused(command, ctx, tmp_path, capsys):
    case = CASES[command]
    out = tmp_path / "out"
    folder = case.output(ctx, out)
    folder.mkdir(parents=True, exist_ok=True)
    name, content = case.marker
    (folder / name).write_text(json.dumps(content(ctx) if callable(content) else content))
    outside = _outside(tmp_path)
    os.symlink(outside, folder / "masks")
    line = _refused(capsys, case.args(ctx, out, True), outside)
    assert "symbolic link" in line and str(folder / "masks") in line
    assert (folder / "masks").is_symlink()  # the link itself is left as it was


def test_the_rule_refuses_a_file_an_input_and_a_link_at_any_depth(tmp_path):
    from breastus_cli.errors import InputError, UsageError
    from breastus_cli.ownership import claim, escaping_link

    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        claim(tmp_path / "file", "predict")
    outer = tmp_path / "outer"  # a predict folder around the input: equal, inside, around
    src = outer / "src"
    src.mkdir(parents=True)
    (outer / "predict.json").write_text('{"format": "breastus-predict"}')
    for out in (src, src / "inner", outer):
        with pytest.raises(UsageError, match="source folder"):
            claim(out, "predict", inputs=[src])
    claim(src / "inner", "predict", inputs=[src], inside_ok=True)  # predict's scans/out
    own = tmp_path / "own"
    (own / "a" / "b").mkdir(parents=True)
    (own / "predict.json").write_text('{"format": "breastus-predict"}')
    os.symlink(own / "a", own / "a" / "b" / "back")  # a link that stays inside is fine
    assert escaping_link(own) is None and claim(own, "predict") == own
    os.symlink(src / "gone", own / "a" / "b" / "dangling")  # outside even when it is dangling
    with pytest.raises(InputError, match="symbolic link"):
        claim(own, "predict")
