"""Shared fixtures: tiny hand-built source layouts and a session-wide synthetic dataset."""

from __future__ import annotations

import os
import subprocess as _subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import breastus_cli.backend  # noqa: E402,F401  sets TF_USE_LEGACY_KERAS / SM_FRAMEWORK for this
# process, as the CLI does, before any in-process command saves and restores the environment

if os.environ.get("PYTEST_XDIST_WORKER") and not os.environ.get("BREASTUS_THREADS"):
    # each pytest-xdist worker (and every breastus it starts) takes its share of the cores, as
    # parallel sweep trials do: TensorFlow's thread pools then do not fight over them (measured:
    # the two heaviest test files, 175 s -> 162 s of wall time on 2 cores with 2 workers)
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    os.environ["BREASTUS_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // _workers))

REPO = Path(__file__).resolve().parents[1]
SHARED_BREAST = REPO.parent / "shared" / "data" / "BrEaST-Lesions_USG"
SHEET = "BrEaST-Lesions-USG clinical dat"
COLUMNS = [
    "CaseID", "Image_filename", "Mask_tumor_filename", "Mask_other_filename", "Pixel_size", "Age",
    "Tissue_composition", "Signs", "Symptoms", "Shape", "Margin", "Echogenicity",
    "Posterior_features", "Halo", "Calcifications", "Skin_thickening", "Interpretation",
    "BIRADS", "Verification", "Diagnosis", "Classification",
]


def rgba_image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(20, 200, size=(height, width, 3), dtype=np.uint8)
    alpha = np.full((height, width, 1), 255, dtype=np.uint8)
    return Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA")


def rgba_mask(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    array = np.zeros((height, width, 4), dtype=np.uint8)
    x0, y0, x1, y1 = box
    array[y0:y1, x0:x1] = 255
    return Image.fromarray(array, "RGBA")


def write_breast(root: Path, rows: list[dict], files: bool = True) -> Path:
    """Write a BrEaST-layout source with the given workbook rows; create the files they name
    (40x30 RGBA images and masks) unless ``files`` is False."""
    folder = root / "BrEaST-Lesions_USG-images_and_masks"
    folder.mkdir(parents=True, exist_ok=True)
    full = [{c: row.get(c) for c in COLUMNS} for row in rows]
    if files:
        for i, row in enumerate(rows):
            name = row.get("Image_filename")
            if name and "/" not in str(name):
                rgba_image(40, 30, i).save(folder / name)
            for key in ("Mask_tumor_filename", "Mask_other_filename"):
                for part in str(row.get(key) or "").split("&"):
                    if part and "/" not in part:
                        rgba_mask(40, 30, (5, 5, 20, 15)).save(folder / part)
    with pd.ExcelWriter(root / "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx") as writer:
        pd.DataFrame(full, columns=COLUMNS).to_excel(writer, sheet_name=SHEET, index=False)
        pd.DataFrame({"Column": COLUMNS, "Description": COLUMNS}).to_excel(
            writer, sheet_name="Data Dictionary", index=False)
    return root


def breast_row(n: int, label: str = "benign", **over) -> dict:
    row = {
        "CaseID": n, "Image_filename": f"case{n:03d}.png",
        "Mask_tumor_filename": f"case{n:03d}_tumor.png" if label != "normal" else None,
        "Pixel_size": 0.01, "Age": 50, "BIRADS": 3, "Classification": label,
    }
    row.update(over)
    return row


#: ``run_cli`` runs the command in this process (Typer app, captured stdout/stderr) unless
#: BREASTUS_TEST_SUBPROCESS=1 or a test asks for ``subprocess=True``: importing TensorFlow in a
#: fresh process costs about 3.4 s a call. The true end-to-end tests (the installed entry
#: point, signals, kill and resume, Slurm) pass ``subprocess=True``.
IN_PROCESS = os.environ.get("BREASTUS_TEST_SUBPROCESS", "0") != "1"


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: int = 600, subprocess: bool = False) -> _subprocess.CompletedProcess:
    """Run ``breastus ARGS``: the real console script in a child process, or in-process."""
    if IN_PROCESS and not subprocess:
        return _run_in_process([str(a) for a in args], cwd, env)
    exe = Path(sys.executable).with_name("breastus")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "breastus_cli"]
    full_env = dict(os.environ)
    full_env.pop("SLURM_JOB_ID", None)
    full_env.update(env or {})
    return _subprocess.run(command + list(args), cwd=cwd, env=full_env, capture_output=True,
                           text=True, timeout=timeout)


