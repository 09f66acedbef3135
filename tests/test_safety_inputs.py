"""Hostile inputs the first safety pass did not reach (issue 28): a model archive that inflates
to gigabytes, ``--weights`` files that are not weights, multi-line model refusals, and workbook
values that are numbers only in name (``inf``, ``1e300``) or names no file system holds."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from conftest import breast_row, copy_run, run_cli, write_breast

REFUSED = "not a safe Keras model file"


# ---- model archives: sizes are checked before anything is inflated ----------------------------
def write_bomb(source: Path, target: Path, inflated: int) -> Path:
    """``source`` (a .keras file) with its weights replaced by ``inflated`` zero bytes, deflated
    as a stream: a few MB on disk, nothing of the inflated size ever held."""
    chunk = bytes(1024**2)
    with zipfile.ZipFile(source) as zin, \
            zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zout:
        for name in ("metadata.json", "config.json"):
            zout.writestr(name, zin.read(name))
        with zout.open("model.weights.h5", "w", force_zip64=True) as member:
            for _ in range(inflated // len(chunk)):
                member.write(chunk)
    return target


def _peak(*args: str) -> tuple[int, float, str]:
    """``breastus ARGS`` in a child: (exit code, peak RSS in GB, stderr)."""
    exe = Path(sys.executable).with_name("breastus")
    wrapper = ("import resource, subprocess, sys\n"
               "proc = subprocess.run(sys.argv[1:], stderr=subprocess.PIPE, text=True)\n"
               "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
               "sys.stderr.write(proc.stderr)\n"
               "print(proc.returncode, peak)\n")  # Linux: kilobytes; only this one child
    done = subprocess.run([sys.executable, "-c", wrapper, str(exe), *args],
                          capture_output=True, text=True, timeout=600)
    code, peak_kb = done.stdout.split()[-2:]
    return int(code), int(peak_kb) / 1024**2, done.stderr


def test_model_archive_bomb_is_refused_from_its_directory(cls_run, tmp_path):
    """A model.keras of ~2 MB whose weights inflate to 512 MB is refused from the sizes its zip
    directory declares: one line, exit 2, nothing inflated. Before, it was inflated into memory
    and handed to h5py: 1.6 GB peak here, and 4.8 GB (39 s) for a 1.9 GB member in the issue;
    now the peak is the CLI's with TensorFlow loaded (~0.6 GB)."""
    run = copy_run(cls_run, tmp_path / "run")
    bomb = write_bomb(cls_run / "model.keras", run / "model.keras", 512 * 1024**2)
    assert bomb.stat().st_size < 8 * 1024**2
    scans = tmp_path / "scans"
    scans.mkdir()
    Image.new("L", (80, 64), 90).save(scans / "a.png")
    code, peak_gb, stderr = _peak("predict", str(scans), "--cls-run", str(run),
                                        "--out", str(tmp_path / "out"))
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(f"error: {REFUSED}: {run / 'model.keras'}: "), stderr
    assert "'model.weights.h5' inflates" in lines[0] and "more than 100 times" in lines[0]
    assert peak_gb < 1.0, f"peak {peak_gb:.2f} GB"
    assert not (tmp_path / "out" / "predictions.csv").exists()


