"""The guided digits demo: fidelity against diversity as the guidance strength grows.

    python benchmarks/guided_digits.py --workdir=runs/digits --classifier-workdir=runs/clf \\
        [--cond-workdir=runs/digits_cond] [--scales 0,0.5,1,2,4,8] [--weights 0,0.5,1,2,4]
        [--num-samples 1000] [--out docs/guided_digits]

- classifier guidance (Dhariwal & Nichol 2021): the unconditional run of
  `configs/vp_digits.py` in `--workdir`, guided by the noise-conditional classifier of
  `configs/classifier_digits.py` in `--classifier-workdir`, at each scale of `--scales`;
- classifier-free guidance (Ho & Salimans 2021), when `--cond-workdir` holds a run of
  `configs/vp_digits_cond.py`: at each weight of `--weights` (0: the conditional model).

Samples are drawn for balanced classes (sample i for class i mod 10) with the configs'
sampler (UniPC, 20 NFE; guidance costs one classifier gradient per evaluation) and
measured in the feature space of the *evaluation* classifier of `--mode=eval` (a separate
network from the guiding one, trained on clean digits): its accuracy on the intended
classes (fidelity to the class), improved precision (fidelity to the data) and recall
(diversity), and FID. Samples are cached in the runs' `eval/` folders.

Prints a markdown table; writes `<out>_grids.png` (one panel per strength, a row per
class) and `<out>_tradeoff.png` (the metrics against the strength).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sampler_fid import load_config  # noqa: E402

from sde_gen import experiments, plotting  # noqa: E402
from sde_gen.experiments.base import balanced_labels  # noqa: E402
from sde_gen.experiments.evaluate import latest_params  # noqa: E402
from sde_gen.experiments.kinds import make_experiment  # noqa: E402

PER_CLASS_SHOWN = 8


def measure(config, workdir, reference_workdir):
    """Samples of the run in `workdir` with `config`'s sampler and guidance, and their
    metrics (reference statistics and the evaluation classifier cached in
    `reference_workdir`)."""
    experiment = make_experiment(experiments.load(config))
    experiment.prepare(workdir, "eval")
    step, params = latest_params(experiment, workdir)
    start = time.perf_counter()
    samples, timing = experiment.generate_samples(workdir, step, params)
    seconds = time.perf_counter() - start
    labels = balanced_labels(experiment.sample_classes(), 0, len(samples))
    if labels is None:  # unguided, unconditional: score against the same balanced classes
        labels = np.arange(len(samples)) % 10
    quality = experiment.quality(reference_workdir, samples, labels)
    cached = timing["batches_sampled_now"] == 0
    return samples, labels, quality, timing["nfe"], seconds, cached


def by_class(samples, labels):
    """The first `PER_CLASS_SHOWN` samples of each class, class by class."""
    return np.concatenate([samples[labels == k][:PER_CLASS_SHOWN] for k in range(10)])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a run of configs/vp_digits.py")
    parser.add_argument("--classifier-workdir", required=True, help="configs/classifier_digits")
    parser.add_argument("--cond-workdir", default=None, help="configs/vp_digits_cond.py run")
    parser.add_argument("--scales", default="0,0.5,1,2,4,8")
    parser.add_argument("--weights", default="0,0.5,1,2,4")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--out", default="docs/guided_digits")
    args = parser.parse_args(argv)

    config = load_config("configs/vp_digits.py")
    config.eval.num_samples = args.num_samples
    data_range = experiments.load(config).data.info.data_range
    runs = []  # (kind, strength, workdir, config overrides)
    for s in (float(v) for v in args.scales.split(",")):
        guide = dict(classifier_scale=s, classifier_workdir=args.classifier_workdir)
        runs.append(("classifier guidance", s, args.workdir, config, guide))
    if args.cond_workdir:
        cond_config = load_config("configs/vp_digits_cond.py")
        cond_config.eval.num_samples = args.num_samples
        for w in (float(v) for v in args.weights.split(",")):
            runs.append(("classifier-free", w, args.cond_workdir, cond_config, dict(cfg_weight=w)))

    print(f"# Guided digits: {args.num_samples} samples per row, balanced classes")
    print(
        f"# {platform.processor() or platform.machine()}, jax {jax.__version__} on "
        f"{jax.devices()[0].platform} x {jax.local_device_count()}\n"
    )
    print("| guidance | strength | accuracy | precision | recall | classifier FID | NFE | s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rows, panels = [], []
    for kind, strength, workdir, cfg, overrides in runs:
        cfg.sampling.update(overrides)
        samples, labels, q, nfe, seconds, cached = measure(cfg, workdir, args.workdir)
        rows.append((kind, strength, q))
        panels.append((f"{'CG' if kind.startswith('classifier g') else 'CFG'} {strength:g}",
                       by_class(samples, labels)))  # fmt: skip
        print(
            f"| {kind} | {strength:g} | {q['classifier_accuracy']:.3f} | "
            f"{q['classifier_precision']:.3f} | {q['classifier_recall']:.3f} | "
            f"{q['classifier_fid']:.2f} | {nfe} | {seconds:.0f}{' (cached)' if cached else ''} |",
            flush=True,
        )
    save_grids(args.out + "_grids.png", panels, data_range)
    save_tradeoff(args.out + "_tradeoff.png", rows)
    print(f"\nplots: {args.out}_grids.png, {args.out}_tradeoff.png")


def save_grids(path, panels, data_range):
    """One row of panels per kind of guidance (CG, CFG), one panel per strength."""
    kinds = list(dict.fromkeys(title.split()[0] for title, _ in panels))
    cols = max(sum(t.split()[0] == k for t, _ in panels) for k in kinds)
    fig = Figure(figsize=(2.0 * cols, 2.7 * len(kinds)), dpi=110)
    for row, kind in enumerate(kinds):
        mine = [(t, images) for t, images in panels if t.split()[0] == kind]
        for col, (title, images) in enumerate(mine):
            ax = fig.add_subplot(len(kinds), cols, row * cols + col + 1)
            ax.imshow(plotting.image_grid(images, data_range, cols=PER_CLASS_SHOWN))
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.savefig(path, bbox_inches="tight")


def save_tradeoff(path, rows):
    fig = Figure(figsize=(9, 3.5), dpi=110)
    kinds = sorted({kind for kind, _, _ in rows})
    for i, kind in enumerate(kinds):
        ax = fig.add_subplot(1, len(kinds), i + 1)
        strengths = [s for k, s, _ in rows if k == kind]
        for metric in ("classifier_accuracy", "classifier_precision", "classifier_recall"):
            values = [q[metric] for k, _, q in rows if k == kind]
            ax.plot(strengths, values, marker="o", label=metric.split("_")[1])
        ax.set_xlabel("scale" if kind == "classifier guidance" else "weight")
        ax.set_title(kind, fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, bbox_inches="tight")


if __name__ == "__main__":
    main()