def _run_in_process(args: list[str], cwd: Path | None,
                    env: dict | None) -> _subprocess.CompletedProcess:
    """``breastus_cli.cli.app.main(args)`` with the process state a child would have: its own
    argv, cwd, environment, output streams, signal handlers and console flags, all restored."""
    import contextlib
    import io
    import signal

    from breastus_cli.cli import app as cli_app
    from breastus_cli.reports import console

    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        os.environ.pop("SLURM_JOB_ID", None)
        os.environ.update({k: str(v) for k, v in (env or {}).items()})
        if cwd is not None:
            os.chdir(cwd)
        sys.argv = ["breastus", *args]
        _reset_console(console.state)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli_app.main(args)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
        _reset_console(console.state)
        _reset_keras()
    return _subprocess.CompletedProcess(["breastus", *args], code, out.getvalue(),
                                        err.getvalue())


def _reset_console(state) -> None:
    state.quiet = state.verbose = state.debug = False


def _reset_keras() -> None:
    """Drop the models and graphs an in-process command left behind (memory stays flat)."""
    if "tf_keras" in sys.modules:
        keras = sys.modules["tf_keras"]
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy("float32")


def built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(path)`` once for the whole test session, then ``path`` (read-only for tests).

    ``make test`` runs pytest-xdist workers, each with its own session fixtures: the first
    worker to ask builds ``name`` in the folder the workers share while the others wait on a
    file lock, then every worker reuses it. A failed build leaves no ``.done`` mark, so the
    next worker that asks builds it again (and fails the same way, with its message)."""
    import shutil

    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # pytest-of-USER/pytest-N: the same for every worker of a run
    target = root / "built" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    done = root / "built" / f"{name.replace('/', '_')}.done"
    with FileLock(str(done) + ".lock"):
        if not done.is_file():
            if target.exists():
                shutil.rmtree(target)
            build(target)
            done.touch()
    return target


@pytest.fixture(scope="session")
def synth_source(tmp_path_factory) -> Path:
    """A synthetic BrEaST source (60 cases), made once per test session."""
    from breastus_cli.data.synth import SynthSettings, make_synthetic_breast

    return built_once(tmp_path_factory, "synth/src", lambda out: make_synthetic_breast(
        SynthSettings(out=out, cases=60, seed=7, min_side=96, max_side=160)))


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory, synth_source) -> Path:
    """The synthetic source, prepared and split (read-only for tests: copy before changing)."""
    from breastus_cli.data.prepare import PrepareSettings, prepare
    from breastus_cli.data.split import SplitSettings, split_dataset

    def build(data: Path) -> None:
        prepare(PrepareSettings(source=synth_source, out=data))
        split_dataset(SplitSettings(data=data, seed=42))

    return built_once(tmp_path_factory, "prepared/data", build)


def make_dataset(root: Path, *, cases: int, seed: int, sides: tuple[int, int],
                 ratio: tuple[float, float, float], split_seed: int, folds: int = 0) -> Path:
    """A synthetic BrEaST source in ROOT/src, prepared and split into ROOT/data."""
    from breastus_cli.data.prepare import PrepareSettings, prepare
    from breastus_cli.data.split import SplitSettings, split_dataset
    from breastus_cli.data.synth import SynthSettings, make_synthetic_breast

    make_synthetic_breast(SynthSettings(out=root / "src", cases=cases, seed=seed,
                                        min_side=sides[0], max_side=sides[1]))
    prepare(PrepareSettings(source=root / "src", out=root / "data"))
    split_dataset(SplitSettings(data=root / "data", ratio=ratio, seed=split_seed,
                                folds=folds or None))
    return root / "data"


def write_dicom(path: Path, frames: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 8,
                signed: bool = False, region_cm: float | None = None,
                spacing_mm: float | None = None, **elements) -> Path:
    """Write an ultrasound DICOM with pydicom: ``frames`` (n, rows, columns[, 3]) stored in
    ``bits`` bits (8 -> 8 allocated, else 16); pixel size from an ultrasound region (cm) or
    Pixel Spacing (mm); ``elements`` are extra keywords (WindowCenter, ...)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    rgb = photometric not in ("MONOCHROME1", "MONOCHROME2")
    ds.Rows, ds.Columns = frames.shape[1], frames.shape[2]
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = photometric
    if rgb:
        ds.PlanarConfiguration = 0
    allocated = 8 if bits <= 8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, bits, bits - 1
    ds.PixelRepresentation = int(signed)
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    if region_cm is not None:
        region = Dataset()
        region.PhysicalUnitsXDirection = 3
        region.PhysicalUnitsYDirection = 3
        region.PhysicalDeltaX = region_cm
        region.PhysicalDeltaY = region_cm
        ds.SequenceOfUltrasoundRegions = [region]
    if spacing_mm is not None:
        ds.PixelSpacing = [spacing_mm, spacing_mm]
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    dtype = f"{'i' if signed else 'u'}{allocated // 8}"
    data = frames if len(frames) > 1 else frames[0]
    ds.PixelData = np.ascontiguousarray(data, dtype=dtype).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def require_shared_breast() -> Path:
    if not (SHARED_BREAST / "BrEaST-Lesions_USG-images_and_masks").is_dir():
        pytest.skip(f"real BrEaST data not present at {SHARED_BREAST} (a fresh clone has no ../shared)")
    return SHARED_BREAST


