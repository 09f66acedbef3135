"""Mask post-processing chosen on validation cases (engine/postprocess.py): the rule itself."""

from __future__ import annotations

import json

import numpy as np
import pytest

from breastus_cli.engine.apply import postprocess
from breastus_cli.errors import InputError


def _disc(shape, centre, radius):
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2


def test_largest_component_drops_specks_and_fills_holes():
    lesion = _disc((64, 64), (30, 30), 12)
    pred = lesion.copy()
    pred[28:31, 28:31] = False  # a hole
    pred[2:5, 58:61] = True  # a speck far away
    kept = postprocess.largest_component(pred)
    assert np.array_equal(kept, lesion)
    assert not postprocess.largest_component(np.zeros((5, 5), bool)).any()  # empty stays empty
    # diagonal neighbours are one component (8-connectivity)
    diagonal = np.eye(6, dtype=bool)
    assert np.array_equal(postprocess.largest_component(diagonal), diagonal)


def test_the_rule_keeps_the_largest_component_only_when_validation_dice_rises():
    lesion = _disc((64, 64), (30, 30), 12)
    speck = np.zeros_like(lesion)
    speck[2:10, 50:60] = True
    # the segmenter adds a false blob: keeping the largest component raises every Dice
    chosen = postprocess.choose([lesion, lesion], [lesion | speck, lesion])
    assert chosen["method"] == "largest"
    assert chosen["validation_dice"]["largest"] == pytest.approx(1.0)
    assert chosen["validation_dice"]["none"] < 1.0
    assert chosen["n_validation"] == 2 and chosen["masks_changed"] == 1
    # the truth has two lesions the segmenter found: dropping one lowers Dice, so none
    two = lesion | speck
    assert postprocess.choose([two], [two])["method"] == "none"
    # nothing to change: a tie keeps the masks as they are
    assert postprocess.choose([lesion], [lesion])["method"] == "none"


def test_the_choice_is_read_back_and_a_bad_file_is_one_clear_error(tmp_path):
    assert postprocess.read(tmp_path).method == "none"  # never chosen
    lesion = _disc((32, 32), (15, 15), 6)
    speck = np.zeros_like(lesion)
    speck[0:3, 0:3] = True
    postprocess.write(tmp_path, postprocess.choose([lesion], [lesion | speck]))
    found = postprocess.read(tmp_path)
    assert found.method == "largest"
    assert "chosen on 1 validation cases" in found.source and "largest 1.000" in found.source
    (tmp_path / postprocess.POSTPROCESS).write_text(json.dumps({"method": "erode"}))
    with pytest.raises(InputError, match="postprocess.json: method: should be 'none' or "
                                         "'largest' \\(got \"erode\"\\)"):
        postprocess.read(tmp_path)
    (tmp_path / postprocess.POSTPROCESS).write_text("{not json")
    with pytest.raises(InputError, match="postprocess.json: not valid JSON"):
        postprocess.read(tmp_path)


def test_a_fold_ensemble_follows_the_majority_of_its_folds(tmp_path):
    folds = []
    for k, method in enumerate(["largest", "largest", "none"]):
        fold = tmp_path / f"fold-{k}"
        fold.mkdir()
        (fold / postprocess.POSTPROCESS).write_text(json.dumps({"method": method}))
        folds.append(fold)
    assert postprocess.ensemble(folds).method == "largest"
    assert "2 of 3 folds" in postprocess.ensemble(folds).source
    assert postprocess.ensemble(folds[1:]).method == "none"  # 1 of 2: no majority
