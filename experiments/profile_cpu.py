"""Where the time of a vectorised ECL step goes on XLA:CPU (the profile behind BENCHMARKS.md).

    python -m experiments.profile_cpu                # MLP 784-256-10, N = 64 ring (~1 min)
    python -m experiments.profile_cpu --n 512 --json out.json

Part 1, the ECL-PDMM update alone (primal update + dual exchange, fixed gradients) in
a donated ``fori_loop``, as inside the engine's scan, against an in-place elementwise
stream over the same buffers:

* ``library``: ``ecl_pdmm(...).step`` in the shift layout (what the engine runs): the
  two duals of each ring edge (i, i+1) stored as u = z_{i|i+1} + z_{i+1|i},
  v = z_{i|i+1} - z_{i+1|i} (:class:`ecl_jax.duals.EdgeDuals`), so the exchange
  u' = u + 2 theta A (w_{i+1} - w_i), v' = (1 - 2 theta) v + 2 theta A (w_{i+1} + w_i)
  is elementwise and in place;
* ``no boundary``: the same step with :func:`ecl_jax.algorithms.materialized` (the fusion
  boundary inside :func:`ecl_jax.algorithms.node_update`) replaced by a plain call, so XLA:CPU may recompute the primal inside the exchange's fusions;
* ``directed duals``: the same maths on z_{i|j} stored per directed edge [N, 2, P] (the
  storage before), whose exchange reads each dual at its reverse position (checked
  equal to ``library``).

Part 2, the per-node gradients: vmapped per-node MLP gradients against one gradient of
the concatenated batch, and the batched matmuls they consist of against one big matmul.

Minimal traffic of the update: read w, g, z and write w, z = (3 + 2 * 2) N P floats on a
ring (7 N P); the stream ``a <- 0.5 a + b`` moves 3 floats per element.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax import graph_ops as gops
from ecl_jax import topology as tp
from ecl_jax.algorithms import ecl_pdmm, materialized
from experiments.bench import _timed_repeats

# the module whose materialized() node_update calls (patched for the "no boundary" variant)
base_module = importlib.import_module("ecl_jax.algorithms.base")

LR, ETA = 0.05, 1.0
SHAPES = {"w1": (784, 256), "b1": (256,), "w2": (256, 10), "b2": (10,)}


def _best_ms(fn, *args, repeats: int = 3) -> float:
    """Best wall time of ``fn(*args)`` in ms, after one compile/warm-up call."""
    run = lambda: jax.block_until_ready(fn(*args))
    run()
    return min(_timed_repeats(run, repeats)) * 1e3


def _best_ms_fresh(fn, make, repeats: int = 3) -> float:
    """Best wall time of ``fn(make())`` in ms (``fn`` donates its argument, so each call
    gets fresh buffers from ``make``, built outside the timing), after one warm-up call."""
    jax.block_until_ready(fn(make()))
    best = float("inf")
    for _ in range(repeats):
        arg = jax.block_until_ready(make())
        t0 = time.perf_counter()
        jax.block_until_ready(fn(arg))
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def _params(n: int, seed: int = 0) -> dict:
    keys = jax.random.split(jax.random.PRNGKey(seed), len(SHAPES))
    return {k: 0.05 * jax.random.normal(kk, (n,) + s) for kk, (k, s) in zip(keys, SHAPES.items())}


def directed_step(topo, theta: float = 1.0):
    """The same PDMM step on duals stored per *directed* edge (z_{i|j} in the shift
    layout [N, D, P], the storage before :mod:`ecl_jax.duals`): the exchange reads every dual at
    its reverse position (constant eta, all edges active)."""
    sign = gops.edge_weights(topo, "sign")
    mu = 1.0 / LR
    deg = float(topo.max_degree)

    def primal(w, z, g):
        return {k: (mu * w[k] - g[k] + ETA * gops.sum_edges(topo, z[k], sign)) / (mu + deg * ETA) for k in w}

    def step(w, z, g, token):
        nw = materialized(primal, w, z, g, token=token)
        nz = {}
        for k in nw:
            y = z[k] - 2.0 * gops.expand(sign, z[k]) * gops.broadcast_to_edges(topo, nw[k])
            nz[k] = (1.0 - theta) * z[k] + theta * gops.reverse(topo, y)
        return nw, nz

    return step


def profile_update(n: int, iters: int) -> dict:
    topo = tp.ring(n, layout="fast")
    params, grads = _params(n), _params(n, seed=1)
    flat = lambda t: {k: v.reshape(n, -1) for k, v in t.items()}
    params, grads = flat(params), flat(grads)  # the library steps on flat leaves too
    p = sum(int(np.prod(s)) for s in SHAPES.values())
    ea, na = jnp.ones(topo.n_edges, bool), jnp.ones(n, bool)
    alg = ecl_pdmm(lr=LR, eta=ETA)
    state = alg.init(params, topo)
    # start from non-zero duals so the check below compares something
    state = alg.step(alg.step(state, grads, topo, ea, na), params, topo, ea, na)
    copy = lambda t: jax.tree_util.tree_map(jnp.copy, t)

    def make_loop():
        # a new function object per variant: jit caches traces per function, so reusing
        # one would time the first variant's trace twice
        return lambda s: jax.lax.fori_loop(0, iters, lambda i, st: alg.step(st, grads, topo, ea, na), s)

    lib_loop = make_loop()
    donated = lambda f: jax.jit(f, donate_argnums=0)
    original = base_module.materialized
    try:
        base_module.materialized = lambda fn, *a, token: fn(*a)
        t_plain = _best_ms_fresh(donated(make_loop()), lambda: copy(state)) / iters
    finally:
        base_module.materialized = original
    t_lib = _best_ms_fresh(donated(lib_loop), lambda: copy(state)) / iters

    dstep = directed_step(topo)

    def dir_loop(c):
        return jax.lax.fori_loop(0, iters, lambda i, cc: dstep(cc[0], cc[1], grads, i), c)

    z0 = state.duals.directed()
    t_dir = _best_ms_fresh(donated(dir_loop), lambda: copy((state.params, z0))) / iters
    # the directed-storage step computes the library's maths
    ref = jax.jit(lib_loop)(state)
    w_d, z_d = jax.jit(dir_loop)((state.params, z0))
    z_ref = ref.duals.directed()
    err = max(
        max(float(jnp.max(jnp.abs(w_d[k] - ref.params[k]))) for k in SHAPES),
        max(float(jnp.max(jnp.abs(z_d[k] - z_ref[k]))) for k in SHAPES),
    )

    big = jnp.ones((3 * n * p,), jnp.float32)
    t_stream = _best_ms(jax.jit(lambda a, b: jax.lax.fori_loop(0, iters, lambda i, x: 0.5 * x + b, a)), big, big) / iters
    gb = lambda floats, ms: floats * 4 / ms / 1e6
    minimal = 7 * n * p
    return {
        "n": n,
        "params_per_node": p,
        "update_ms": {"library": t_lib, "no boundary": t_plain, "directed duals": t_dir},
        "update_gbs": {"library": gb(minimal, t_lib), "no boundary": gb(minimal, t_plain),
                       "directed duals": gb(minimal, t_dir)},
        "stream_gbs": gb(9 * n * p, t_stream),
        "directed_max_abs_err": err,
    }


def profile_gradients(n: int, batch: int = 32) -> dict:
    def loss(w, x, y):
        h = jax.nn.relu(x @ w["w1"] + w["b1"])
        logits = h @ w["w2"] + w["b2"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    params = _params(n)
    key = jax.random.PRNGKey(2)
    x = jax.random.normal(key, (n, batch, 784))
    y = jax.random.randint(key, (n, batch), 0, 10)
    one = jax.tree_util.tree_map(lambda a: a[0], params)
    t_vmap = _best_ms(jax.jit(jax.vmap(jax.grad(loss))), params, x, y)
    t_big = _best_ms(jax.jit(jax.grad(loss)), one, x.reshape(-1, 784), y.reshape(-1))
    w1, dy = params["w1"], jnp.ones((n, batch, 256))
    flops = 2 * n * batch * 784 * 256
    t_bfwd = _best_ms(jax.jit(lambda x, w: jnp.einsum("nbd,ndh->nbh", x, w)), x, w1)
    t_bwg = _best_ms(jax.jit(lambda x, d: jnp.einsum("nbd,nbh->ndh", x, d)), x, dy)
    t_fwd = _best_ms(jax.jit(lambda x, w: x @ w), x.reshape(-1, 784), w1[0])
    gf = lambda ms: flops / ms / 1e6
    return {
        "grad_ms": {"vmapped per node": t_vmap, "one big batch": t_big},
        "layer1_gflops": {"batched forward": gf(t_bfwd), "batched weight grad": gf(t_bwg), "big forward": gf(t_fwd)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="number of nodes (ring), >= 3")
    ap.add_argument("--iters", type=int, default=10, help="update steps per timed loop, >= 1")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args(argv)
    if args.n < 3:
        ap.error(f"--n must be >= 3 (a ring), got {args.n}")
    if args.iters < 1:
        ap.error(f"--iters must be >= 1, got {args.iters}")
    up = profile_update(args.n, args.iters)
    gr = profile_gradients(args.n)
    print(f"ECL-PDMM update, MLP 784-256-10, ring N = {args.n} (P = {up['params_per_node']:,}), "
          f"per step in a loop; stream {up['stream_gbs']:.1f} GB/s")
    for k, ms in up["update_ms"].items():
        print(f"  {k:12s} {ms:8.1f} ms  {up['update_gbs'][k]:5.1f} GB/s of 7NP floats "
              f"({up['update_gbs'][k] / up['stream_gbs']:.2f} of the stream)")
    print(f"  directed-dual step vs library: max abs difference {up['directed_max_abs_err']:.1e}")
    print("per-node gradients (batch 32 per node):")
    for k, ms in gr["grad_ms"].items():
        print(f"  {k:18s} {ms:8.1f} ms")
    print("first layer (784 x 256) matmuls, same FLOPs:")
    for k, v in gr["layer1_gflops"].items():
        print(f"  {k:20s} {v:7.1f} GFLOP/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"update": up, "gradients": gr, "jax": jax.__version__}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
