"""The driver: plans (quick / full), memory estimates, one subprocess per configuration
(``python -m experiments.bench --worker JSON`` prints one ``BENCH_RESULT`` JSON line),
the time budget and ``--max-gb``, machine info, and :func:`main` (the command line).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from ecl_jax import tuning  # before JAX starts in this process: the speed settings (docs/performance.md)

from .common import data_rows, describe, load_avg
from .report import fmt, rebuild, write_outputs
from .workloads import WORKLOADS

REPO = Path(__file__).resolve().parents[2]
RESULT_TAG = "BENCH_RESULT "
BASELINE_TABLE = "compare.md"
"""The old-vs-new table ``--baseline`` writes into ``--out`` (docs/outputs.md#python--m-experimentsbench)."""


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_worker(cfg: dict) -> None:
    """Entry point of a subprocess: run one configuration, print one JSON line."""
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    import jax

    rss_import = _rss_mb()
    out = dict(cfg)
    try:
        out.update(WORKLOADS[cfg["kind"]](cfg))
        out["status"] = "ok"
    except Exception as err:  # reported in the table, not fatal to the suite
        out["status"] = f"error: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    out.update(
        peak_rss_mb=_rss_mb(),
        rss_after_import_mb=rss_import,
        rss_start_mb=rss0,
        worker_wall_s=time.perf_counter() - t0,
        n_devices=len(jax.devices()),
        load_avg_end=load_avg(),
    )
    print(RESULT_TAG + json.dumps(out, default=str), flush=True)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which configurations to run (see :func:`quick_plan`, :func:`full_plan`)."""

    configs: tuple[dict, ...]
    timeout_s: int


def _est_engine_bytes(model_params: int, n: int, topo: str, alg: str) -> float:
    """Rough peak bytes of an engine run: state + grads + temporaries + data."""
    import numpy as np

    if topo == "ring":
        d = 2
    elif topo == "exponential":
        d = 2 * int(np.ceil(np.log2(n))) - 1 if n > 2 else 1
    else:
        d = 4
    per = model_params * n * 4
    if alg == "ecl-pdmm":
        arrays = 1 + d + 1 + (d + 1)  # w, z, grads, temporaries (exchange output)
    else:
        arrays = 1 + 1 + 1 + d  # w, grads, half step, neighbour temporaries
    return per * arrays + n * data_rows(n) * 784 * 4


PARAMS = {"logistic": 7_850, "mlp": 203_530, "kdd20_mnist_cnn": 1_199_882}


def _steps_for(model: str, n: int, kind: str) -> tuple[int, int]:
    """(steps per timed chunk, repeats) by cost: enough work per timing, bounded wall."""
    work = PARAMS[model] * n
    if model == "kdd20_mnist_cnn":
        work *= 20
    if work <= 2e6:
        return 20, 5
    if work <= 2e7:
        return 10, 3
    if work <= 2e8:
        return 5, 3
    if work <= 1e9:
        return 3, 2
    return 2, 2


def quick_plan() -> Plan:
    """22 small configurations (128 s on an idle 2-core Zen 5 VM): every kind once."""
    cfgs: list[dict] = []

    def eng(model, alg, topo, n, **kw):
        s, r = _steps_for(model, n, "engine")
        cfgs.append(dict(kind="engine", model=model, algorithm=alg, topology=topo, n=n, steps=s, repeats=r, **kw))

    for model in ("logistic", "mlp"):
        for n in (8, 64):
            eng(model, "ecl-pdmm", "ring", n)
        eng(model, "gossip", "ring", 64)
        s, r = _steps_for(model, 64, "bigbatch")
        cfgs.append(dict(kind="bigbatch", model=model, n=64, steps=s, repeats=r))
        cfgs.append(dict(kind="loop", variant="loop-ops", model=model, algorithm="ecl-pdmm", topology="ring",
                         n=64, steps=2, repeats=2))
    eng("logistic", "ecl-pdmm", "exponential", 64)
    eng("mlp", "local", "ring", 64)
    cfgs.append(dict(kind="loop", variant="loop-node", model="mlp", algorithm="ecl-pdmm", topology="ring",
                     n=64, steps=2, repeats=2))
    eng("mlp", "ecl-pdmm", "ring", 256)
    cfgs.append(dict(kind="bigbatch", model="mlp", n=256, steps=3, repeats=2))
    cfgs.append(dict(kind="update", model="mlp", algorithm="ecl-pdmm", topology="ring", n=64, steps=5, repeats=3))
    cfgs.append(dict(kind="user_rule", model="mlp", topology="ring", n=64, steps=10, repeats=3))
    cfgs.append(dict(kind="largeN", model="logistic", algorithm="ecl-pdmm", topology="ring", n=2000, steps=5,
                     repeats=2))
    for dev in (1, 4):
        cfgs.append(dict(kind="devices", model="logistic", algorithm="ecl-pdmm", topology="ring", n=64, steps=10,
                         repeats=2, devices=dev))
    for prec in ("float32", "bfloat16"):
        cfgs.append(dict(kind="precision", model="logistic", algorithm="ecl-pdmm", topology="ring", n=8, steps=200,
                         precision=prec))
    return Plan(tuple(cfgs), timeout_s=300)


def full_plan(max_gb: float = 18.0) -> Plan:
    """The whole suite, most important configurations first (the driver's ``--budget``
    stops launching new ones; a skipped configuration is listed with its reason)."""
    cfgs: list[dict] = []
    seen: set[str] = set()

    def add(**c):
        key = json.dumps(c, sort_keys=True)
        if key in seen:
            return
        seen.add(key)
        if c["kind"] in ("engine", "layout", "devices", "largeN"):
            est = _est_engine_bytes(PARAMS[c["model"]], c["n"], c["topology"], c["algorithm"]) / 2**30
            if est > max_gb:
                c["skip"] = f"estimated {est:.0f} GiB > {max_gb:.0f} GiB"
        cfgs.append(c)

    def eng(model, alg, topo, n, kind="engine", **kw):
        s, r = _steps_for(model, n, kind)
        add(kind=kind, model=model, algorithm=alg, topology=topo, n=n, steps=s, repeats=r, **kw)

    def bigbatch(model, n, **kw):
        s, r = _steps_for(model, n, "bigbatch")
        add(kind="bigbatch", model=model, n=n, steps=s, repeats=r, **kw)

    def loops(model, topo, n, algs=("ecl-pdmm", "gossip")):
        ls = 1 if n * PARAMS[model] > 5e7 else 2
        for alg in algs:
            for variant in ("loop-node", "loop-ops") if alg == "ecl-pdmm" else ("loop-node",):
                add(kind="loop", variant=variant, model=model, algorithm=alg, topology=topo, n=n, steps=ls, repeats=2)

    # 1. the targets: N = 64 against the loops, N = 512 against the big-batch model, bandwidth
    for model in ("logistic", "mlp"):
        for n in (64, 512):
            for alg in ("ecl-pdmm", "gossip", "local"):
                eng(model, alg, "ring", n)
            bigbatch(model, n)
        loops(model, "ring", 64)
    for model, n in (("mlp", 64), ("mlp", 512), ("logistic", 4096)):
        for layout in ("shift", "slots", "edges"):
            add(kind="update", model=model, algorithm="ecl-pdmm", topology="ring", n=n, steps=5, repeats=3, layout=layout)
        add(kind="update", model=model, algorithm="gossip", topology="ring", n=n, steps=5, repeats=3)
    add(kind="update", model="mlp", algorithm="ecl-pdmm", topology="exponential", n=64, steps=5, repeats=3)
    # a user's rule on the library's primitives (notebook 02) against the built-in ECL-PDMM
    add(kind="user_rule", model="mlp", topology="ring", n=64, steps=20, repeats=5)
    # 2. large N, devices, precision
    for topo in ("ring", "torus"):
        for n in (2500, 5000, 10000):
            eng("logistic", "ecl-pdmm", topo, n, kind="largeN")
    for model, n in (("logistic", 512), ("mlp", 64), ("mlp", 512)):
        for dev in (1, 4):
            eng(model, "ecl-pdmm", "ring", n, kind="devices", devices=dev)
    for prec in ("float32", "bfloat16"):
        for model, n in (("mlp", 64), ("mlp", 512), ("kdd20_mnist_cnn", 8)):
            eng(model, "ecl-pdmm", "ring", n, precision=prec, tag="precision-speed")
            bigbatch(model, n, precision=prec, tag="precision-speed")
        for model in ("logistic", "mlp"):
            add(kind="precision", model=model, algorithm="ecl-pdmm", topology="ring", n=16, steps=1500, precision=prec)
    # 3. layouts end to end
    for model, n in (("mlp", 64), ("mlp", 512), ("logistic", 4096)):
        for layout in ("shift", "slots", "edges"):
            eng(model, "ecl-pdmm", "ring", n, kind="layout", layout=layout)
    # 4. the sweep: every model, both algorithms, both graphs, N up to what fits
    sizes = {"logistic": (8, 64, 512, 4096, 16384), "mlp": (8, 64, 512, 2048, 4096), "kdd20_mnist_cnn": (8, 64)}
    loop_max = {"logistic": 512, "mlp": 512, "kdd20_mnist_cnn": 64}
    for model, ns in sizes.items():
        for n in ns:
            for alg in ("ecl-pdmm", "gossip"):
                for topo in ("ring", "exponential"):
                    eng(model, alg, topo, n)
            bigbatch(model, n)
            if n <= loop_max[model]:
                for topo in ("ring", "exponential"):
                    loops(model, topo, n)
    return Plan(tuple(cfgs), timeout_s=900)


def machine_info() -> dict:
    import jax
    import jaxlib

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = float("nan")
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    mem = int(line.split()[1]) / 2**20
                    break
    except OSError:
        pass
    return dict(
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        cpu=cpu,
        cores=os.cpu_count(),
        memory_gib=round(mem, 1),
        platform=platform.platform(),
        python=platform.python_version(),
        jax=jax.__version__,
        jaxlib=jaxlib.__version__,
        backend=jax.default_backend(),
        devices=str(jax.devices()),
        load_avg_start=load_avg(),
        git=_git_state(),
    )


def _git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return head + (" + uncommitted changes" if dirty else "")
    except OSError:
        return "unknown"


def _worker_env(cfg: dict) -> dict:
    """The worker's environment: ecl_jax's speed settings (ecl_jax/tuning.py) as a user gets
    them (tcmalloc preloaded where installed), except those named in ``cfg["settings_off"]``."""
    off = set(cfg.get("settings_off", ()))
    bad = off - set(tuning.SETTINGS)
    if bad:
        raise ValueError(f"unknown speed settings {sorted(bad)}; valid: {', '.join(tuning.SETTINGS)}")
    env = dict(os.environ)
    for setting in tuning.SETTINGS:
        env.pop(f"ECL_JAX_{setting.upper()}", None)
        if setting in off:
            env[f"ECL_JAX_{setting.upper()}"] = "0"
    # the driver's own import of ecl_jax may have added the flag: the worker decides again
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if f != tuning.EIGEN_CONV_FLAG)
    preload = [x for x in env.get("LD_PRELOAD", "").split() if "tcmalloc" not in x]
    env["LD_PRELOAD"] = " ".join(preload)
    if not preload:
        del env["LD_PRELOAD"]
    return tuning.preload_env(env)


def _launch(cfg: dict, timeout_s: int, repo: Path = REPO) -> dict:
    env = _worker_env(cfg)
    dev = int(cfg.get("devices", 1))
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    if dev > 1:
        flags.append(f"--xla_force_host_platform_device_count={dev}")
    env["XLA_FLAGS"] = " ".join(flags)
    if repo != REPO:  # another checkout's ecl_jax and bench (see compare_trees)
        env["PYTHONPATH"] = os.pathsep.join([str(repo)] + [x for x in [env.get("PYTHONPATH")] if x])
    cmd = [sys.executable, "-m", "experiments.bench", "--worker", json.dumps(cfg)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return dict(cfg, status=f"timeout after {timeout_s}s", worker_wall_s=time.perf_counter() - t0)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    status = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"exit {proc.returncode}: {tail[0][:200]}"
    return dict(cfg, status=status, worker_wall_s=time.perf_counter() - t0)


def run_plan(plan: Plan, out_dir: Path, *, budget_s: float | None = None, verbose: bool = True) -> list[dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    partial = out_dir / "results.jsonl"
    partial.write_text("")
    t_start = time.perf_counter()
    for k, cfg in enumerate(plan.configs):
        if cfg.get("skip"):
            row = dict(cfg, status=f"skipped: {cfg['skip']}")
        elif budget_s is not None and time.perf_counter() - t_start > budget_s:
            row = dict(cfg, status="skipped: benchmark time budget spent")
        else:
            row = _launch(cfg, plan.timeout_s)
        rows.append(row)
        with partial.open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        if verbose:
            rate = f"{row['node_steps_per_s']:.4g} node-steps/s" if "node_steps_per_s" in row else ""
            if "update_gbs" in row:
                rate = f"update {row['update_gbs']:.3g} GB/s, exchange {row['exchange_gbs']:.3g} GB/s, ew {row['ew_loop_gbs']:.3g} GB/s"
            if "test_acc_mean_model" in row:
                rate = f"test acc {row['test_acc_mean_model']:.4f}"
            mem = f" peak {row['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in row else ""
            print(f"[{k + 1}/{len(plan.configs)} {time.perf_counter() - t_start:6.0f}s] {describe(cfg)}: "
                  f"{row['status'] if row['status'] != 'ok' else rate}{mem}", flush=True)
    return rows


README_ROWS = (
    dict(kind="engine", model="logistic", algorithm="ecl-pdmm", topology="ring", n=64),
    dict(kind="engine", model="logistic", algorithm="ecl-pdmm", topology="ring", n=512),
    dict(kind="largeN", model="logistic", algorithm="ecl-pdmm", topology="ring", n=10000),
    dict(kind="engine", model="logistic", algorithm="ecl-pdmm", topology="exponential", n=512),
    dict(kind="engine", model="mlp", algorithm="ecl-pdmm", topology="ring", n=64),
    dict(kind="engine", model="mlp", algorithm="gossip", topology="ring", n=64),
    dict(kind="engine", model="mlp", algorithm="ecl-pdmm", topology="ring", n=512),
    dict(kind="engine", model="kdd20_mnist_cnn", algorithm="ecl-pdmm", topology="ring", n=8),
)
"""The engine rows the README's speed table shows (the KDD20 CNN at N = 8 here: N = 64 compiles
for minutes), for :func:`compare_trees`."""


def compare_trees(baseline: Path, out_dir: Path, rounds: int = 3, only_models: set[str] | None = None) -> Path:
    """Old code against new code in one run: every README engine row run by this checkout and
    by the checkout ``baseline`` (e.g. ``git worktree add /tmp/old HEAD~1``) in alternating
    worker processes, ``rounds`` times each; writes into ``out_dir`` a markdown table of each
    side's best node-steps/s and the ratio new / old per round, and every worker's raw result
    as JSON lines."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# This checkout vs {baseline} (node-steps/s, best of each worker's repeats)\n",
             f"{machine_info()['cpu']}; {rounds} alternating rounds per row.\n",
             "| model | algorithm | graph | N | old (median) | new (median) | new / old per round | median |",
             "|---|---|---|---:|---:|---:|---|---:|"]
    with (out_dir / "compare.jsonl").open("w") as log:
        for row in README_ROWS:
            if only_models and row["model"] not in only_models:
                continue
            steps, repeats = _steps_for(row["model"], row["n"], row["kind"])
            cfg = dict(row, steps=steps, repeats=repeats, layout="fast")  # "fast" = shift in old and new checkouts alike
            old, new = [], []
            for _ in range(rounds):
                for side, repo, acc in (("new", REPO, new), ("old", Path(baseline), old)):
                    r = _launch(cfg, 1800, repo)
                    log.write(json.dumps(dict(r, side=side)) + "\n")
                    log.flush()
                    acc.append(r.get("node_steps_per_s") if r.get("status") == "ok" else None)
            ratios = [n / o for n, o in zip(new, old) if n and o]
            med = lambda xs: sorted(xs)[len(xs) // 2] if xs else None
            lines.append(f"| {row['model']} | {row['algorithm']} | {row['topology']} | {row['n']} | "
                         f"{fmt(med([x for x in old if x]), 4)} | {fmt(med([x for x in new if x]), 4)} | "
                         f"{', '.join(fmt(x) for x in ratios)} | {fmt(med(ratios))} |")
            print(lines[-1], flush=True)
    path = out_dir / BASELINE_TABLE
    path.write_text("\n".join(lines) + "\n")
    return path


SETTINGS_ROWS = (
    dict(kind="engine", model="kdd20_mnist_cnn", algorithm="ecl-pdmm", topology="complete", n=3, batch=100,
         steps=5, repeats=3),
    dict(kind="engine", model="kdd20_mnist_cnn", algorithm="gossip", topology="complete", n=3, batch=100,
         steps=5, repeats=3),
    dict(kind="engine", model="kdd20_mnist_cnn", algorithm="ecl-pdmm", topology="ring", n=8, batch=100,
         steps=3, repeats=3),
)
"""The KDD20 CNN rows of the speed settings' comparison (the official code's setting: batch 100)."""
OTHER_ROWS = tuple(dict(kind="engine", model=m, algorithm="ecl-pdmm", topology="ring", n=n, steps=s, repeats=r)
                   for m in ("logistic", "mlp") for n in (64, 512) for s, r in [_steps_for(m, n, "engine")])
"""Rows checked for no slow-down by the settings (and the allocator's effect on the MLP)."""
SETTINGS_VARIANTS = {
    "default": (),
    "eigen_conv off": ("eigen_conv",),
    "reduce_pool off": ("reduce_pool",),
    "tcmalloc off": ("tcmalloc",),
    "all off": ("eigen_conv", "reduce_pool", "tcmalloc"),
}
OTHER_VARIANTS = ("default", "tcmalloc off", "all off")
OFFICIAL_KDD20_CNN = (10.7, "the official KDD20 code (PyTorch, one process per node) on ECL-PDMM, KDD20 CNN, N = 3 "
                      "complete, batch 100: 10.7 node-steps/s, measured on a Zen 5 part of this VM kind for issue 29 "
                      "(2026-12), not re-run here")
SETTINGS_TABLE = "settings.md"


def compare_settings(out_dir: Path, rounds: int = 3, rows: tuple = SETTINGS_ROWS + OTHER_ROWS) -> Path:
    """ecl_jax's speed settings (ecl_jax/tuning.py) on and off in one run: for every row,
    every variant in alternating worker processes, ``rounds`` times; writes ``settings.md`` (docs/outputs.md)
    (median and range of each variant's node-steps/s, ratios to ``default`` and ``all off``)
    and every worker's result as JSON lines into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    lines = [f"# Speed settings on and off (node-steps/s; best of each worker's repeats, median and range over "
             f"{rounds} interleaved rounds)\n",
             f"{machine['cpu']}, {machine['cores']} cores, jax {machine['jax']}, {machine['date']}, "
             f"tcmalloc {'installed' if tuning.find_tcmalloc() else 'not installed'}.\n",
             "| model | algorithm | graph | N | batch | variant | median | range | default / this | this / all off |",
             "|---|---|---|---:|---:|---|---:|---|---:|---:|"]
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else None  # noqa: E731
    with (out_dir / "settings.jsonl").open("w") as log:
        for row in rows:
            names = SETTINGS_VARIANTS if row["model"] == "kdd20_mnist_cnn" else OTHER_VARIANTS
            got: dict[str, list[float]] = {v: [] for v in names}
            for k in range(rounds):
                order = list(names) if k % 2 == 0 else list(names)[::-1]
                for variant in order:
                    r = _launch(dict(row, settings_off=list(SETTINGS_VARIANTS[variant])), 1800)
                    log.write(json.dumps(dict(r, variant=variant, round=k), default=str) + "\n")
                    log.flush()
                    if r.get("status") == "ok":
                        got[variant].append(r["node_steps_per_s"])
                    else:
                        print(f"  {describe(row)} {variant}: {r.get('status')}", flush=True)
            base, off = med(got["default"]), med(got["all off"])
            for variant, xs in got.items():
                m = med(xs)
                lines.append(
                    f"| {row['model']} | {row['algorithm']} | {row['topology']} | {row['n']} | "
                    f"{row.get('batch', 32)} | {variant} | {fmt(m, 4)} | "
                    f"{fmt(min(xs), 4) if xs else '-'}-{fmt(max(xs), 4) if xs else '-'} | "
                    f"{fmt(base / m) if base and m else '-'} | {fmt(m / off) if m and off else '-'} |")
                print(lines[-1], flush=True)
    value, source = OFFICIAL_KDD20_CNN
    lines += ["", f"Reference: {source}."]
    path = out_dir / SETTINGS_TABLE
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    doc = sys.modules[__package__].__doc__
    prog = "ecl-jax bench" if sys.argv[:1] == ["bench"] else "python -m experiments.bench"  # ecl_jax/cli.py sets it
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="small sizes only: 22 configurations, about 2 min on an idle 2-core VM (128 s on a Zen 5 "
                        "part, 2026-12-07), several times that on a loaded or slower machine; each row prints "
                        "its elapsed time")
    p.add_argument("--out", default=None, help="output folder (default runs/bench or runs/bench_quick)")
    p.add_argument("--budget", type=float, default=None, help="stop launching new configurations after this many seconds")
    p.add_argument("--max-gb", type=float, default=18.0, help="skip engine configurations estimated above this (GiB)")
    p.add_argument("--only", default=None, help="comma-separated kinds to run (engine,bigbatch,loop,layout,update,user_rule,largeN,devices,precision)")
    p.add_argument("--report", default=None, metavar="JSONL", help="only rebuild the tables from a results.jsonl")
    p.add_argument("--baseline", default=None, metavar="DIR",
                   help="compare this checkout with the checkout DIR on the README's engine rows (refactors keep speed)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per row with --baseline or --settings")
    p.add_argument("--settings", action="store_true",
                   help="ecl_jax's speed settings on and off on the KDD20 CNN (and logistic/MLP) rows, interleaved")
    p.add_argument("--seeds", type=int, default=None, metavar="R",
                   help="R seeds of the default job (ecl-jax run experiments/default.py --seeds R) as one program against R sequential "
                        "runs, --seeds-steps steps each; prints the wall times and their ratio")
    p.add_argument("--seeds-steps", type=int, default=500, metavar="T", help="steps per run with --seeds (default 500)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        run_worker(json.loads(args.worker))
        return 0
    if args.baseline:
        models = set(args.only.split(",")) if args.only else None
        path = compare_trees(Path(args.baseline), Path(args.out or "runs/bench_compare"), args.rounds, models)
        print(f"wrote {path}")
        return 0
    if args.seeds is not None:
        if args.seeds < 2 or args.seeds_steps < 1:
            p.error(f"--seeds needs R >= 2 and --seeds-steps T >= 1, got R={args.seeds}, T={args.seeds_steps}")
        row = _launch(dict(kind="seeds", seeds=args.seeds, steps=args.seeds_steps), 3600)
        if row.get("status") != "ok":
            print(f"seeds benchmark failed: {row.get('status')}", file=sys.stderr)
            return 1
        print(f"{machine_info()['cpu']}: {args.seeds} seeds x {args.seeds_steps} steps of the default job "
              f"({row['model']}, {', '.join(row['algorithms'])}, N={row['n_nodes']}): one program {row['batched_s']:.1f} s, "
              f"{args.seeds} sequential runs {row['sequential_s']:.1f} s, ratio {row['speedup']:.2f}x "
              f"(final accuracies agree to {row['max_acc_gap']:.1e})")
        return 0
    if args.settings:
        path = compare_settings(Path(args.out or "runs/bench_settings"), args.rounds)
        print(f"wrote {path}")
        return 0
    out_dir = Path(args.out or ("runs/bench_quick" if args.quick else "runs/bench"))
    machine = machine_info()
    if args.report:
        csv_path, md_path, _ = rebuild(Path(args.report), out_dir, machine)
    else:
        plan = quick_plan() if args.quick else full_plan(args.max_gb)
        if args.only:
            kinds = set(args.only.split(","))
            plan = Plan(tuple(c for c in plan.configs if c["kind"] in kinds), plan.timeout_s)
        took = ("; --quick took 128 s on an idle 2-core Zen 5 VM (2026-12-07), more on a loaded one"
                if args.quick and not args.only else "")
        print(f"{len(plan.configs)} configurations -> {out_dir}  ({machine['cpu']}, {machine['cores']} cores){took}",
              flush=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "machine.json").write_text(json.dumps(machine, indent=2) + "\n")
        rows = run_plan(plan, out_dir, budget_s=args.budget)
        csv_path, md_path, _ = write_outputs(rows, machine, out_dir)
    print(md_path.read_text())
    print(f"wrote {csv_path} and {md_path}")
    return 0
