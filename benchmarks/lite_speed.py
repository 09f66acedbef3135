"""Forward and fine-tuning rates of the EfficientNet-Lite backbones against MobileNetV2 and
ResNet50 at the sizes breastus trains them, and of the U-Net on a Lite0 encoder against the
default EfficientNetB2 one, as ratios against a baseline measured in the same run.

Every model is built by breastus' own builders (``build_classifier`` / ``build_unet``: the grey
input, the preprocessing inside the graph, pooling, dropout and the softmax head) with RANDOM
weights (the rate does not depend on the weights' values), and compiled as ``train-cls`` /
``train-seg`` compile them (``ClassificationTask.compile`` / ``SegmentationTask.compile``:
Adam, the loss and the metrics). Inputs are random pixels 0..255.

- forward: images/s of a ``tf.function`` of ``model(x, training=False)`` on one batch
  (inference, batch 32 by default), after warm-up calls;
- fine-tuning: images/s of ``train_on_batch`` (all layers trainable, batch 32 for the
  classifiers, 8 for the U-Nets), after warm-up steps.

The models are measured round by round in a rotated order (A B C ..., then B C ... A, ...), a
few calls each per round, so a change in the machine's load (a training queue shares it) falls
on all of them alike; the table gives each model's median over all its timed calls and the
ratio to its group's baseline (MobileNetV2 160 px for the classifiers, U-Net EfficientNetB2
for the U-Nets). The cores other processes used during the run are read from /proc/stat.

Run: python benchmarks/lite_speed.py [--rounds 5] [--calls 3] [--warmup 2] [--no-record]
Writes the table between the LITE_SPEED markers of BENCHMARKS.md unless --no-record.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Load, command_line, rotated  # noqa: E402
from _record import record  # noqa: E402


@dataclass
class Case:
    """One model to time: its label, builder arguments and (filled in) its measurements."""

    label: str
    kind: str  # "cls" (build_classifier) or "seg" (build_unet)
    architecture: str
    size: int
    group: str
    forward: list[float] = field(default_factory=list)  # images/s per timed call
    train: list[float] = field(default_factory=list)


CASES = (
    Case("MobileNetV2, 160 px (baseline)", "cls", "mobilenetv2", 160, "classifier"),
    Case("EfficientNet-Lite0, 160 px", "cls", "efficientnet-lite0", 160, "classifier"),
    Case("EfficientNet-Lite0, 224 px (the pretrained recipe's size)", "cls",
         "efficientnet-lite0", 224, "classifier"),
    Case("ResNet50, 96 px", "cls", "resnet50", 96, "classifier"),
    Case("EfficientNet-Lite2, 160 px", "cls", "efficientnet-lite2", 160, "classifier"),
    Case("EfficientNet-Lite2, 260 px", "cls", "efficientnet-lite2", 260, "classifier"),
    Case("U-Net EfficientNetB2, 128 px (baseline)", "seg", "efficientnetb2", 128, "U-Net"),
    Case("U-Net EfficientNet-Lite0, 128 px", "seg", "efficientnet-lite0", 128, "U-Net"),
)


def build(case: Case):
    """The case's model, built and compiled as train-cls / train-seg build and compile it."""
    from breastus_cli.engine.runs.settings import ClsSettings, SegSettings
    from breastus_cli.engine.training.tasks import ClassificationTask, SegmentationTask
    from breastus_cli.models.classifiers import build_classifier
    from breastus_cli.models.segmenters import build_unet

    if case.kind == "cls":
        model = build_classifier(case.architecture, case.size, backbone_weights=None)
        ClassificationTask().compile(model, ClsSettings(data=Path("."), lr=1e-4))
    else:
        model = build_unet(case.architecture, case.size, encoder_weights=None)
        SegmentationTask().compile(model, SegSettings(data=Path("."), lr=1e-4))
    return model


