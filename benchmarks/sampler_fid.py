"""Sample quality against NFE for a trained model: PC, adaptive Tsit5 and every fast solver.

    python benchmarks/sampler_fid.py --workdir=runs/digits [--config=configs/vp_digits.py]
        [--num-samples 1000] [--budgets 10,20] [--pc-steps 1000] [--plot docs/sampler_fid.png]

Evaluates the run's latest checkpoint the way `--mode=eval` does (EMA parameters, the
config's feature space: the digits classifier for digits) with each sampler in turn:
predictor-corrector (Euler-Maruyama, `--pc-steps` steps), the PF-ODE with adaptive Tsit5
(rtol = atol = 1e-5), and every `sg.sample_fast` method on the log-SNR grid (plus EDM's Heun
on its own Karras grid) at each NFE budget of `--budgets`, final Tweedie step included in
the budget. Samples are cached per sampler in the run's `eval/` folder (a rerun only
recomputes the metrics). Also reports the same metric for held-out real data (the training
split against the reference split): the floor that sampler error cannot go below.

Prints a markdown table and writes a PNG plot of FID against NFE.

    python benchmarks/sampler_fid.py --workdir=runs/digits --optimized-grids unipc,dpm_solver_3m
        [--budgets 5,10] [--fit-samples 64] [--fit-iterations 100]

instead compares, per solver and NFE budget, the log-SNR grid with a grid fitted to the
model by `sg.optimize_grid` (`--fit-iterations` Adam steps on `--fit-samples` prior draws
of another key than the eval samples'; saved under the run's `eval/grids/` and read back through
`config.sampling.grid=PATH.npy`, as a user would).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time

import jax
from matplotlib.figure import Figure

from sde_gen import experiments
from sde_gen.experiments.evaluate import latest_params
from sde_gen.experiments.kinds import make_experiment
from sde_gen.experiments.quality import METRIC_PREFIX
from sde_gen.sampling import FAST_SOLVERS


def load_config(path: str):
    # config files import their shared defaults as `configs.<name>`: put their root on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(path))))
    spec = importlib.util.spec_from_file_location("benchmark_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def samplers(budgets, pc_steps):
    """(label, config.sampling overrides) for every sampler of the table."""
    yield f"PC Euler-Maruyama, {pc_steps} steps", dict(method="pc", num_steps=pc_steps)
    yield "Tsit5, rtol=atol=1e-5", dict(method="ode", ode_solver="tsit5", rtol=1e-5, atol=1e-5)
    runs = [(name, "logsnr") for name in FAST_SOLVERS] + [("heun_edm", "karras")]
    for name, grid in runs:
        per_step = FAST_SOLVERS[name].evals_per_step
        for budget in budgets:
            steps = (budget - 1) // per_step  # one evaluation for the final Tweedie step
            if steps >= 1:
                yield (
                    f"{name} ({grid})",
                    dict(method="fast", fast_solver=name, grid=grid, num_steps=steps),
                )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a finished training run")
    parser.add_argument("--config", default="configs/vp_digits.py")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--budgets", default="10,20", help="NFE budgets of the fast solvers")
    parser.add_argument("--pc-steps", type=int, default=1000)
    parser.add_argument("--plot", default="docs/sampler_fid.png")
    parser.add_argument("--optimized-grids", default=None, help="solvers: fitted vs log-SNR grids")
    parser.add_argument("--fit-samples", type=int, default=64)
    parser.add_argument("--fit-iterations", type=int, default=100)
    args = parser.parse_args(argv)
    budgets = [int(b) for b in args.budgets.split(",")]
    if args.optimized_grids:
        return compare_grids(args, args.optimized_grids.split(","), budgets)

    config = load_config(args.config)
    config.eval.num_samples = args.num_samples
    experiment = make_experiment(experiments.load(config))
    step, params = latest_params(experiment, args.workdir)
    prefix = METRIC_PREFIX[experiment.settings.eval.features]

    print(f"# Sample quality vs NFE: {args.workdir} step {step}, {args.num_samples} samples")
    print(
        f"# {platform.processor() or platform.machine()}, jax {jax.__version__} on "
        f"{jax.devices()[0].platform} x {jax.local_device_count()}\n"
    )
    print(f"| sampler | NFE | {prefix}fid | {prefix}kid | seconds (incl. compile) |")
    print("|---|---:|---:|---:|---:|")
    rows = []
    for label, overrides in samplers(budgets, args.pc_steps):
        for key, value in overrides.items():
            config.sampling[key] = value
        run = make_experiment(experiments.load(config))
        start = time.perf_counter()
        samples, timing = run.generate_samples(args.workdir, step, params)
        seconds = time.perf_counter() - start
        quality = run.quality(args.workdir, samples)
        fid, kid = quality[f"{prefix}fid"], quality[f"{prefix}kid"]
        nfe = int(timing["nfe"])
        cached = " (cached)" if timing["batches_sampled_now"] == 0 else ""
        print(f"| {label} | {nfe} | {fid:.2f} | {kid:.2f} | {seconds:.0f}{cached} |", flush=True)
        rows.append((label, nfe, fid))

    real, _ = experiment.load_split("train", args.num_samples)
    floor = experiment.quality(args.workdir, real)[f"{prefix}fid"]
    print(f"| real data (train split, {len(real)} examples) | - | {floor:.2f} | | |\n")
    save_plot(args.plot, rows, floor, prefix + "fid")
    print(f"plot: {args.plot}")


def compare_grids(args, solvers, budgets) -> None:
    import sde_gen as sg

    config = load_config(args.config)
    config.eval.num_samples = args.num_samples
    experiment = make_experiment(experiments.load(config))
    step, params = latest_params(experiment, args.workdir)
    prefix = METRIC_PREFIX[experiment.settings.eval.features]
    score_fn = experiment.score_fn(params)
    folder = os.path.join(args.workdir, "eval", "grids")
    os.makedirs(folder, exist_ok=True)
    print(f"# Fitted grids: {args.workdir} step {step}, {args.num_samples} samples")
    print(f"# {platform.processor() or platform.machine()}, jax {jax.__version__}\n")
    print(f"| solver | NFE | grid | {prefix}fid | {prefix}kid | fit seconds |")
    print("|---|---:|---|---:|---:|---:|")
    for name in solvers:
        per_step = FAST_SOLVERS[name].evals_per_step
        for budget in budgets:
            steps = (budget - 1) // per_step  # and the final Tweedie step, as in the table above
            shape = (args.fit_samples, *experiment.info.shape)
            start = time.perf_counter()
            grid = sg.optimize_grid(
                jax.random.key(123), experiment.sde, score_fn, shape, name, steps
            )
            fit_seconds = time.perf_counter() - start
            path = os.path.join(folder, f"{name}_{steps}_step{step}.npy")
            sg.save_grid(path, grid, method=name, workdir_step=step)
            for grid_setting, label, seconds in (
                ("logsnr", "log-SNR", None),
                (path, "fitted", fit_seconds),
            ):
                config.sampling.update(
                    method="fast", fast_solver=name, grid=grid_setting, num_steps=steps
                )  # fmt: skip
                run = make_experiment(experiments.load(config))
                samples, timing = run.generate_samples(args.workdir, step, params)
                quality = run.quality(args.workdir, samples)
                fit = "-" if seconds is None else f"{seconds:.0f}"
                print(
                    f"| {name} | {int(timing['nfe'])} | {label} | {quality[prefix + 'fid']:.2f} | "
                    f"{quality[prefix + 'kid']:.2f} | {fit} |",
                    flush=True,
                )


def save_plot(path: str, rows, floor: float, metric: str) -> None:
    fig = Figure(figsize=(7, 4.5), dpi=110)
    ax = fig.add_subplot()
    fast: dict[str, list[tuple[int, float]]] = {}
    for label, nfe, fid in rows:
        if "(" in label:
            fast.setdefault(label, []).append((nfe, fid))
        else:
            ax.scatter([nfe], [fid], marker="s", s=40, label=label, zorder=3)
    for label, points in fast.items():
        nfes, fids = zip(*sorted(points))
        ax.plot(nfes, fids, marker="o", label=label)
    ax.axhline(floor, color="gray", linestyle="--", label="real data (floor)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE (score evaluations per sample)")
    ax.set_ylabel(metric)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(path, bbox_inches="tight")


if __name__ == "__main__":
    main()