@pytest.fixture(scope="session")
def real_breast(tmp_path_factory) -> Path:
    """The real BrEaST data prepared once for the session (read-only: copy before splitting or
    training); skipped when ../shared has no BrEaST."""
    from breastus_cli.data.prepare import PrepareSettings, prepare

    source = require_shared_breast()
    return built_once(tmp_path_factory, "real/breast",
                      lambda out: prepare(PrepareSettings(source=source, out=out)))


@pytest.fixture(scope="session")
def learn_data(tmp_path_factory) -> Path:
    """160 synthetic cases split 60/15/25 (and 3 folds): a large test share, so learning
    checks on cases the model never saw are not luck. Shared by the classification and
    segmentation tests; read-only."""
    return built_once(tmp_path_factory, "learn", lambda root: make_dataset(
        root, cases=160, seed=11, sides=(96, 160), ratio=(0.6, 0.15, 0.25), split_seed=42,
        folds=3)) / "data"


FAST_CLS = ["--model", "smallcnn", "--weights", "none", "--img-size", "64", "--batch-size", "16"]
FAST_SEG = ["--weights", "none", "--img-size", "64", "--batch-size", "8"]
#: where the encoder does not matter (file handling, pooling): U-Net on resnet18 builds in 1.5 s
#: against EfficientNetB2's 9.4 s (64 px, 2 cores)
LIGHT_SEG = [*FAST_SEG, "--backbone", "resnet18"]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _read_only(folder: Path):
    """Yield ``folder`` to the tests and fail the session if any test changed it: shared trained
    runs are read-only (tests that evaluate, export or write a threshold take ``copy_run``)."""
    before = _snapshot(folder)
    yield folder
    after = _snapshot(folder)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a test changed the shared run {folder.name}: {changed[:10]}"


def copy_run(run: Path, dest: Path) -> Path:
    """A private, writable copy of a shared trained run."""
    import shutil

    return Path(shutil.copytree(run, dest))


@pytest.fixture(scope="session")
def cls_run(learn_data, tmp_path_factory):
    def build(run: Path) -> None:
        proc = run_cli("train-cls", str(learn_data), *FAST_CLS, "--epochs", "10", "--lr", "1e-3",
                       "--run-dir", str(run))
        assert proc.returncode == 0, proc.stderr
        # its feature statistics (engine/apply/ood.py) stored once here: predict would store
        # them on first use, and the shared run must stay unchanged by the tests
        from breastus_cli.engine.apply import ood

        ood.ensure(run)

    yield from _read_only(built_once(tmp_path_factory, "runs/smallcnn", build))


