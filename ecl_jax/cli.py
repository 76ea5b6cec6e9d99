"""Command line: ``ecl-jax run [CONFIG] [--set key=value ...]``, ``ecl-jax compare RUN_DIR...``.

Also available as ``python -m ecl_jax``. ``ecl-jax bench`` runs the benchmark suite.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


# Fields that do not name a different run: where it goes, its step budget (a finished run
# is extended by asking for more steps) and plot settings.
_NOT_IN_NAME = ("name", "out_dir", "steps", "published", "published_note", "description", "x_axis",
                "checkpoint_every")


def run_name(base: str, overrides: list[str]) -> str:
    """The run folder name for ``base`` (the config's name) and the user's ``--set`` items.

    Each override that changes the trajectory is appended as ``key-value`` so that two
    commands with different settings never share (or rewrite) one folder, e.g.
    ``default`` + ``n_nodes=32``, ``topology=torus`` -> ``default__n_nodes-32_topology-torus``.
    Long names are shortened with a hash of the full list.
    """
    import hashlib
    import re

    parts = []
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.strip()
        if key in _NOT_IN_NAME:
            continue
        value = re.sub(r"[^A-Za-z0-9.+-]+", "-", value.strip().replace(",", "+")).strip("-") or "none"
        parts.append(f"{key}-{value}")
    if not parts:
        return base
    name = f"{base}__{'_'.join(parts)}"
    if len(name) > 80:
        digest = hashlib.blake2b("\n".join(overrides).encode(), digest_size=4).hexdigest()
        name = f"{name[:60].rstrip('_-.')}_{digest}"
    return name


def resolve_run(args: argparse.Namespace):
    """The :class:`~ecl_jax.config.RunConfig` that ``ecl-jax run`` with these parsed
    arguments runs: the experiment file (executed once), its ``SMOKE`` list with
    ``--smoke``, the ``--set`` / ``--algorithms`` overrides, the run folder's name and the
    published values kept for this setting. Validates everything a config can; reads no
    data and writes nothing (tests/test_quoted_commands.py checks every quoted command with it)."""
    import json

    from ecl_jax.config import ConfigError, apply_overrides, load_experiment, parse_sweep, published_for

    config, smoke = load_experiment(args.config)  # the experiment file runs once
    user = list(args.set or [])
    if args.algorithms is not None:
        if not args.algorithms.strip(",").strip():
            raise ConfigError("--algorithms is empty; give a comma-separated list, e.g. ecl-pdmm,gossip")
        user.append(f"algorithms={args.algorithms}")
    if getattr(args, "seeds", None) is not None:
        user.append(f"seeds={args.seeds}")
    overrides, named = list(user), list(user)
    if getattr(args, "sweep", None):
        sweep = dict(config.sweep, **parse_sweep(args.sweep))  # --sweep KEY=... adds to (or replaces) the file's
        overrides.append(f"sweep={json.dumps(sweep)}")
        named += [f"sweep-{item.strip()}" for item in args.sweep]
    base = config.name if args.config else "builtin"
    if args.smoke:
        overrides = list(smoke or ["steps=60", "eval_every=20", "n_train=1000", "n_test=200"]) + overrides
        base = f"{base}_smoke"
    if not any(o.split("=", 1)[0].strip() == "name" for o in user):
        overrides.append(f"name={run_name(base, named)}")
    return published_for(config, apply_overrides(config, overrides))


def _run(args) -> int:
    from ecl_jax import tuning
    from ecl_jax.runner import run_experiment, summarize

    config = resolve_run(args)
    hint = tuning.allocator_hint()
    if hint:
        print(hint, file=sys.stderr)
    result = run_experiment(config, quiet=args.quiet, fresh=args.fresh)
    summary = summarize(result.final)
    width = max(len(k) for k in summary)
    when = f"{config.steps} steps" if config.runtime == "lockstep" else f"{config.steps} ticks of the free-running runtime"
    seeds = f"; mean +- std over {config.seeds} seeds" if config.seeds > 1 else ""
    print(f"final test accuracy after {when} (mean over {config.n_nodes} nodes; worst node{seeds}):")
    def pm(s: dict, key: str, scale: float, w: int, digits: int) -> str:  # a value, +- its std over seeds
        std = f" +- {scale * s[key + '_std']:.{digits}f}" if key + "_std" in s else ""
        return f"{scale * s[key]:{w}.{digits}f}{std}"

    for name, s in summary.items():
        own = "" if config.runtime == "lockstep" else f", {s['epoch']:.2f} epochs of own steps"
        print(f"  {name:<{width}}  {pm(s, 'test_acc_mean', 100, 6, 2)}%  (worst {pm(s, 'test_acc_min', 100, 6, 2)}%, "
              f"test loss {pm(s, 'test_loss_mean', 1, 0, 4)}, {s['wall_time']:.1f}s{own})")
    print(f"run folder: {result.run_dir}")
    for p in result.plots:
        print(f"plot: {p}")
    return 0


def _compare(args) -> int:
    from ecl_jax.plotting import COMPARE_TABLE_MD, compare_runs

    # nothing to compare, not a run folder, partial metrics.csv, bad --out: UserError, exit 2 in main
    written = compare_runs(args.run_dirs, args.out)
    for p in written:
        if p.name == COMPARE_TABLE_MD:
            print(p.read_text(encoding="utf-8"))
    for p in written:
        print(f"{'plot' if p.suffix == '.png' else 'table'}: {p}")
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
    p = argparse.ArgumentParser(prog="ecl-jax", description="Edge-consensus learning experiments in JAX. "
                                "Errors you can fix are one line (exit 2); add --debug anywhere for the traceback.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run an experiment config (default: the embedded MNIST demo)")
    r.add_argument("config", nargs="?", default=None, help="experiment file defining CONFIG (default: built-in)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable); "
                   "per-algorithm options as ALGO.OPTION=VALUE, e.g. ecl-pdmm.eta=2; the run folder's name "
                   "records the overrides (runs/<config>__<key>-<value>...) unless you give name=...")
    r.add_argument("--algorithms", help="comma-separated algorithms, e.g. ecl-pdmm,ecl-admm,gossip,centralized")
    r.add_argument("--seeds", metavar="R", help="R runs of every algorithm (seeds seed .. seed+R-1: initial models, "
                   "minibatches, masks; the split shared unless --set split_per_seed=true) as one compiled program; metrics.csv gets a seed "
                   "column, final.json and the table mean +- std over seeds, the plots a band across seeds "
                   "(same as --set seeds=R)")
    r.add_argument("--sweep", action="append", metavar="KEY=V1,V2,...", help="a grid run as one compiled program "
                   "with the seeds (repeatable: every combination): lr or eta for every algorithm that reads it, "
                   "ALGO.OPTION for one algorithm's float option, e.g. --sweep lr=0.01,0.03,0.1 --sweep "
                   "ecl-pdmm.eta=0.5,1,2; one line per point in the plots, table and final.json, a run column "
                   "in metrics.csv (same as --set sweep={\"lr\": [...]})")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.add_argument("--fresh", action="store_true", help="empty this run's folder (only one that ecl_jax made) "
                   "and start over, after the new config and its data have been checked")
    r.add_argument("--smoke", action="store_true", help="tiny version of the experiment (its SMOKE settings; about 10-15 s on an idle 2-core "
                   "machine, up to a minute on a loaded one)")
    r.set_defaults(func=_run)
    c = sub.add_parser("compare", help="overlay finished runs")
    c.add_argument("run_dirs", nargs="*", metavar="RUN_DIR",
                   help="run folders from `ecl-jax run` (each with config.json and metrics.csv)")
    c.add_argument("--out", default="runs/compare",
                   help="folder for the figures and the comparison tables (CSV, Markdown, JSON; "
                        "docs/outputs.md) (default: runs/compare); never a run folder")
    c.set_defaults(func=_compare)
    b = sub.add_parser("bench", help="benchmarks (see ecl-jax bench --help)")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(func=_bench)
    p.set_defaults(subparsers=sub.choices)
    return p


def _config_key_guess(flag: str) -> str | None:
    """The config field a mistaken ``--flag`` of ``run`` names (``--steps``, ``--step`` -> ``steps``), or None."""
    import dataclasses
    import difflib

    from ecl_jax.config import RunConfig

    name = flag.lstrip("-").replace("-", "_")
    fields = [f.name for f in dataclasses.fields(RunConfig)]
    close = difflib.get_close_matches(name, fields, n=1, cutoff=0.8)
    return close[0] if close else None


def _parse(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; an unknown flag is answered with its subcommand's usage and a guess.

    argparse alone reports ``ecl-jax run CONFIG --step 100`` with the top-level usage; here
    the error names the subcommand's usage and the closest of its flags
    (``--step: did you mean --set?``). Exit 2, like every argparse error.
    """
    from ecl_jax.config import _did_you_mean

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = args.subparsers[args.command]
        flags = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
        at = next((i for i, w in enumerate(extra) if w.startswith("-")), None)
        guess = ""
        if at is not None:
            flag, _, value = extra[at].partition("=")
            if not value and at + 1 < len(extra) and not extra[at + 1].startswith("-"):
                value = extra[at + 1]
            key = _config_key_guess(flag) if args.command == "run" else None
            guess = (f" (config fields are set with --set: did you mean --set {key}={value or '...'}?)" if key
                     else _did_you_mean(flag, flags))
        sub.error(f"unrecognized arguments: {' '.join(extra)}{guess}")
    return args


def _user_error_message(err: BaseException) -> str | None:
    """The one-line message for an error a user can cause, or None for a bug."""
    from ecl_jax.datasets import DatasetNotFoundError
    from ecl_jax.errors import UserError
    from ecl_jax.run_folder import describe_os_error
    from ecl_jax.runner import DivergenceError
    from ecl_jax.topology import TopologyError

    if isinstance(err, (UserError, DivergenceError, TopologyError, DatasetNotFoundError)):
        return str(err)
    if isinstance(err, OSError):
        return describe_os_error(err) or str(err)
    return None


def _catch_ctrl_c() -> None:
    """Hold Ctrl-C until :func:`_deliver_ctrl_c`, then answer it with one line.

    Installed first thing in :func:`main` of a process of its own. SIGINT is blocked
    while JAX and NumPy are imported (a KeyboardInterrupt inside a C extension's import
    comes out as an ImportError with a long traceback) and across the tcmalloc re-exec
    (a blocked signal stays pending through execve instead of being lost); it then raises
    KeyboardInterrupt in :func:`main` and sets :data:`ecl_jax.errors.INTERRUPTED`, so one
    that Python drops (raised inside a garbage-collection callback) still stops a run at
    its next chunk end, without the "Exception ignored" report.
    """
    import signal

    from ecl_jax.errors import INTERRUPTED

    def on_sigint(signum, frame):
        INTERRUPTED.set()
        raise KeyboardInterrupt

    def unraisable(info, previous=sys.unraisablehook):
        if not (info.exc_type is KeyboardInterrupt and INTERRUPTED.is_set()):
            previous(info)

    signal.signal(signal.SIGINT, on_sigint)
    sys.unraisablehook = unraisable
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _deliver_ctrl_c() -> None:
    """Unblock SIGINT: a Ctrl-C held since :func:`_catch_ctrl_c` arrives now."""
    import signal

    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


_INTERRUPTED = {
    "run": "rerun the same command to resume from the last checkpoint",
    "compare": "no run folder was changed; rerun the same command to draw the comparison",
    "bench": "the benchmark's finished rows are in its --out folder (results.jsonl)",
}


def _interrupted(command: str) -> int:
    """The one line a Ctrl-C of ``command`` gets; exit status 130."""
    print(f"\ninterrupted: {_INTERRUPTED.get(command, 'nothing was changed')}", file=sys.stderr)
    return 130


def main(argv: list[str] | None = None) -> int:
    own_process = argv is None  # python -m ecl_jax, ecl-jax: the process and its signals are ours
    if own_process:
        _catch_ctrl_c()  # before anything imports JAX (ecl_jax's own import is light)
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    command = argv[0] if argv else ""
    try:
        if own_process and command == "run":  # a faster allocator if installed (re-executes this process)
            from ecl_jax import tuning

            tuning.reexec_with_tcmalloc(argv)
        if own_process:
            import jax  # noqa: F401  (the slow imports, with Ctrl-C held)

            _deliver_ctrl_c()
        if command == "bench":  # everything after "bench" belongs to the benchmark's own parser
            return _bench(argparse.Namespace(rest=argv[1:]))  # its Ctrl-C: experiments/bench/__main__.py
        args = _parse([a for a in argv if a != "--debug"])
        return args.func(args)
    except KeyboardInterrupt:
        return _interrupted(command)
    except Exception as err:
        from ecl_jax.errors import INTERRUPTED

        if INTERRUPTED.is_set() and not debug:  # e.g. a Ctrl-C inside an import, re-raised as ImportError
            return _interrupted(command)
        msg = _user_error_message(err)
        if msg is None or debug:
            raise
        print(f"error: {msg}", file=sys.stderr)
        print("(run with --debug for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
