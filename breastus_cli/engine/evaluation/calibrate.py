"""``breastus calibrate``: the choices a run makes on its own validation cases, as one named
step that a user sees and can re-run (nnU-Net's ``determine_postprocessing``, for us):

    classifier  RUN/threshold.json    the decision threshold that reaches --target-sensitivity
                                      on the validation cases (predict, export, evaluate use it)
                RUN/fusion.json       --fusion descriptors --seg-run R [--fuse-with R2]: the
                                      fused classifier (descriptor model on the training cases,
                                      combiner and its threshold on the validation cases)
    segmenter   RUN/postprocess.json  the mask post-processing (:func:`postprocess.choose`)

``train-seg`` calls it at its end, ``cv`` for each fold, ``evaluate`` when given
--target-sensitivity or --fusion (and says so); ``evaluate`` without them only reads the run.
The same options on the same run write the same bytes: it may be re-run at will.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from breastus_cli.atomic import write_json
from breastus_cli.engine.apply import fusion, loaded_run, ood, postprocess
from breastus_cli.engine.apply.images import to_original_size
from breastus_cli.engine.apply.inference import open_run
from breastus_cli.engine.apply.masks import mask_cache
from breastus_cli.engine.evaluation.eval_cases import split_cases
from breastus_cli.engine.evaluation.eval_settings import Calibration, CalibrateSettings
from breastus_cli.engine.evaluation.evaluate_cls import (
    check_seg_run, cls_images, p_malignant, partner_scores,
)
from breastus_cli.engine.evaluation.evaluate_seg import truth_mask
from breastus_cli.engine.runs.provenance import CHOSEN_ON_VALIDATION
from breastus_cli.engine.runs.rundir import (
    MODEL, THRESHOLD, check_same_split, read_threshold, run_cases, same_dataset,
    split_fingerprint,
)
from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.engine.stats.metrics import threshold_for_sensitivity
from breastus_cli.errors import InputError, UsageError
from breastus_cli.ownership import claim

log = logging.getLogger("breastus")

#: what ``breastus calibrate`` chooses for each task (its help and its refusals say it)
CHOICES = {"cls": "the decision threshold for --target-sensitivity (threshold.json) and/or the "
                  "fused classifier with --fusion descriptors --seg-run R (fusion.json)",
           "seg": "the mask post-processing (postprocess.json)"}


def needed(settings: CalibrateSettings, task: str) -> bool:
    """Whether ``settings`` ask anything of a run of ``task``: a segmenter always has its
    post-processing to choose; a classifier only with --target-sensitivity or --fusion."""
    return task == "seg" or settings.target_sensitivity is not None \
        or settings.fusion != "none"


def calibrate(settings: CalibrateSettings, work_dir: Path | None = None) -> Calibration:
    """Choose on the run's validation cases what :data:`CHOICES` lists, write those run files
    and return what was chosen. ``work_dir``: where lesion crops of the validation cases go
    (evaluate passes its eval folder); by default a temporary folder, removed after."""
    settings.validate()
    start = time.perf_counter()
    config = RunConfig.read(settings.run_dir)
    claim(settings.run_dir, "run", option="")  # breastus's own run, no link leading out of it
    task = config.task
    if task not in CHOICES:
        raise InputError(f"{settings.run_dir}: unknown task '{task}' in config.json")
    if task == "seg" and needed(settings, "cls"):
        raise UsageError(f"{settings.run_dir} is a segmenter: calibrating it chooses "
                         f"{CHOICES['seg']}; --target-sensitivity and --fusion are for "
                         "classifiers")
    if not needed(settings, task):
        raise UsageError(f"nothing to calibrate: for a classifier, give {CHOICES['cls']}")
    with mask_cache(), _work(work_dir) as work:
        result = (_calibrate_seg(settings, config) if task == "seg"
                  else _calibrate_cls(settings, config, work))
    result.seconds = round(time.perf_counter() - start, 2)
    return result


def after_training(run_dir: Path, task: str, model: Any = None) -> Calibration | None:
    """What a finished training ends with (``train-cls``, ``train-seg``, ``api.train``): a
    segmenter's mask post-processing chosen (returned); a classifier's feature statistics for
    predict's ``ood_score`` stored (:func:`ood.store_after_training`; None returned: its
    threshold needs a target sensitivity, ``breastus calibrate RUN --target-sensitivity S``). A
    segmenter whose validation cases cannot give a choice keeps its masks as they are: a
    warning, the trained run is kept as it is. ``model``: the training's in-memory model of
    RUN/model.keras (``TrainResult.model``), used instead of reading the file again."""
    if model is not None:
        loaded_run.remember(Path(run_dir) / MODEL, model)
    if task != "seg":
        ood.store_after_training(run_dir)
        return None
    try:
        return calibrate(CalibrateSettings(run_dir=Path(run_dir)))
    except InputError as exc:
        log.warning("%s: trained, not calibrated (masks stay as they are): %s", run_dir,
                    exc.message)
        return None


@contextmanager
def _work(folder: Path | None) -> Iterator[Path]:
    if folder is not None:
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory(prefix="breastus-calibrate-") as tmp:
        yield Path(tmp)


def _data(settings: CalibrateSettings, config: RunConfig) -> tuple[Path, bool]:
    """The dataset whose validation cases decide, and whether it is another than the run's."""
    data = Path(settings.data or config.data_path or "")
    if not data.is_dir():
        raise InputError(f"dataset {data} recorded in {settings.run_dir}/config.json not "
                         "found; give it with --data")
    check_same_split(settings.run_dir, config, data)
    other = settings.data is not None and not same_dataset(data, config.data)
    return data, other


