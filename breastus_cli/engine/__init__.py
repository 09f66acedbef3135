"""Engine layer: train, evaluate, predict, sweep, export; shared by classification and segmentation.

Seven rooms, each with one job; a room imports only the rooms below it (checked in ``make test``
by the import-linter contracts in pyproject.toml, tests/test_import_rules.py):

    orchestration/   many runs at once: cv, sweep, slurm                  (nothing imports it)
    evaluation/      scoring a run on a split (evaluate), comparing two (compare)
    export/          deployment files: export, convert, export_inputs, agreement
    apply/           running a run on images: inference (open_run, LoadedRun), postprocess,
                     masks, fusion, gradcam, overlays, predict
    training/        fitting a model into a run folder: train, tasks, callbacks
    runs/            what a run folder and a CV folder are on disk (rundir, cvdir) and the
                     settings a run records (settings)
    stats/           numbers only: bootstrap, metrics, seg_metrics, descriptors, paired

Rooms on one line of ``layers`` in pyproject.toml (evaluation | export, apply | training,
runs | stats) never import each other. TensorFlow is imported lazily through
:mod:`breastus_cli.backend`; ``training.tasks`` and ``training.callbacks`` import it when they
are imported, so modules the CLI loads at startup import them inside functions.

Where a change goes:
    a new metric                      stats/ (metrics.py, seg_metrics.py); evaluation/ writes it
    a new export format               export/ (convert.py for the bytes, export.py for the files);
                                      apply/inference.py if predict must run it
    a new column in predictions.csv   apply/predict_output.py (COLUMNS), predict_rows.py (the
                                      value; predict's), evaluation/evaluate.py (evaluate's)
    a new file in a run folder        runs/rundir.py (its name and reader), then its writer
    a new backbone or loss            models/ (outside engine), training/tasks.py to use it
    a new way to run many trainings   orchestration/
"""
