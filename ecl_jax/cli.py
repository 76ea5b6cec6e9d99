"""Command line: ``ecl-jax run [CONFIG] [--set key=value ...]``, ``ecl-jax compare RUN_DIR...``.

Also available as ``python -m ecl_jax``. ``ecl-jax bench`` runs the benchmark suite.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _run(args) -> int:
    from ecl_jax.config import apply_overrides, load_config
    from ecl_jax.runner import run_experiment, summarize

    config = load_config(args.config)
    overrides = list(args.set or [])
    if args.algorithms:
        overrides.append(f"algorithms={args.algorithms}")
    if args.smoke:
        smoke = getattr(_experiment_module(args.config), "SMOKE", None) if args.config else None
        overrides = list(smoke or ["steps=60", "eval_every=20", "n_train=1000", "n_test=200"]) + overrides
        if not any(o.startswith("name=") for o in overrides):
            overrides.append(f"name={config.name}_smoke")
    config = apply_overrides(config, overrides)
    result = run_experiment(config, quiet=args.quiet, fresh=args.fresh)
    summary = summarize(result.final)
    width = max(len(k) for k in summary)
    print(f"final test accuracy after {config.steps} steps (mean over {config.n_nodes} nodes; worst node):")
    for name, s in summary.items():
        print(f"  {name:<{width}}  {100 * s['test_acc_mean']:6.2f}%  (worst {100 * s['test_acc_min']:6.2f}%, "
              f"test loss {s['test_loss_mean']:.4f}, {s['wall_time']:.1f}s)")
    print(f"run folder: {result.run_dir}")
    for p in result.plots:
        print(f"plot: {p}")
    return 0


def _experiment_module(path):
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location(f"ecl_jax_experiment_{pathlib.Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compare(args) -> int:
    from ecl_jax.plotting import compare_runs

    for p in compare_runs(args.run_dirs, args.out):
        print(f"plot: {p}")
    return 0


def _bench(args) -> int:
    import os
    import runpy

    # experiments/ sits next to the package in the repository (not installed): make it
    # importable from the console script too.
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for path in (repo, os.getcwd()):
        if os.path.isdir(os.path.join(path, "experiments")) and path not in sys.path:
            sys.path.insert(0, path)
    sys.argv = ["bench"] + list(args.rest)
    try:
        runpy.run_module("experiments.bench", run_name="__main__")
    except SystemExit as done:  # the benchmark ends with sys.exit(main())
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ecl-jax", description="Edge-consensus learning experiments in JAX.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run an experiment config (default: the embedded MNIST demo)")
    r.add_argument("config", nargs="?", default=None, help="experiment file defining CONFIG (default: built-in)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable); "
                   "per-algorithm options as ALGO.OPTION=VALUE, e.g. ecl-pdmm.eta=2")
    r.add_argument("--algorithms", help="comma-separated algorithms, e.g. ecl-pdmm,ecl-admm,gossip,centralized")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.add_argument("--fresh", action="store_true", help="discard an existing run folder instead of resuming")
    r.add_argument("--smoke", action="store_true", help="tiny version of the experiment (seconds)")
    r.set_defaults(func=_run)
    c = sub.add_parser("compare", help="overlay finished runs")
    c.add_argument("run_dirs", nargs="+")
    c.add_argument("--out", default="runs/compare")
    c.set_defaults(func=_compare)
    b = sub.add_parser("bench", help="benchmarks (see experiments/bench.py --help)")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(func=_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    from ecl_jax.config import ConfigError
    from ecl_jax.runner import DivergenceError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # everything after "bench" belongs to the benchmark's own parser
        return _bench(argparse.Namespace(rest=argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DivergenceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
