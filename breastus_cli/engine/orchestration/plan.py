"""The plan folder that ``cv`` and ``sweep`` share: a plan file and one run directory per part.

    FOLDER/<plan file>       cv.json / sweep.json: what was asked (task, data, settings, parts)
    FOLDER/<part>/           fold-K/, trials/<name>/: a run directory each (resumable)
    FOLDER/<kind>.sbatch     with --slurm: the array job, one task per part

The routine, the same for both: the folder is breastus's own of this kind or empty
(:func:`open_plan`); a new folder gets the plan, an existing one must hold the same plan
(compared on what :attr:`PlanKind.comparable` keeps; the refusal names the first key that
differs) and then resumes; each part is trained unless finished, resumed when partial, started
clean when killed before its first epoch (:func:`train_part`); every unfinished part can be
one task of a Slurm array instead (:func:`submit_parts`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from breastus_cli.atomic import write_json
from breastus_cli.data.combine import only_view
from breastus_cli.engine.apply import loaded_run
from breastus_cli.engine.orchestration.slurm import SlurmOptions, submit, task_command, write_array
from breastus_cli.engine.runs.rundir import MODEL
from breastus_cli.engine.runs.runconfig import CONFIG, RunConfig
from breastus_cli.engine.runs.settings import TrainSettings
from breastus_cli.errors import InputError
from breastus_cli.ownership import claim, ensure_own_or_empty

Plan = dict[str, Any]
#: what a kind may do with a plan that differs from the folder's: given the comparable forms
#: (existing, wanted) and the plans themselves (existing, wanted), the plan the folder goes on
#: with (written when it is not the existing one), or None to refuse
Amend = Callable[[Plan, Plan, Plan, Plan], "Plan | None"]


@dataclass(frozen=True)
class PlanKind:
    """One kind of plan folder (cv, sweep)."""

    name: str  #: ownership's kind, the sbatch file's name and the command: ``breastus cv ...``
    part: str  #: the subcommand that runs one part: ``breastus cv fold DIR --index K``
    file: str  #: the plan file: cv.json
    what: str  #: in messages: "cross-validation"
    hint: str  #: the refusal's hint
    read: Callable[[Path], Plan]  #: the checked reader of the plan file (breastus_cli.runfiles)
    #: what must match for the folder to resume (an older plan filled with today's defaults)
    comparable: Callable[[Plan], Plan]


def differing_key(a: Any, b: Any, prefix: str = "") -> str | None:
    """The first key (dotted, ``train.lr``) whose value differs between ``a`` and ``b``, going
    into nested objects; None when they are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted({*a, *b}, key=str):
            found = differing_key(a.get(key), b.get(key), f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    return None if a == b else prefix.rstrip(".") or "(the plan)"


def _shown(value: Any) -> str:
    """A plan's value as JSON, cut short (the refusal stays one readable line)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    text = text if text.isprintable() else repr(text)
    return text if len(text) <= 40 else text[:37] + "..."


def _value(plan: Plan, key: str) -> Any:
    for part in key.split("."):
        plan = plan.get(part) if isinstance(plan, dict) else None
    return plan


def refusal(kind: PlanKind, out: Path, existing: Plan, wanted: Plan) -> InputError:
    """The one line refusing a plan that differs from the folder's, naming the first key."""
    key = differing_key(existing, wanted) or "(the plan)"
    return InputError(f"{out} holds a different {kind.what}: its {key} is "
                      f"{_shown(_value(existing, key))}, this one asks "
                      f"{_shown(_value(wanted, key))}", hint=kind.hint)


def open_plan(kind: PlanKind, out: Path, plan: Plan, amend: Amend | None = None) -> Plan:
    """The plan ``out`` goes on with: ``plan``, written into a new (or empty) folder; else the
    folder's own plan when it is the same one (a resume); else what ``amend`` makes of the two;
    else exit 2 naming the first key that differs. A folder that is not breastus's own of this
    kind (nor one holding only its combined dataset) is refused; nothing there is touched."""
    out = Path(out)
    if not only_view(out):  # several DATA: their combined dataset is already in out/data
        ensure_own_or_empty(out, kind.name)
    path = out / kind.file
    if not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        write_json(path, plan)
        return plan
    existing = kind.read(path)
    old, new = kind.comparable(existing), kind.comparable(plan)
    if old == new:
        return existing
    amended = amend(old, new, existing, plan) if amend is not None else None
    if amended is None:
        raise refusal(kind, out, old, new)
    if amended is not existing:
        write_json(path, amended)
    return amended


def read_own_plan(kind: PlanKind, out: Path) -> Plan:
    """The plan of ``out`` for a command that works inside it (one part, collecting): the
    folder is breastus's own of this kind, else exit 2."""
    claim(out, kind.name, option="")  # someone else's folder, or a link out of it: exit 2
    if not (Path(out) / kind.file).is_file():
        raise InputError(f"{out} is not a {kind.what} folder (no {kind.file})")
    return kind.read(Path(out) / kind.file)


def part_state(run_dir: Path) -> str:
    """A part's run directory: ``finished``, ``partial`` (resumable) or ``new``."""
    if not (Path(run_dir) / CONFIG).is_file():
        return "new"
    return "finished" if RunConfig.read(run_dir).finished else "partial"


def train_part(settings: TrainSettings, task: str) -> bool:
    """Train the part whose run directory is ``settings.run_dir`` unless it finished: resume a
    partial one, start clean one killed before its first epoch. True when it trained now."""
    # lazy: training.tasks and training.train import TensorFlow when imported
    from breastus_cli.engine.training import tasks
    from breastus_cli.engine.training.train import train

    run = Path(settings.run_dir)
    state = part_state(run)
    if state == "finished":
        return False
    if state == "new" and run.exists():
        shutil.rmtree(run)  # killed before its first epoch: start clean
    result = train(settings, tasks.task_for(task), resume=state == "partial")
    if result.model is not None:  # the part's calibration and evaluation skip reading it again
        loaded_run.remember(run / MODEL, result.model)
    return True


def part_command(kind: PlanKind, out: Path) -> list[str]:
    """The command of one part, its index to follow: ``python -m breastus_cli cv fold DIR
    --index``."""
    return task_command(kind.name, kind.part, str(Path(out).resolve()), "--index")


def submit_parts(kind: PlanKind, out: Path, n_parts: int,
                 options: SlurmOptions) -> tuple[Path, str | None]:
    """``out/<kind>.sbatch``, an array of one task per part, submitted unless ``--dry-run``:
    (its path, the job id or None)."""
    path = write_array(out, kind.name, n_parts, part_command(kind, out), options)
    return path, None if options.dry_run else submit(path)
