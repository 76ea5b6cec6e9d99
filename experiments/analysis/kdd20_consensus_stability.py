"""Linear stability of the KDD20 round robin: why it resonates in lockstep and not with drifting clocks.

With the gradients set to zero, one ECL step is a *linear* map of the whole state (models,
pair-stored duals, smoothed duals, received models); every parameter leaf evolves on its
own, with eta and rho scaled by its s = sqrt(fan_in) (the KDD20 code's option). The map of
step t depends on the masks of step t, so the stability of a schedule is the top Lyapunov
exponent of the product of the step maps along it:

    lambda = lim_T (1/T) log || M_T ... M_2 M_1 x ||,     growth per step = exp(lambda).

1 is neutral (without gradients the mean model is conserved). In lockstep a round robin is
exactly periodic (period 12 for the KDD20 setting) and the growth is the spectral radius
of the period's product to the power 1/12; with drifting clocks the product varies.

Everything here is ecl_jax's own step (``ecl-pdmm`` / ``ecl-admm`` with the code's dual
smoothing, built from ``experiments/kdd2020/mnist_round_robin.py`` with fan_in_scaling on)
driven by the engine's own masks (the round robin every 6 own updates, lockstep or under
the free-running runtime, or random exchange), iterated from a random state with one leaf
per scale s (length round(s^2), so its sqrt(fan_in) is s) and renormalised per leaf every
step; the exponent is the mean log norm over the second half. Scales: a log grid in
[1, 100] plus the KDD CNN's four layers (conv1 3, fc2 11.3, conv2 17.0, fc1 96).

    python experiments/analysis/kdd20_consensus_stability.py                  # 3,000 steps, about 30 min
    python experiments/analysis/kdd20_consensus_stability.py --steps 300 --out runs/stability_300

Writes ``growth.csv`` (growth per step for every schedule, algorithm and s), ``growth.png``
(growth against s, one panel per algorithm) and prints the growth at the CNN's four scales
and the worst over s (default ``--out runs/kdd20_consensus_stability``). About 30 minutes on
a 2-core CPU at the default 3,000 steps.
(docs/algorithms.md#free-running-runtime; REPRODUCTION.md section 3.)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ecl_jax import masks  # noqa: E402
from ecl_jax.config import load_config  # noqa: E402
from ecl_jax.participation import Participation  # noqa: E402
from ecl_jax.registry import build_algorithm, build_topology  # noqa: E402
from ecl_jax.runtime import runtime_from_string  # noqa: E402

SCHEDULES = {  # label: (edge schedule, runtime)
    "round robin, lockstep, offsets 1/3/5 in node order (before)": ("round_robin:interval=6,offsets=1/3/5", "lockstep"),
    "round robin, lockstep, official offsets": ("round_robin:interval=6,offsets=5/1/3", "lockstep"),
    "round robin, free clocks, jitter 10 %": ("round_robin:interval=6,offsets=5/1/3", "free:jitter=0.1,phase=random"),
    "round robin, free clocks, offsets 1/3/5, jitter 10 %": ("round_robin:interval=6,offsets=1/3/5", "free:jitter=0.1,phase=random"),
    "round robin, free clocks, jitter 10 %, one node 10 % slower":
        ("round_robin:interval=6,offsets=5/1/3", "free:jitter=0.1,phase=random,stragglers=1,straggler_speed=0.9"),
    "random p = 1/6, lockstep": ("bernoulli:K=6", "lockstep"),
}
ALGORITHMS = {"ecl-pdmm": "ECL-PDMM", "ecl-admm": "ECL-ADMM (code's smoothing)"}
CNN_SCALES = {"conv1": 3.0, "fc2": 11.31, "conv2": 16.97, "fc1": 96.0}  # sqrt(fan_in) of the KDD20 MNIST CNN's layers


def kdd_config(schedule: str, runtime: str, algorithm: str):
    """experiments/kdd2020/mnist_round_robin.py with another exchange schedule and runtime."""
    config = load_config(str(ROOT / "experiments" / "kdd2020" / "mnist_round_robin.py"))
    return dataclasses.replace(config, edge_schedule=schedule, runtime=runtime, algorithms=(algorithm,))


def scale_params(scales, n_nodes: int, key: jax.Array) -> dict:
    """One random leaf per scale s, of length round(s^2), so its sqrt(fan_in) is s (up to rounding)."""
    return {f"s{k:03d}": jax.random.normal(jax.random.fold_in(key, k), (n_nodes, max(1, round(s * s))))
            for k, s in enumerate(scales)}


def _group(path) -> str:
    """The params key a state leaf belongs to (models, duals, smoothed duals, received alike)."""
    return next(p.key for p in reversed(path) if isinstance(p, jax.tree_util.DictKey))


def participants(schedule: str, runtime: str, topology, key: jax.Array, steps: int):
    """The participants (edge masks [T, E], node masks, own steps) of steps 0 .. steps - 1 of a run
    with ``key`` under ``schedule`` and ``runtime``: the engine's own draws
    (:meth:`ecl_jax.participation.Participation.along`, tests/test_runtime.py checks it)."""
    part = Participation(topology, masks.edge_schedule_from_string(schedule),
                         runtime=runtime_from_string(runtime, topology.n_nodes))
    _, who = jax.jit(lambda k: part.along(k, steps))(key)
    return who


def growth(algorithm: str, schedule: str, runtime: str, scales, steps: int, seed: int = 0) -> np.ndarray:
    """Growth per step, exp(top Lyapunov exponent), of the zero-gradient step map for each scale.

    The map is ecl_jax's own ECL step with the KDD20 options (fan_in_scaling on), masks from
    the engine's schedule and runtime. Every leaf of the state is renormalised per scale
    after each step; the mean log of the norms over the second half is the exponent.
    """
    config = kdd_config(schedule, runtime, algorithm)
    alg, topo = build_algorithm(algorithm, config), build_topology(config)
    n = topo.n_nodes
    key = jax.random.PRNGKey(seed)
    who = participants(schedule, runtime, topo, key, steps)  # what a run with this key draws
    params = scale_params(scales, n, key)
    state = alg.init(params, topo)
    # a random start for every float leaf (duals and received copies too), not only the models
    flat, treedef = jax.tree_util.tree_flatten(state)
    flat = [jax.random.normal(jax.random.fold_in(key, 1000 + i), a.shape) if a.dtype == jnp.float32 else a
            for i, a in enumerate(flat)]
    state = jax.tree_util.tree_unflatten(treedef, flat)
    names = sorted(params)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)

    def norms(st) -> dict:
        sq = {k: 0.0 for k in names}
        for path, a in jax.tree_util.tree_flatten_with_path(st)[0]:
            if a.dtype == jnp.float32:
                sq[_group(path)] = sq[_group(path)] + jnp.sum(a * a)
        return {k: jnp.sqrt(v) for k, v in sq.items()}

    def renormalise(st, r: dict):
        return jax.tree_util.tree_map_with_path(lambda p, a: a / r[_group(p)] if a.dtype == jnp.float32 else a, st)

    def body(carry, step):
        st, log_sum = carry
        t, edge_active, node_active = step
        st = alg.step(st, zeros, topo, edge_active, node_active)  # zero gradients: the consensus part
        r = norms(st)
        logs = jnp.stack([jnp.log(r[k]) for k in names])
        return (renormalise(st, r), log_sum + jnp.where(t >= steps // 2, logs, 0.0)), None

    carry0 = (renormalise(state, norms(state)), jnp.zeros(len(names)))
    xs = (jnp.arange(steps), who.edge_active, who.node_active)
    (_, log_sum), _ = jax.jit(lambda c, xs: jax.lax.scan(body, c, xs))(carry0, xs)
    return np.exp(np.asarray(log_sum) / (steps - steps // 2))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3000, help="steps per run (the exponent is fitted on the second half)")
    ap.add_argument("--points", type=int, default=33, help="leaf scales s on a log grid in [1, 100], besides the CNN's four")
    ap.add_argument("--out", default="runs/kdd20_consensus_stability")
    args = ap.parse_args(argv)
    if args.steps < 100 or args.points < 2:
        ap.error(f"--steps must be >= 100 and --points >= 2, got {args.steps} and {args.points}")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scales = sorted(set(np.round(np.logspace(0.0, 2.0, args.points), 3)) | set(CNN_SCALES.values()))
    rows, table = [], {}
    for label, (schedule, runtime) in SCHEDULES.items():
        for name in ALGORITHMS:
            g = growth(name, schedule, runtime, scales, args.steps)
            table[label, name] = g
            rows += [dict(schedule=label, algorithm=name, s=f"{s:g}", growth=f"{y:.6f}") for s, y in zip(scales, g)]
    with open(out / "growth.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    col = {layer: scales.index(s) for layer, s in CNN_SCALES.items()}
    print(f"growth per step of the zero-gradient step map ({args.steps} steps; > 1 grows, < 1 contracts)")
    print(f"{'schedule':62s} {'algorithm':9s} " + " ".join(f"{f'{k} s={v:g}':>13s}" for k, v in CNN_SCALES.items())
          + "   worst over s in [1, 100]")
    for label in SCHEDULES:
        for name in ALGORITHMS:
            g = table[label, name]
            k = int(np.argmax(g))
            print(f"{label:62s} {name:9s} " + " ".join(f"{g[col[layer]]:13.5f}" for layer in CNN_SCALES)
                  + f"   {g[k]:.5f} at s = {scales[k]:g}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot written")
        return 0
    fig, axes = plt.subplots(1, len(ALGORITHMS), figsize=(6.5 * len(ALGORITHMS), 4.2), sharey=True)
    for ax, name in zip(axes, ALGORITHMS):
        for label in SCHEDULES:
            ax.plot(scales, table[label, name], label=label, lw=1.2)
        for layer, s in CNN_SCALES.items():
            ax.axvline(s, color="0.7", lw=0.6, ls="--")
            ax.text(s, 1.0, f" {layer}", fontsize=7, color="0.4", rotation=90, va="bottom")
        ax.axhline(1.0, color="k", lw=0.8, ls=":")
        ax.set(xscale="log", title=f"{ALGORITHMS[name]}, KDD20 MNIST options, zero gradients",
               xlabel="leaf scale s = sqrt(fan_in)", ylabel="growth per step (top Lyapunov)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "growth.png", dpi=120)
    print(f"wrote {out / 'growth.csv'} and {out / 'growth.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
