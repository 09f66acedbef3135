"""``breastus predict --merge``: join the part folders of a sharded prediction run into one,
every check made before --out is touched."""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path
from typing import Any

from breastus_cli.atomic import atomic_path, write_json
from breastus_cli.engine.apply.predict_output import (
    COLUMNS, ERROR_COLUMNS, ERRORS, OWN_FOLDERS, PREDICT_JSON, PREDICTIONS, check_out,
    clear_out, intact_rows,
)
from breastus_cli.engine.apply.predict_record import differences
from breastus_cli.engine.apply.predict_settings import PredictResult
from breastus_cli.errors import InputError, UsageError
from breastus_cli.ownership import read_marker
from breastus_cli.runfiles import check_predict


def _check_parts(parts: list[Path], records: list[dict[str, Any]]) -> None:
    """The parts come from one sharded run: same models and settings, each part once."""
    first = records[0]
    for part, record in zip(parts[1:], records[1:]):
        changed = differences(first, record, part=False)
        if record.get("num_parts") != first.get("num_parts"):
            changed.append(f"--num-parts {first.get('num_parts')} -> {record.get('num_parts')}")
        if changed:
            raise InputError(f"{part} was not predicted like {parts[0]} ({'; '.join(changed)}): "
                             "parts must come from one run split with --num-parts")
    total = int(first.get("num_parts") or 1)
    seen: dict[int, Path] = {}
    for part, record in zip(parts, records):
        k = int(record.get("part_id") or 1)
        if k in seen:
            raise InputError(f"part {k} of {total} is given twice ({seen[k]} and {part})")
        seen[k] = part
    missing = [str(k) for k in range(1, total + 1) if k not in seen]
    if missing:
        raise InputError(f"part {', '.join(missing)} of {total} "
                         f"{'is' if len(missing) == 1 else 'are'} missing: give all {total} "
                         "part folders")


def _part_file(part: Path, value: str, folder: str) -> Path | str:
    """A mask/overlay/explain file named by a part's predictions.csv, relative to the part, or
    why it is not taken: only files inside the part's own ``folder`` are."""
    root = part.resolve()
    try:
        rel = (part / value).resolve().relative_to(root)
    except (ValueError, OSError):
        return f"{value} lies outside the part folder {part}"
    if len(rel.parts) != 2 or rel.parts[0] != folder:
        return f"{value} is not in the part's {folder}/ folder ({part})"
    if not (root / rel).is_file():
        return f"{value} is missing in {part}"
    return rel


def _frame_key(row: dict[str, str]) -> tuple[str, int]:
    frame = str(row.get("frame") or "")
    return str(row.get("path", "")), int(frame) if frame.isdigit() else -1


def merge(parts: list[Path], out: Path, overwrite: bool = False) -> PredictResult:
    """Join the outputs of ``--num-parts`` runs into one folder (rows sorted by path, frame).

    Every check runs before --out is touched: each part is a predict folder (predict.json),
    the parts come from one run and are all there, no row appears twice. Files are taken only
    from inside each part's masks/, overlays/, explain/; any other path is an error row.
    """
    start = time.perf_counter()
    out = Path(out)
    parts = [Path(p) for p in parts]
    records = []
    for part in parts:
        if not (part / PREDICTIONS).is_file():
            raise InputError(f"{part} holds no {PREDICTIONS}: not a predict output folder")
        record = read_marker(part, "predict")
        if record is None:
            raise InputError(f"{part} holds no {PREDICT_JSON}: cannot check that it belongs "
                             "with the other parts", hint="predict the parts again with this "
                                                          "version of breastus")
        records.append(check_predict(part / PREDICT_JSON, record))
    _check_parts(parts, records)
    for part in parts:
        real, target = part.resolve(), out.resolve()
        if target == real or real in target.parents:
            raise UsageError(f"--out {out} lies in the part folder {part}: choose another folder")
    check_out(out, resume=False, overwrite=overwrite, inputs=tuple(parts))

    rows: list[dict[str, str]] = []
    errors: list[dict[str, str]] = []
    copies: list[tuple[Path, Path]] = []
    seen: dict[tuple[str, str], Path] = {}
    for part in parts:
        for row in intact_rows(part / PREDICTIONS)[0]:
            key = (row.get("path", ""), row.get("frame", ""))
            if key in seen:
                raise InputError(f"{key[0]}" + (f" frame {key[1]}" if key[1] else "") +
                                 f" appears twice ({seen[key]} and {part}): the parts overlap")
            seen[key] = part
            for column, folder in OWN_FOLDERS.items():
                if not row.get(column):
                    continue
                found = _part_file(part, row[column], folder)
                if isinstance(found, str):
                    errors.append({"path": row.get("path", ""), "reason": f"{column}: {found}"})
                    row[column] = ""
                else:
                    copies.append((part.resolve() / found, found))
                    row[column] = found.as_posix()
            rows.append(row)
        errors.extend(intact_rows(part / ERRORS)[0])
    rows.sort(key=_frame_key)
    errors.sort(key=lambda r: str(r.get("path", "")))

    # Every check passed: only now is --out written.
    if overwrite:
        clear_out(out)
    out.mkdir(parents=True, exist_ok=True)
    merged = dict(records[0], created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), num_parts=1,
                  part_id=1, merged_from=[str(p.resolve()) for p in parts])
    write_json(out / PREDICT_JSON, merged)
    for source, rel in copies:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out / rel)
    for name, columns, data in ((PREDICTIONS, COLUMNS, rows), (ERRORS, ERROR_COLUMNS, errors)):
        with atomic_path(out / name) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(data)
    return PredictResult(out=out, files=len({r["path"] for r in rows} | {e["path"] for e in errors}),
                         rows=len(rows), errors=len(errors),
                         malignant=sum(1 for r in rows if r.get("label") == "malignant"),
                         skipped_done=0, seconds=round(time.perf_counter() - start, 2),
                         images_per_second=0.0)
