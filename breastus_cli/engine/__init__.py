"""Engine layer: train, evaluate, predict, sweep, export; shared by classification and segmentation.

Seven rooms, each with one job; a room imports only the rooms below it (checked in ``make test``
by the import-linter contracts in pyproject.toml, tests/test_import_rules.py):

    orchestration/   many runs at once: cv, sweep (sharing plan: the plan folder, its
                     resume and Slurm array), slurm                     (nothing imports it)
    evaluation/      scoring a run on a split: evaluate (eval_settings, eval_cases: which
                     cases and the checks that they are fair, evaluate_cls, evaluate_seg);
                     comparing two (compare)
    export/          deployment files: export, convert, export_inputs, agreement
    apply/           running a run on images: inference (open_run; loaded_run: LoadedRun,
                     ensemble: fold ensembles and TTA, tflite_model: the TFLite runtime and
                     file names, images: resize in, outputs at the original size),
                     postprocess, masks, fusion, gradcam, overlays, predict (predict_settings,
                     predict_output: OUT and --resume, predict_record: predict.json,
                     predict_rows: a batch's rows, predict_merge: --merge)
    training/        fitting a model into a run folder: train, tasks, callbacks
    runs/            what a run folder and a CV folder are on disk (rundir, cvdir), the
                     settings a run records (settings) and their typed view (runconfig:
                     RunConfig), what a result came from as fields (provenance)
    stats/           numbers only: bootstrap, metrics, seg_metrics, descriptors, paired

Rooms on one line of ``layers`` in pyproject.toml (evaluation | export, apply | training,
runs | stats) never import each other. TensorFlow is imported lazily through
:mod:`breastus_cli.backend`; ``training.tasks`` and ``training.callbacks`` import it when they
are imported, so the modules that train (orchestration's cv and sweep) import them inside
functions, each saying why; every other import sits at the top of its module.

Where a change goes:
    a new metric                      stats/ (metrics.py, seg_metrics.py); evaluation/ writes it
    a new export format               export/ (convert.py for the bytes, export.py for the files);
                                      apply/tflite_model.py, inference.py if predict
                                      must run it
    a new column in predictions.csv   apply/predict_output.py (COLUMNS), predict_rows.py (the
                                      value; predict's), evaluation/evaluate_cls.py
                                      (evaluate's)
    a new file in a run folder        runs/rundir.py (its name and reader), then its writer
    a new key in config.json          runfiles.py (its schema and the default of older
                                      files), runs/runconfig.py (its accessor)
    a new backbone or loss            models/ (outside engine), training/tasks.py to use it
    a new way to run many trainings   orchestration/
"""
