"""examples/write_pretrained.py: RESULTS.md's ImageNet-pretrained section from a work folder's
metrics files; rows not run are said so, never filled in; the section survives write_results.py."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _metrics(folder: Path, **values) -> None:
    folder.mkdir(parents=True)
    ci = {k: [v - 0.05, v + 0.04] for k, v in values.items() if isinstance(v, float)}
    (folder / "metrics.json").write_text(json.dumps({"n": 376, "n_malignant": 122, **values,
                                                     "ci": ci}))


def _cv_summary(folder: Path, cnn: tuple[float, float, float],
                fused: tuple[float, float, float]) -> None:
    """A BrEaST 5-fold summary.json: pooled AUC, sensitivity, specificity with CIs, and fused."""
    def block(values, half):
        return {k: {"pooled": v, "ci": [v - half, v + half]}
                for k, v in zip(("auc", "sensitivity", "specificity"), values)}

    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(
        {"task": "cls", "n": 252, "n_malignant": 98, "metrics": block(cnn, 0.06),
         "fusion": {"fused": block(fused, 0.05)}}))


def _work(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    for seed, auc, other in ((42, 0.91, 0.78), (43, 0.90, 0.792)):
        run = work / ("lite0-160-f0" if seed == 42 else f"lite0-160-f0-s{seed}")
        _metrics(run / "eval-test", auc=auc, sensitivity=0.93, specificity=0.63)
        _metrics(run / "eval-breast-all", auc=other, sensitivity=0.95, specificity=0.21)
        (run / "best.json").write_text(json.dumps({"epoch": 22}))
        (run / "config.json").write_text(json.dumps({"status": "finished" if seed == 42
                                                     else "running"}))
        (run / "history.csv").write_text("epoch,val_auc\n" + "".join(
            f"{e},{0.80 + 0.01 * (e == 3)}\n" for e in range(1, 13)))
    chosen = work / "lite0-224-f0"  # the chosen size's seed 42: BUS-BRA fold 1 only
    _metrics(chosen / "eval-test", auc=0.92, sensitivity=0.93, specificity=0.65)
    _metrics(work / "unet-lite0-128-f0" / "eval-test", dice=0.861, iou=0.78)
    _cv_summary(work / "cv-breast-lite0", (0.755, 0.888, 0.455), (0.83, 0.857, 0.61))
    nh = work / "newhosp"
    (nh / "adabn-breast").mkdir(parents=True)
    (nh / "ood-lite0-160-f0.json").write_text(json.dumps(
        {"n_own_test": 376, "n_other": 252, "auc": 0.949, "auc_ci": [0.931, 0.965],
         "out_of_domain_own_test": 0.053, "out_of_domain_other": 0.611,
         "out_of_domain_validation": 0.048}))
    (nh / "adabn-breast" / "crossfit.json").write_text(json.dumps({"pooled": {
        "n": 252, "n_malignant": 98, "auc_a": 0.783, "ci_a": [0.72, 0.84], "auc_b": 0.777,
        "ci_b": [0.71, 0.83], "difference": -0.006, "ci_difference": [-0.046, 0.037]}}))
    (nh / "adabn-seg-breast").mkdir()
    (nh / "adabn-seg-breast" / "crossfit.json").write_text(json.dumps({"pooled": {
        "n": 252, "dice_a": 0.751, "ci_a": [0.72, 0.78], "dice_b": 0.760, "ci_b": [0.73, 0.79],
        "difference": 0.009, "ci_difference": [-0.004, 0.021]}}))
    (nh / "local-threshold.md").write_text(f"# from {tmp_path}/x.csv\n\n| n | within |\n"
                                            "|---|---|\n| 10 (4) | 31% |\n")
    return work


def test_rows_seeds_goals_and_what_did_not_run(tmp_path):
    text = _module("write_pretrained").section(_work(tmp_path), [])
    # the chosen size's rows first, with the from-scratch column; then 160 px's, without it
    assert "| trained on BUS-BRA folds 2-5 (seed 42), 224 px, chosen | BUS-BRA fold 1 | 376 (122 " \
           "malignant) | 0.920 (0.870–0.960) | 0.930 (0.880–0.970) / 0.650 (0.600–0.690) | " \
           "0.840 (0.798–0.881) whole-image ResNet50;" in text
    assert "| trained on BrEaST, 5 folds, 224 px, chosen | BrEaST | | not run | | |" in text
    assert "| *160 px, before the choice: the same rows* |" in text
    assert "| trained on BUS-BRA folds 2-5 (seed 42), 160 px, before the choice | BUS-BRA fold 1 | " \
           "376 (122 malignant) | 0.910 (0.860–0.950) | 0.930 (0.880–0.970) / 0.630 (0.580–0.670) " \
           "| |" in text
    assert "| trained on BrEaST, 5 folds, 160 px, before the choice | BrEaST, 5 folds pooled out " \
           "of fold | 252 (98 malignant) | 0.755 (0.695–0.815) |" in text
    # the seed spread: two seeds ran, the third is said not run; mean ± sd of those that ran
    assert "| 43 | 0.900 (0.850–0.940) | 0.792 (0.742–0.832) | 22 |" in text
    assert "| 44 | not run | | |" in text
    assert "combination fitted on each fold's validation cases | BrEaST, 5 folds pooled out of " \
           "fold | 252 (98 malignant) | 0.830 (0.780–0.880) | 0.857 (0.807–0.907) / " \
           "0.610 (0.560–0.660) | |" in text
    assert "- BrEaST 5-fold, no ground truth at inference: whole image AUC, 224 px (chosen) not run " \
           "(goal 0.88); at 160 px (before the choice) whole image 0.755 (not met: goal 0.88); " \
           "fused 0.830 (not met: goal 0.88)." in text
    # the model choice on validation: a finished seed's best epoch and its last-10 mean; a seed
    # still training is not compared
    assert "| EfficientNet-Lite0 ImageNet, 160 px, constant 1e-4 (seed 42) | 0.810 (3) | 0.801 |" \
        in text
    assert "(seed 43) |" not in text
    assert "| mean ± sd | 0.905 ± 0.007 (n=2) | 0.786 ± 0.008 (n=2) | |" in text
    # missing runs are listed as not run, and the goals say met / not met / not run
    assert "| BrEaST's 5 fold models, averaged, 160 px, before the choice | BUS-BRA, all | | not " \
           "run | | |" in text
    assert "| trained on BUS-BRA folds 2-5, 224 px, chosen | BrEaST, all 252 (another hospital) | " \
           "| not run |" in text
    assert "- BUS-BRA fold 1, seed 42: whole image AUC, 224 px (chosen) 0.920 (not met: goal " \
           "0.93); at 160 px (before the choice) whole image 0.910 (not met: goal 0.93)." in text
    assert "U-Net Dice on BUS-BRA fold 1 0.861 (met: goal 0.8); on BrEaST (another hospital) " \
           "not run (goal 0.8); BrEaST 5-fold, fine-tuned not run (goal 0.8)." in text
    # the new-hospital part: ood separation, AdaBN cross-fitted, the local-threshold table
    assert "| Lite0 trained on BUS-BRA folds 2-5 | BUS-BRA fold 1 (376) | BrEaST, all (252) | " \
           "0.949 (0.931–0.965) | 5.3% / 61.1% / 4.8% |" in text
    assert "| BrEaST fold 0 | BUS-BRA fold 1 | not run | |" in text
    assert "| 0.783 (0.720–0.840) | 0.777 (0.710–0.830) | -0.006 (-0.046 to +0.037) |" in text
    assert "| BrEaST, all | 252 | 0.751 (0.720–0.780) | 0.760 (0.730–0.790) | " \
           "+0.009 (-0.004 to +0.021) |" in text
    assert "No CI excludes 0" in text
    assert "| 10 (4) | 31% |" in text
    assert str(tmp_path) not in text  # no path of this machine


def _pooled(**values) -> dict:
    return {k: {"pooled": v, "ci": [v - 0.05, v + 0.05]} for k, v in values.items()}


def test_lesion_centred_two_view_rows_and_the_learning_rate_rule(tmp_path):
    work = _work(tmp_path)
    roi = {"task": "cls", "n": 252, "n_malignant": 98,
           "metrics": _pooled(auc=0.711, sensitivity=0.806, specificity=0.597),
           "ground_truth_roi": _pooled(auc=0.683, sensitivity=0.714, specificity=0.539),
           "fusion": {"fused": _pooled(auc=0.803, sensitivity=0.857, specificity=0.604)}}
    (work / "cv-breast-lite0-roi160").mkdir()
    (work / "cv-breast-lite0-roi160" / "summary.json").write_text(json.dumps(roi))
    # the two-view copy before its fusion ran has no partner: said not run, not the roi numbers
    (work / "cv-breast-lite0-roi160-2v").mkdir()
    (work / "cv-breast-lite0-roi160-2v" / "summary.json").write_text(json.dumps(roi))
    mod = _module("write_pretrained")
    text = mod.section(work, [])
    assert "| trained on BrEaST's folds; crops from the same fold's Lite0 U-Net | BrEaST, 5 folds " \
           "pooled out of fold | 252 (98 malignant) | 0.711 (0.661–0.761) |" in text
    assert "ground-truth crops (upper bound: needs the mask) | BrEaST, 5 folds pooled out of " \
           "fold | 252 (98 malignant) | 0.683 (0.633–0.733) |" in text
    assert "two-view (with the whole-image Lite0) | BrEaST, 5 folds pooled out of fold | | not run" \
        in text
    assert "lesion-centred 0.711 (not met: goal 0.88); lesion-centred fused 0.803 (not met: goal " \
           "0.88)" in text
    roi["fusion"] = {"partner": {"run": "x"}, "fused": _pooled(auc=0.821, sensitivity=0.867,
                                                                 specificity=0.591)}
    (work / "cv-breast-lite0-roi160-2v" / "summary.json").write_text(json.dumps(roi))
    # the BUS-BRA lesion-centred run: its own crops and the two-view fusion
    run = work / "lite0-roi160-f0"
    _metrics(run / "eval-test", auc=0.88, sensitivity=0.9, specificity=0.6,
             fusion={"fused": {"auc": 0.935, "sensitivity": 0.93, "specificity": 0.7,
                               "ci": {"auc": [0.91, 0.96]}}})
    # the learning-rate candidate: finished, its best above every default seed's but its last
    # 10 epochs not: not chosen by the committed rule
    cand = work / "lite0-160-lr3e-4-f0"
    cand.mkdir()
    (cand / "config.json").write_text(json.dumps({"status": "finished"}))
    (cand / "history.csv").write_text("epoch,val_auc\n" + "".join(
        f"{e},{0.95 if e == 2 else 0.70}\n" for e in range(1, 13)))
    text = mod.section(work, [])
    assert "two-view: fused with the descriptors and the same fold's whole-image Lite0 | BrEaST, " \
           "5 folds pooled out of fold | 252 (98 malignant) | 0.821 (0.771–0.871) |" in text
    assert "| BUS-BRA fold 1 | 376 (122 malignant) | 0.935 (0.910–0.960) | 0.930 / 0.700 |" in text
    assert "two-view 0.935 (met: goal 0.93)" in text
    # beside each row, the from-scratch pipeline's number on the same cases
    assert "| 0.930 / 0.700 | 0.906 (0.875–0.934), with the whole-image ResNet50 |" in text
    assert "Seed spread of the lesion-centred" not in text  # one seed: no spread to show
    _metrics(work / "lite0-roi160-f0-s43" / "eval-test", auc=0.90, sensitivity=0.9,
             specificity=0.6, fusion={"fused": {"auc": 0.925, "ci": {}}})
    text = mod.section(work, [])
    assert "| 44 | not run | not run | not run | not run |" in text
    assert "| mean ± sd | 0.890 ± 0.014 (n=2) | 0.930 ± 0.007 (n=2) |  |  |" in text
    assert "Over the seeds (the seed tables above): BUS-BRA fold 1 lesion-centred 0.890 ± 0.014 over 2 seeds (not met on " \
           "the mean: goal 0.93); two-view 0.930 ± 0.007 over 2 seeds (met on the mean: goal " \
           "0.93)." in text
    assert "| EfficientNet-Lite0 ImageNet, 160 px, constant 3e-4 (seed 42; the learning-rate " \
           "candidate) | 0.950 (2) | 0.700 |" in text
    assert "not chosen; the default stays" in text
    assert not mod.candidate_chosen(work, "lite0-160-lr3e-4-f0")
    (cand / "history.csv").write_text("epoch,val_auc\n" + "".join(
        f"{e},0.9\n" for e in range(1, 13)))
    assert "the learning-rate candidate) | 0.900 (1) | 0.900 |" in mod.section(work, [])
    text = mod.section(work, [])
    assert ": chosen. Its test cases have not been scored yet; the section's rows at 160 px, " \
           "constant 3e-4 follow once they are trained." in text
    # results_pretrained.sh asks before scoring a candidate's test cases
    ask = [sys.executable, str(EXAMPLES / "write_pretrained.py"), str(work), "--choices",
           str(tmp_path / "no-record.json"), "--is-chosen"]
    assert subprocess.run([*ask, "lite0-160-lr3e-4-f0"]).returncode == 0
    assert subprocess.run([*ask, "lite0-224-f0"]).returncode == 1  # not there
    _metrics(cand / "eval-test", auc=0.93, sensitivity=0.9, specificity=0.6)
    text = mod.section(work, [])
    assert ": chosen. Scored after it was chosen (seed 42): BUS-BRA fold 1 0.930 (0.880–0.970), " \
           "against the default's 0.910. The section's rows at 160 px, constant 3e-4 (marked " \
           "chosen) were trained after this choice." in text


def test_the_section_replaces_its_old_self_and_write_results_keeps_it(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\ntable\n\n## How the settings were chosen\n\nnotes\n")
    work = _work(tmp_path)
    script = EXAMPLES / "write_pretrained.py"
    for _ in range(2):  # the second run replaces the block, never adds a second one
        proc = subprocess.run([sys.executable, str(script), str(work), "--results", str(results)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    text = results.read_text()
    assert text.count("<!-- pretrained:start -->") == 1
    assert text.index("<!-- pretrained:end -->") < text.index("## How the settings were chosen")
    block = _module("write_results")._pretrained_block(results)
    assert block.startswith("<!-- pretrained:start -->") and "0.910" in block
    # what write_results.py does after rewriting the file: the block goes back in, unchanged
    results.write_text("# Results\n\nnew table\n\n## How the settings were chosen\n\nnotes\n")
    _module("write_pretrained").insert(results, block)
    assert block in results.read_text() and "new table" in results.read_text()


def test_training_time_counts_each_run_once_at_its_kinds_alone_rate(tmp_path):
    work = tmp_path / "work"

    def run(folder, seconds, n_train=100, data="/x/busbra", img_size=224):
        (work / folder).mkdir(parents=True)
        (work / folder / "history.csv").write_text("epoch,seconds\n" + "".join(
            f"{i},{s}\n" for i, s in enumerate(seconds, 1)))
        (work / folder / "config.json").write_text(json.dumps({
            "settings": {"data": data, "model": "efficientnet-lite0", "img_size": img_size,
                         "batch_size": 32, "roi": "none", "augment_strength": 1.0},
            "data": {"n_train": n_train}}))

    run("lite0-224-f0", (1800, 900, 900))  # alone at its best: 9 s per training case
    run("lite0-224-f0-s43", (2000, 2000, 2000))  # only ever beside others: 3 x 900 s alone
    run("lite0-224-f0-fused", (1800, 900, 900))  # a copy: the same history, not counted again
    run("lite0-160-lr3e-4-f0", (600, 600), img_size=160)  # a decided candidate: CHOOSE=1 only
    run("cv/fold-0", (100, 100), n_train=50, data="/x/breast")  # another kind: its own rate
    line = _module("write_pretrained").time_lines(work)[0]
    # by default 2700 + 2700 + 200 s; CHOOSE=1 adds 1200 s; as they ran 3600 + 6000 + 1200 + 200
    assert "(dataset, model, size, batch, crops): 1.6 h for the script as it runs by default, " \
           "0.3 h more with `CHOOSE=1`" in line
    assert "Summed as they ran, often two at once beside other work: 3.1 h." in line
    assert "this folder's commands ran before the script timed them" in line
    # the script's own timing (results_lib's breastus wrapper, its python steps)
    (work / "times.tsv").write_text(
        "2026-12-07T10:00:00Z\t5400\t0\tbreastus train-cls /d --run-dir /w/a\n"
        "2026-12-07T11:00:00Z\t1800\t0\tbreastus cv cls /d --out /w/cv\n"
        "2026-12-07T12:00:00Z\t360\t0\tbreastus evaluate /w/a\n"
        "2026-12-07T12:10:00Z\t360\t0\tpython examples/adabn_crossfit.py /w/a /d /w/nh\n")
    line = _module("write_pretrained").time_lines(work)[0]
    assert "The script's timed commands (`WORK/times.tsv`, 4 of them): 2.2 h in all, of which " \
           "0.2 h outside training and cross-validation (evaluations, adaptation)." in line


def test_the_chosen_sizes_seeds_get_their_own_spread_once_scored(tmp_path):
    mod = _module("write_pretrained")
    work = _work(tmp_path)
    assert "row at 224 px" not in mod.section(work, [])  # only the candidate's seed 42
    for seed, auc, other in ((43, 0.93, 0.80), (44, 0.92, 0.81)):
        run = work / f"lite0-224-f0-s{seed}"
        _metrics(run / "eval-test", auc=auc, sensitivity=0.9, specificity=0.7)
        if seed == 43:
            _metrics(run / "eval-breast-all", auc=other, sensitivity=0.9, specificity=0.3)
    text = mod.section(work, [])
    block = text.split("row at 224 px, the chosen size")[1].split("Seed spread at 160 px")[0]
    assert "| 42 | 0.920 (0.870–0.960) | not run |" in block
    assert "| 43 | 0.930 (0.880–0.970) | 0.800 (0.750–0.840) |" in block
    assert "| 44 | 0.920 (0.870–0.960) | not run |" in block
    assert "| mean ± sd | 0.923 ± 0.006 (n=3) |  | |" in block  # one BrEaST score: no spread


def test_brests_folds_at_the_chosen_size_are_rows_and_goals(tmp_path):
    mod = _module("write_pretrained")
    work = _work(tmp_path)
    _cv_summary(work / "cv-breast-lite0-224", (0.79, 0.9, 0.4), (0.84, 0.86, 0.6))
    # the BUS-BRA model fine-tuned on BrEaST's folds, alone and fused
    _cv_summary(work / "cv-breast-lite0-ft-224", (0.824, 0.837, 0.675), (0.851, 0.837, 0.604))
    text = mod.section(work, [])
    assert "| trained on BrEaST, 5 folds, 224 px, chosen | BrEaST, 5 folds pooled out of fold | " \
           "252 (98 malignant) | 0.790 (0.730–0.850) |" in text
    assert "|   the same, fused with the lesion descriptors of the same folds' Lite0 U-Net " \
           "(below); combination fitted on each fold's validation cases | BrEaST, 5 folds " \
           "pooled out of fold | 252 (98 malignant) | 0.840 (0.790–0.890) |" in text
    assert "- BrEaST 5-fold, no ground truth at inference: whole image AUC, 224 px (chosen) 0.790 " \
           "(not met: goal 0.88); fused with descriptors 0.840 (not met: goal 0.88); fine-tuned " \
           "from BUS-BRA 0.824 (not met: goal 0.88); fine-tuned and fused 0.851 (not met: goal " \
           "0.88); at 160 px (before the choice) whole image 0.755 (not met: goal 0.88); fused " \
           "0.830" in text
    assert "| BUS-BRA-trained (seed 42 above), fine-tuned on BrEaST, 5 folds (lr 1e-4, 20 epochs), " \
           "224 px, chosen | BrEaST, 5 folds pooled out of fold | 252 (98 malignant) | 0.824 " \
           "(0.764–0.884) |" in text
    assert "|   the same, fused with the same folds' lesion descriptors | BrEaST, 5 folds pooled " \
           "out of fold | 252 (98 malignant) | 0.851 (0.801–0.901) | 0.837 (0.787–0.887) / " \
           "0.604 (0.554–0.654) | |" in text


def _finished(run: Path, auc: list[float], started: str = "2026-12-07T10:00:00+0000") -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps({
        "status": "finished", "environment": {"started": started, "breastus_version": "0.9.0"}}))
    (run / "history.csv").write_text("epoch,val_auc\n" + "".join(
        f"{e},{v}\n" for e, v in enumerate(auc, 1)))


def test_decided_choices_come_from_their_record_when_the_runs_are_not_there(tmp_path):
    mod = _module("write_pretrained")
    work = _work(tmp_path)
    record = tmp_path / "choices.json"
    script = [sys.executable, str(EXAMPLES / "write_pretrained.py"), str(work), "--choices",
              str(record)]
    # not every candidate and seed finished: nothing recorded, the work folder untouched
    proc = subprocess.run([*script, "--save-choices"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "lite0-160-headwarm-f0" in proc.stderr
    assert "lite0-160-f0-s44" in proc.stderr and not record.exists()
    # all of them finished (the 224 px candidate above every seed on both counts)
    for seed in (42, 43, 44):
        name = "lite0-160-f0" if seed == 42 else f"lite0-160-f0-s{seed}"
        _finished(work / name, [0.80] * 11 + [0.85 - 0.01 * (seed - 42)])
        if seed != 42:  # the chosen size's seeds (its seed 42 is the candidate below)
            _finished(work / f"lite0-224-f0-s{seed}", [0.88] * 12)
    for folder, *_ in mod.CANDIDATES:
        _finished(work / folder, [0.90] * 12 if folder == "lite0-224-f0" else [0.82] * 12,
                  started="2026-12-06T09:00:00+0000" if "aug2" in folder else
                  "2026-12-07T10:00:00+0000")
    proc = subprocess.run([*script, "--save-choices"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    saved = json.loads(record.read_text())
    assert saved["recorded"] == "2026-12-07" and saved["breastus_version"] == "0.9.0"
    # the epochs candidate (0.82) is judged against the 224 px seeds (0.90, 0.88, 0.88)
    assert saved["chosen"] == {folder: folder == "lite0-224-f0" for folder, *_ in mod.CANDIDATES}
    live = mod.section(work, [], record)
    assert "above the highest of the chosen 224 px recipe's seeds, 0.900 and 0.900" in live
    assert "as recorded on" not in live
    # a work folder of the default run (CHOOSE=0): no candidate but the chosen one, no seed 43/44
    for folder, *_ in mod.CANDIDATES:
        if folder != "lite0-224-f0":
            shutil.rmtree(work / folder)
    for seed in (43, 44):
        shutil.rmtree(work / f"lite0-160-f0-s{seed}")
    text = mod.section(work, [], record)
    said = "as recorded on 2026-12-07 (breastus 0.9.0) when their runs last trained " \
           "(`examples/pretrained_choices.json`; `CHOOSE=1 examples/results_pretrained.sh` " \
           "trains them again)"
    assert text.count(said) == 2  # the 160 px seed table and the validation table
    for table in ("validation", "seeds_160"):
        assert "\n".join(saved[table]) in text
    assert "(seed 42; the augmentation candidate) | 0.820 (1) | 0.820 |" in text
    assert subprocess.run([*script, "--is-chosen", "lite0-224-f0"]).returncode == 0
    assert subprocess.run([*script, "--is-chosen", "lite0-160-freezebn-f0"]).returncode == 1


def test_the_seed_spread_of_brests_best_row_live_and_recorded(tmp_path):
    mod = _module("write_pretrained")
    work = _work(tmp_path)
    for seed, cnn, fused in ((42, 0.824, 0.851), (43, 0.80, 0.84), (44, 0.81, 0.83)):
        _cv_summary(work / ("cv-breast-lite0-ft-224" + ("" if seed == 42 else f"-s{seed}")),
                    (cnn, 0.84, 0.6), (fused, 0.84, 0.6))
    text = mod.section(work, [])
    block = text.split("Seed spread of BrEaST's best row")[1].split("\n\n", 2)[1]
    assert "| 43 | 0.800 (0.740–0.860) | 0.840 (0.790–0.890) | 0.840 (0.790–0.890) / 0.600 " \
           "(0.550–0.650) |" in block
    assert "| mean ± sd | 0.811 ± 0.012 (n=3) | 0.840 ± 0.011 (n=3) | |" in block
    assert "BrEaST 5-fold fine-tuned from BUS-BRA 0.811 ± 0.012 over 3 seeds (not met on the " \
           "mean: goal 0.88); fine-tuned and fused 0.840 ± 0.011 over 3 seeds" in text
    # a default regeneration (no seeds 43, 44): the table as recorded
    record = tmp_path / "choices.json"
    record.write_text(json.dumps({"recorded": "2026-12-07", "breastus_version": "0.9.0",
                                  "validation": [], "seeds_160": [],
                                  "seeds_breast": mod.breast_seed_rows(work)}))
    for seed in (43, 44):
        shutil.rmtree(work / f"cv-breast-lite0-ft-224-s{seed}")
    text = mod.section(work, [], record)
    assert "(as recorded on 2026-12-07 when they last trained" in text
    assert "| mean ± sd | 0.811 ± 0.012 (n=3) | 0.840 ± 0.011 (n=3) | |" in text
    assert "Seed spread of BrEaST's best row" not in mod.section(work, [])  # one seed, no record