def _sized(path: Path, sizes: dict[str, int]) -> Path:
    """Rewrite the sizes ``path``'s stored members declare (compressed and inflated, in the local
    headers and the central directory) to ``sizes``: what a hostile writer can put in a header
    whatever the data holds."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        infos = {i.filename: i for i in archive.infolist()}
    for name, size in sizes.items():
        struct.pack_into("<II", data, infos[name].header_offset + 18, size, size)
        central = data.find(b"PK\x01\x02")
        while central >= 0:
            length = struct.unpack_from("<H", data, central + 28)[0]
            if bytes(data[central + 46:central + 46 + length]) == name.encode():
                struct.pack_into("<II", data, central + 20, size, size)
            central = data.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(data))
    return path


def _tiny_archive(path: Path, weights: bytes = b"w" * 64, *, deflate: bool = False) -> Path:
    config = {"module": "keras", "class_name": "Sequential", "registered_name": None,
              "config": {"name": "m", "layers": []}}
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("metadata.json", "{}")
        archive.writestr("model.weights.h5", weights)
    return path


@pytest.mark.parametrize("sizes, reason", [
    ({"model.weights.h5": 3 * 1024**3}, "more than the cap of 2048 MB"),
    ({"config.json": 65 * 1024**2}, "config.json is larger than 64 MB"),
])
def test_declared_sizes_over_the_caps_are_refused(tmp_path, sizes, reason):
    """The caps are checked on what the directory declares, before anything is read."""
    from breastus_cli.errors import InputError
    from breastus_cli.models.safe_load import check_model_file

    path = _sized(_tiny_archive(tmp_path / "model.keras"), sizes)
    with pytest.raises(InputError) as exc:
        check_model_file(path)
    assert exc.value.message.startswith(f"{REFUSED}: {path}: "), exc.value.message
    assert reason in exc.value.message, exc.value.message


def test_config_is_inflated_as_a_bounded_stream(tmp_path, monkeypatch):
    """config.json is read through a bounded stream whatever its header declares: a header
    that under-declares (here 10 bytes for ~90) never makes breastus read past the cap."""
    from breastus_cli.errors import InputError
    from breastus_cli.models import safe_load

    path = _sized(_tiny_archive(tmp_path / "model.keras"), {"config.json": 10})
    reads = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, *args, **kwargs):
        member = real_open(self, name, *args, **kwargs)
        real_read = member.read
        member.read = lambda n=-1: reads.append((name, n)) or real_read(n)
        return member

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    with pytest.raises(InputError) as exc:
        safe_load.check_model_file(path)
    assert exc.value.message.startswith(f"{REFUSED}: {path}: "), exc.value.message
    assert [n for name, n in reads if name == "config.json"] == [safe_load.MAX_CONFIG_BYTES + 1]


# ---- a model Keras will not load: its reason on one line ---------------------------------------
def test_a_model_keras_refuses_is_said_in_one_line_and_in_full_with_debug(cls_run, tmp_path):
    """A config that passes the allow-list but that Keras cannot deserialize (an argument Dense
    does not take): Keras's reason runs over several lines (the whole layer config, a blank
    line, the exception); breastus says it on one, and in full with --debug."""
    run = copy_run(cls_run, tmp_path / "run")
    with zipfile.ZipFile(cls_run / "model.keras") as zin, \
            zipfile.ZipFile(run / "model.keras", "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "config.json":
                config = json.loads(data)
                for layer in config["config"]["layers"]:
                    if layer["class_name"] == "Dense":
                        layer["config"]["not_an_argument"] = 1
                data = json.dumps(config).encode()
            zout.writestr(name, data)
    scans = tmp_path / "scans"
    scans.mkdir()
    Image.new("L", (80, 64), 90).save(scans / "a.png")
    args = ["predict", str(scans), "--cls-run", str(run), "--out", str(tmp_path / "out")]
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"error: cannot load {run / 'model.keras'}: TypeError: ")
    keras_part = lines[0].split(": TypeError: ", 1)[1]  # the run's path varies in length
    assert "'not_an_argument'" in keras_part and len(keras_part) <= 300, lines[0]
    debug = run_cli(*args, "--debug")
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr and "\nException encountered:" in debug.stderr


# ---- --weights FILE: a Keras weights file, or one line saying what is -------------------------
@pytest.fixture(scope="module")
def weight_files(tmp_path_factory) -> Path:
    """Files ``--weights`` may be given, written in this process (no TensorFlow start-up)."""
    import warnings

    import h5py
    import numpy as np

    from breastus_cli import backend

    keras = backend.keras()
    folder = tmp_path_factory.mktemp("weights")
    small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with warnings.catch_warnings():  # Keras's "legacy HDF5" warning: that is the point here
        warnings.simplefilter("ignore", UserWarning)
        small.save(str(folder / "whole.h5"))          # a whole model, legacy HDF5
    small.save_weights(str(folder / "dense.h5"))      # weights, the .h5 layout (layer_names)
    small.save_weights(str(folder / "dense.weights.h5"))  # weights, the .weights.h5 layout
    with h5py.File(folder / "other.h5", "w") as handle:
        handle["x"] = np.zeros(3)
    (folder / "notes.txt").write_text("these are not weights\n")
    shutil.copy(folder / "dense.weights.h5", folder / "renamed.h5")
    return folder


@pytest.mark.parametrize("name, reason", [
    ("notes.txt", "not a Keras weights file (not HDF5)"),
    ("whole.h5", "a whole HDF5 model, not a weights file"),
    ("other.h5", "no 'layer_names'"),
    ("renamed.h5", "the layout of a *.weights.h5 file"),
    ("dense.h5", "does not fit the mobilenetv2 backbone (Layer count mismatch"),
    ("dense.weights.h5", "does not fit the mobilenetv2 backbone (Layer 'Conv1' expected"),
])
def test_weights_that_are_not_backbone_weights_are_one_line_exit_2(weight_files, synth_data,
                                                                   tmp_path, name, reason):
    """``--weights FILE`` given a text file, a whole HDF5 model, an HDF5 file of something
    else, or weights of another model: "internal error" before; now one line, exit 2, naming
    the file and what --weights takes, and no run directory left behind."""
    path = weight_files / name
    run = tmp_path / "run"
    proc = run_cli("train-cls", str(synth_data), "--model", "mobilenetv2", "--weights", str(path),
                   "--img-size", "32", "--epochs", "1", "--run-dir", str(run))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "internal error" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"error: --weights {path}: "), lines[0]
    assert reason in lines[0], lines[0]
    assert lines[0].endswith("--weights takes imagenet, none, a run directory, a .keras model "
                             "or a Keras weights file (.h5 / .weights.h5, as save_weights "
                             "writes)"), lines[0]
    assert not run.exists()


@pytest.mark.parametrize("name", ["dense.h5", "dense.weights.h5"])
def test_keras_weights_files_pass_the_check(weight_files, name):
    from breastus_cli.engine.training.tasks import check_weights_file

    check_weights_file(weight_files / name)  # no error: either layout Keras writes


# ---- workbook values: numbers only in name, names no file system holds -------------------------
def _prepare(tmp_path: Path, rows: list[dict]) -> tuple[object, Path]:
    src = write_breast(tmp_path / "src", rows)
    data = tmp_path / "data"
    return run_cli("prepare", str(src), "--out", str(data)), data


@pytest.mark.parametrize("size", [float("inf"), "inf", float("-inf"), 1e308])
def test_an_infinite_pixel_size_is_unknown_like_nan(tmp_path, size):
    """``Pixel_size`` inf (or one that overflows to inf once turned into mm) went into
    manifest.csv as ``inf`` (areas in mm^2 of inf); it is unknown, as NaN and <= 0 are."""
    proc, data = _prepare(tmp_path, [breast_row(1), breast_row(2, "malignant", Pixel_size=size),
                                     breast_row(3, Pixel_size=float("nan"))])
    assert proc.returncode == 0, proc.stderr
    manifest = pd.read_csv(data / "manifest.csv").set_index("case_id")
    assert manifest.loc["case001", "pixel_size_mm"] == pytest.approx(0.1)
    assert manifest["pixel_size_mm"].isna().tolist() == [False, True, True]


@pytest.mark.parametrize("case_id", [float("inf"), "inf", "-inf", 1e300, "1e300"])
def test_a_case_id_that_is_no_case_number_names_the_case_from_its_file(tmp_path, case_id):
    """CaseID ``inf`` (OverflowError) and ``1e300`` (a case file name of 300 digits: "File
    name too long") were internal errors; they are treated as any CaseID that is not a case
    number: the case is named after its image file, as the reader does for text ids."""
    rows = [breast_row(1), breast_row(2, "malignant", CaseID=case_id, Image_filename="scan_b.png")]
    proc, data = _prepare(tmp_path, rows)
    assert proc.returncode == 0, proc.stderr
    manifest = pd.read_csv(data / "manifest.csv")
    assert sorted(manifest["case_id"]) == ["case001", "scan_b"]
    assert (data / "seg/images/scan_b.png").is_file()


def test_a_case_id_that_is_no_case_number_and_no_usable_file_name_is_skipped(tmp_path):
    """With no usable file name either (one longer than a case id may be), the row is skipped
    and listed, as an invalid CaseID always was."""
    long_stem = "y" * 150
    rows = [breast_row(1), breast_row(2, "malignant", CaseID=1e300,
                                      Image_filename=f"{long_stem}.png")]
    proc, data = _prepare(tmp_path, rows)
    assert proc.returncode == 0, proc.stderr
    skipped = json.loads((data / "prepare.json").read_text())["skipped"]
    assert [(s["case_id"], s["reason"]) for s in skipped] == [("row3", "invalid CaseID")]
    assert pd.read_csv(data / "manifest.csv")["case_id"].tolist() == ["case001"]


@pytest.mark.parametrize("column, what", [("Image_filename", "image"),
                                          ("Mask_tumor_filename", "mask"),
                                          ("Mask_other_filename", "mask")])
def test_a_file_name_too_long_for_the_file_system_is_skipped_and_listed(tmp_path, column, what):
    """A 300-character file name in the workbook: "File name too long" from the first stat,
    an internal error; now the row is skipped and listed with the reason, the others kept."""
    name = "z" * 296 + ".png"
    rows = [breast_row(1), breast_row(2, "malignant", **{column: name})]
    src = write_breast(tmp_path / "src", rows, files=False)
    good = write_breast(tmp_path / "good", [breast_row(1), breast_row(2, "malignant")])
    for path in (good / "BrEaST-Lesions_USG-images_and_masks").iterdir():
        shutil.copy(path, src / "BrEaST-Lesions_USG-images_and_masks" / path.name)
    data = tmp_path / "data"
    proc = run_cli("prepare", str(src), "--out", str(data), "--include-other-masks")
    assert proc.returncode == 0, proc.stderr
    skipped = json.loads((data / "prepare.json").read_text())["skipped"]
    assert [(s["case_id"], s["reason"]) for s in skipped] == [
        ("case002", f"{what} file name too long (300 bytes; file names hold at most 255)")]
    assert skipped[0]["value"] == name[:60] + "..."
    assert pd.read_csv(data / "manifest.csv")["case_id"].tolist() == ["case001"]
    strict = run_cli("prepare", str(src), "--out", str(tmp_path / "strict"), "--strict")
    assert strict.returncode == 2 and len(strict.stderr.strip().splitlines()) <= 2, strict.stderr
    assert "too long" in strict.stderr and "internal error" not in strict.stderr