def _written(run_dir: Path, name: str, content: dict[str, Any], result: Calibration) -> None:
    result.replaced += [name] if (Path(run_dir) / name).is_file() else []
    write_json(Path(run_dir) / name, content)
    result.written.append(name)


def _calibrate_cls(settings: CalibrateSettings, config: RunConfig, work: Path) -> Calibration:
    """A classifier's threshold (and fused classifier) on its validation cases."""
    run_dir = Path(settings.run_dir)
    data, other = _data(settings, config)
    roi = config.roi_margin is not None  # a lesion-centred classifier
    check_seg_run(settings.seg_run, roi, settings.fusion != "none", data, "val")
    source = "seg" if roi and settings.seg_run is not None else "gt"
    val = split_cases(data, "val", config)
    val = val[val["label"].isin(["benign", "malignant"])].reset_index(drop=True)
    if len(val) == 0:
        raise InputError(f"no case in split 'val' of {data}: nothing to calibrate on")
    loaded = open_run(run_dir, "cls", config=config, tta=settings.tta)
    images, _ = cls_images(val, config, settings, work, "val", source)
    p_val = p_malignant(loaded, images, settings.batch_size)
    result = Calibration(run_dir=run_dir, task="cls")
    target = settings.target_sensitivity
    if target is not None:
        y_val = (val["label"] == "malignant").to_numpy().astype(int)
        if y_val.sum() == 0:
            raise InputError("--target-sensitivity needs malignant cases in the validation split")
        threshold = threshold_for_sensitivity(y_val, p_val, target)
        sensitivity = float(((p_val >= threshold) & (y_val == 1)).sum() / y_val.sum())
        result.threshold = {
            "threshold": threshold,
            "source": f"chosen on validation cases for target sensitivity {target:g}",
            "target_sensitivity": target, "chosen_on": CHOSEN_ON_VALIDATION,
            "validation_sensitivity": sensitivity, "validation_n": int(len(y_val)),
            "data": str(data),
            "split_sha256": split_fingerprint(data, config.fold is not None)}
        # predict uses this threshold for the run from now on (its label column); one chosen
        # on test-time-augmented scores, or on another dataset's validation cases, belongs to
        # that evaluation only
        if settings.tta == "none" and not other:
            _written(run_dir, THRESHOLD, result.threshold, result)
        else:
            result.not_written = (f"{THRESHOLD} not written: the threshold was chosen on "
                                  + ("test-time-augmented scores" if settings.tta != "none"
                                     else f"another dataset's validation cases ({data})"))
    if settings.fusion != "none":
        assert settings.seg_run is not None  # CalibrateSettings.validate
        partner = None if settings.fuse_with is None else Path(settings.fuse_with)
        p_partner = None
        if partner is not None:
            # the combiner is fitted on the validation cases and scores the test cases: the
            # second classifier must have trained on neither
            test = split_cases(data, "test", config)
            scores, _ = partner_scores(partner, {"val": val}, settings, work, data, config,
                                       also_unseen=[test])
            p_partner = scores["val"]
        existed = (run_dir / fusion.FUSION).is_file()
        # fitted on this run's training (descriptors) and validation (combination) cases
        result.fusion = fusion.fit_for_run(run_dir, config, data, Path(settings.seg_run), val,
                                           p_val, target, settings.batch_size, partner,
                                           p_partner)
        result.written.append(fusion.FUSION)
        result.replaced += [fusion.FUSION] if existed else []
    return result


def _calibrate_seg(settings: CalibrateSettings, config: RunConfig) -> Calibration:
    """A segmenter's mask post-processing, chosen on its own validation cases at its own
    threshold (:func:`postprocess.choose`)."""
    run_dir = Path(settings.run_dir)
    data, _ = _data(settings, config)
    frame = run_cases(config, "val", data)
    frame = frame[frame["mask_path"] != ""].reset_index(drop=True)
    if len(frame) == 0:
        raise InputError(f"{run_dir}: no validation case has a lesion mask: the mask "
                         "post-processing cannot be chosen")
    include_other = config.include_other_masks
    loaded = open_run(run_dir, "seg", config=config, tta=settings.tta)
    threshold = read_threshold(run_dir, config).value
    probabilities = loaded.run_files(list(frame["image_path"]), settings.batch_size)
    truths = [truth_mask(case, include_other) for _, case in frame.iterrows()]
    preds = [to_original_size(prob, truth.shape, threshold)[1]
             for prob, truth in zip(probabilities, truths)]
    result = Calibration(run_dir=run_dir, task="seg")
    result.postprocess = postprocess.choose(truths, preds)
    _written(run_dir, postprocess.POSTPROCESS, result.postprocess, result)
    return result


def summary(result: Calibration, command: str = "breastus calibrate") -> str:
    """One line: which run files a calibration (re)wrote, on what, and how to do it alone."""
    done = [("rewrote " if name in result.replaced else "wrote ") + name
            for name in result.written]
    if result.postprocess is not None:
        chosen = (f"post-processing '{result.postprocess['method']}' chosen on "
                  f"{result.postprocess['n_validation']} validation cases")
    elif result.threshold is not None:
        chosen = (f"threshold {result.threshold['threshold']:.4g} chosen on "
                  f"{result.threshold['validation_n']} validation cases")
    else:
        chosen = "fused classifier fitted on its training and validation cases"
    said = ", ".join(done) if done else "wrote nothing"
    return (f"calibrated {result.run_dir}: {said} ({chosen}"
            + (f"; {result.not_written}" if result.not_written else "")
            + f"); '{command} {result.run_dir}' does this alone")
