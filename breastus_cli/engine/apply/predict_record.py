"""predict.json, the provenance record of a predict folder: which model files (with their
SHA-256), thresholds and settings wrote it; compared by --resume and --merge."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from breastus_cli import __version__
from breastus_cli.data.manifest import file_sha256
from breastus_cli.engine.apply.fusion import FUSION
from breastus_cli.engine.apply.tflite_model import EXPORT_DIR, TFLITE_EXPORTS, tflite_export
from breastus_cli.engine.apply.predict_settings import PredictSettings
from breastus_cli.engine.runs.cvdir import fold_runs, is_cv_dir
from breastus_cli.ownership import PREDICT_FORMAT


def model_record(source: Path | None, engine: str) -> dict[str, Any] | None:
    """Which model file a run directory (or .tflite) gave, with its SHA-256."""
    if source is None:
        return None
    source = Path(source)
    if is_cv_dir(source):  # a fold ensemble: every fold's model, and one hash over them
        folds = [model_record(run, engine) for run in fold_runs(source)[1]]
        hashes = [str((f or {}).get("sha256")) for f in folds]
        combined = (hashlib.sha256("\n".join(hashes).encode()).hexdigest()
                    if all(f and f.get("sha256") for f in folds) else None)
        return {"path": str(source.resolve()), "ensemble": True, "sha256": combined,
                "folds": folds}
    if source.suffix == ".tflite":
        used = source
    elif engine == "tflite":
        used = tflite_export(source) or source / EXPORT_DIR / TFLITE_EXPORTS[0]
    else:
        used = source / "model.keras"
    return {"path": str(source.resolve()), "file": str(used.resolve()),
            "sha256": file_sha256(used) if used.is_file() else None}


def record(settings: PredictSettings, threshold: float | None,
            fused: Any = None, partner: Path | None = None) -> dict[str, Any]:
    """predict.json: what wrote OUT (checked by --resume and --merge)."""
    return {"format": PREDICT_FORMAT, "breastus_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "models": {"cls": model_record(settings.cls_run, settings.engine),
                       "seg": model_record(settings.seg_run, settings.engine)},
            "threshold": threshold, "seg_threshold": settings.seg_threshold,
            "seg_postprocess": settings.seg_postprocess,
            "engine": settings.engine, "tta": settings.tta,
            "fusion": None if fused is None else {
                "path": str(Path(settings.cls_run or "") / FUSION),
                "sha256": file_sha256(Path(settings.cls_run or "") / FUSION),
                "threshold": fused.threshold,
                "partner": model_record(partner, settings.engine)},
            "num_parts": settings.num_parts,
            "part_id": settings.part_id,
            "inputs": [str(Path(i).expanduser().resolve()) if Path(i).expanduser().exists()
                       else str(i) for i in settings.inputs]}


def differences(old: dict[str, Any], new: dict[str, Any], part: bool) -> list[str]:
    """What differs between two predict.json records (models, thresholds, engine, shard)."""
    found = []
    for task, option in (("cls", "--cls-run"), ("seg", "--seg-run")):
        a, b = (old.get("models") or {}).get(task), (new.get("models") or {}).get(task)
        if (a or {}).get("sha256") != (b or {}).get("sha256"):
            found.append(f"{option} {(a or {}).get('path') or 'none'} -> "
                         f"{(b or {}).get('path') or 'none'}")
    for key, option in (("threshold", "--threshold"), ("seg_threshold", "--seg-threshold"),
                        ("engine", "--engine")) + ((("num_parts", "--num-parts"),
                                                     ("part_id", "--part-id")) if part else ()):
        a, b = old.get(key), new.get(key)
        same = (a == b if not (isinstance(a, (int, float)) and isinstance(b, (int, float)))
                else abs(float(a) - float(b)) < 1e-9)
        if not same:
            found.append(f"{option} {a} -> {b}")
    tta = (old.get("tta") or "none", new.get("tta") or "none")  # none before --tta existed
    if tta[0] != tta[1]:
        found.append(f"--tta {tta[0]} -> {tta[1]}")
    kept = [(r.get("seg_postprocess") or "none") if r.get("models", {}).get("seg") else None
            for r in (old, new)]  # none before post-processing existed
    if kept[0] != kept[1]:
        found.append(f"--seg-postprocess {kept[0]} -> {kept[1]}")
    fused = [(r.get("fusion") or {}).get("sha256") for r in (old, new)]
    if fused[0] != fused[1]:
        found.append("the classifier's fusion.json " + ("changed" if all(fused) else
                                                        "added" if fused[1] else "removed"))
    partners = [(((r.get("fusion") or {}).get("partner")) or {}).get("sha256") for r in (old, new)]
    if fused[0] == fused[1] and partners[0] != partners[1]:  # e.g. its TFLite export redone
        found.append("the fusion's second classifier changed")
    return found