@pytest.fixture(scope="session")
def seg_run(learn_data, tmp_path_factory):
    def build(run: Path) -> None:
        proc = run_cli("train-seg", str(learn_data), *FAST_SEG, "--epochs", "6",
                       "--run-dir", str(run))
        assert proc.returncode == 0, proc.stderr

    yield from _read_only(built_once(tmp_path_factory, "segruns/unet", build))


@pytest.fixture(scope="session")
def cls_evaluated(cls_run, tmp_path_factory) -> Path:
    """A copy of ``cls_run`` evaluated once on its test split (eval-test/ written)."""
    def build(run: Path) -> None:
        copy_run(cls_run, run)
        proc = run_cli("evaluate", str(run))
        assert proc.returncode == 0, proc.stderr

    return built_once(tmp_path_factory, "evaluated/smallcnn", build)


@pytest.fixture(scope="session")
def seg_evaluated(seg_run, tmp_path_factory):
    """A copy of ``seg_run`` evaluated once on its test split (eval-test/ written, the mask
    post-processing chosen on its validation cases); read-only: the tests that read an
    evaluation share it instead of evaluating the U-Net again."""
    def build(run: Path) -> None:
        copy_run(seg_run, run)
        proc = run_cli("evaluate", str(run))
        assert proc.returncode == 0, proc.stderr
        assert "Mean IoU" in proc.stdout

    yield from _read_only(built_once(tmp_path_factory, "evaluated/unet", build))


@pytest.fixture(scope="session")
def cv_cls(learn_data, tmp_path_factory):
    """A 3-fold smallcnn cross-validation of ``learn_data`` (read-only)."""
    def build(out: Path) -> None:
        proc = run_cli("cv", "cls", str(learn_data), "--folds", "3", *FAST_CLS, "--epochs", "3",
                       "--lr", "1e-3", "--out", str(out), "--bootstrap", "300")
        assert proc.returncode == 0, proc.stderr
        assert "pooled" in proc.stdout

    yield from _read_only(built_once(tmp_path_factory, "cv/cls", build))


@pytest.fixture(scope="session")
def cv_seg(learn_data, tmp_path_factory):
    """A 3-fold U-Net (resnet18) cross-validation of ``learn_data`` (read-only)."""
    def build(out: Path) -> None:
        proc = run_cli("cv", "seg", str(learn_data), "--folds", "3", *LIGHT_SEG, "--epochs",
                       "1", "--out", str(out), "--bootstrap", "200", "--batch-size", "16")
        assert proc.returncode == 0, proc.stderr

    yield from _read_only(built_once(tmp_path_factory, "cv/seg", build))


#: tests that train or need a trained run are ``slow``: ``make test-fast`` (-m "not slow")
#: leaves them out; ``make test`` runs everything
_TRAINED = {"cls_run", "seg_run", "cls_evaluated", "seg_evaluated", "learn_data", "cv_cls",
            "cv_seg"}
_SLOW_FILES = {"test_cv.py", "test_cv_seg.py", "test_sweep.py", "test_export.py", "test_roi.py",
               "test_train_seg.py", "test_train_cls.py", "test_predict.py"}


#: the files that take longest, longest first, each starting on the fixture it builds for the
#: others (seg_run, cv_cls/cv_seg, cls_run): ``make test`` runs them before the many short
#: files (pytest-xdist --dist loadfile --no-loadscope-reorder hands files out in this order),
#: so no worker sits idle on another's build lock and none is left alone with a long file at
#: the end. The second worker starts on test_lite.py, which needs only the small synthetic set,
#: instead of waiting for the first to build ``learn_data`` (every file after it needs that).
#: The rest follow in name order.
HEAVY_FIRST = ("test_train_seg.py", "test_lite.py", "test_cv.py", "test_cv_seg.py",
               "test_train_cls.py", "test_sweep.py", "test_predict.py", "test_export.py",
               "test_fusion.py", "test_combine.py", "test_api.py", "test_ensemble.py",
               "test_sweep_slurm.py", "test_roi.py", "test_inference_path.py",
               "test_settings_config.py", "test_safe_load.py", "test_descriptors.py",
               "test_cross_dataset.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept
    for item in items:
        if _TRAINED & set(getattr(item, "fixturenames", ())) or item.path.name in _SLOW_FILES:
            item.add_marker(pytest.mark.slow)