class Timed:
    """A case's model with its inputs and its compiled forward function."""

    def __init__(self, case: Case, batch: int, train_batch: int):
        import numpy as np

        from breastus_cli import backend

        tf = backend.tf()
        self.case, self.model = case, build(case)
        rng = np.random.default_rng(0)
        shape = (case.size, case.size, 1)
        self.x = tf.constant(rng.uniform(0, 255, (batch, *shape)).astype("float32"))
        self.train_x = rng.uniform(0, 255, (train_batch, *shape)).astype("float32")
        self.train_y = (rng.integers(0, 2, train_batch) if case.kind == "cls" else
                        (rng.uniform(size=(train_batch, *shape)) > 0.7).astype("float32"))
        model = self.model
        self._forward = tf.function(lambda x: model(x, training=False))

    def forward(self) -> float:
        start = time.perf_counter()
        self._forward(self.x).numpy()
        return len(self.x) / (time.perf_counter() - start)

    def train(self) -> float:
        start = time.perf_counter()
        self.model.train_on_batch(self.train_x, self.train_y)
        return len(self.train_x) / (time.perf_counter() - start)


def table(cases: list[Case], args: argparse.Namespace, load: Load, seconds: float) -> str:
    lines = ["| model | forward images/s | x baseline | fine-tuning images/s | x baseline |",
             "|---|---:|---:|---:|---:|"]
    baselines = {}
    for case in cases:
        if case.group not in baselines:  # the first case of a group is its baseline
            baselines[case.group] = (statistics.median(case.forward),
                                     statistics.median(case.train))
        f, t = statistics.median(case.forward), statistics.median(case.train)
        bf, bt = baselines[case.group]
        lines.append(f"| {case.label} | {f:.1f} | {f / bf:.2f} | {t:.1f} | {t / bt:.2f} |")
    lines += [
        "",
        f"- Random weights (rates do not depend on them); models from `build_classifier` / "
        f"`build_unet`, compiled by `ClassificationTask.compile` / `SegmentationTask.compile`; "
        f"random pixels 0..255. Forward: a `tf.function` of `model(x, training=False)`, batch "
        f"{args.batch}. Fine-tuning: `train_on_batch`, every layer trainable, batch "
        f"{args.train_batch} (classifiers) / {args.seg_train_batch} (U-Nets).",
        f"- {args.rounds} rounds, the models in a rotated order each round, {args.calls} timed "
        f"calls per model and round after {args.warmup} warm-up calls; medians over all timed "
        f"calls. x baseline: the rate over its group's first row's (above 1: faster).",
        f"- Loaded machine: other processes used {load.cores:.2f} cores on average over the "
        f"{seconds / 60:.0f} minutes of the run (/proc/stat less this process).",
        f"- Command: `{command_line('lite_speed.py')}`.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3, help="timed calls per model and round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32, help="forward batch")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--seg-train-batch", type=int, default=8)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    from breastus_cli import backend

    backend.keras().utils.set_random_seed(0)
    cases = [Case(c.label, c.kind, c.architecture, c.size, c.group) for c in CASES]
    started = time.perf_counter()
    with Load() as load:
        timed = []
        for case in cases:
            built = time.perf_counter()
            item = Timed(case, args.batch,
                         args.train_batch if case.kind == "cls" else args.seg_train_batch)
            for _ in range(args.warmup):
                item.forward()
                item.train()
            timed.append(item)
            print(f"built and warmed {case.label} in {time.perf_counter() - built:.0f} s",
                  flush=True)
        for round_ in range(args.rounds):
            for item in rotated(timed, round_):
                item.case.forward += [item.forward() for _ in range(args.calls)]
                item.case.train += [item.train() for _ in range(args.calls)]
                print(f"round {round_ + 1}: {item.case.label}: forward "
                      f"{statistics.median(item.case.forward[-args.calls:]):.1f}, train "
                      f"{statistics.median(item.case.train[-args.calls:]):.1f} images/s",
                      flush=True)
    body = table(cases, args, load, time.perf_counter() - started)
    print(body)
    if not args.no_record:
        record("LITE_SPEED", body)


if __name__ == "__main__":
    main()
