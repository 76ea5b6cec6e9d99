"""Benchmark: node-steps per second, memory and scaling of the vectorised engine.

    python -m experiments.bench --quick          # ~2-3 minutes on a 2-core CPU
    python -m experiments.bench                  # full suite (long; see BENCHMARKS.md)
    ecl-jax bench --quick                        # the same through the CLI

Every configuration runs in a fresh subprocess (so its peak RSS, ``ru_maxrss``, is its
own) and reports one JSON line; the driver writes ``results.csv`` (every row) and
``results.md`` (tables with the ratios and the targets of issue #5, compile times and
the machine) into ``--out``. Measured, in one run and against each other:

* ``engine``: the vectorised run (``Engine``: sampling, vmapped gradients, algorithm
  step, one compiled ``lax.scan`` per chunk) for ECL-PDMM and gossip (D-PSGD), on a
  ring and an exponential graph, per-edge layout ``"fast"`` (shift: static rolls) unless
  stated; ``layout`` rows compare shift / slots / edges (the edges layout is the naive
  prototype's design: gather ``w[src]`` + ``segment_sum`` over a directed edge list);
* ``loop``: per-node Python loops over jitted single-node code, same maths:
  ``loop-node`` calls one jitted node step (sample, gradient, primal update,
  reflections y_{i|j}) per node, then passes the messages; ``loop-ops`` calls one
  jitted op per node (gradient, primal update) and per directed edge (reflection);
* ``bigbatch``: one model trained with SGD on the concatenated batch of all nodes
  (N*B samples per step; the same arithmetic without decentralisation);
* ``update``: the algorithm step alone with fixed gradients (primal update, dual
  exchange, aggregation), and ``exchange``: the dual exchange and aggregation alone,
  both as bytes/s of their minimal memory traffic, against an elementwise streaming op
  (``a <- c a + b``) over the same number of floats measured in the same process, in
  a loop (in place) and as fresh jitted calls (new output buffers each call);
* ``largeN``: logistic regression with ECL-PDMM on a ring and a torus up to N = 10,000
  nodes: peak memory at three sizes (linear fit);
* ``devices``: the same run on 1 and on 4 (fake CPU) devices with the node axis
  sharded (:mod:`ecl_jax.sharding`), with the collectives of the compiled step;
* ``precision``: float32 against bfloat16 compute (float32 state,
  :func:`ecl_jax.engine.mixed_precision`): speed, and accuracy after training on the
  embedded MNIST subset.

Node-steps/s = N * steps / wall time (best of the repeats, after a compile run);
samples/s = batch * node-steps/s. The workload data are synthetic MNIST-shaped arrays
(timing does not depend on the values), except for ``precision``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import datetime
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULT_TAG = "BENCH_RESULT "
BATCH = 32
INPUT_SHAPE = (28, 28, 1)
MODELS = ("logistic", "mlp", "kdd20_mnist_cnn")
# Algorithms' hyperparameters (timing does not depend on them; kept stable).
LR = 0.05
ETA = 1.0


# ============================================================================ workers
def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _load_avg() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def _timed_repeats(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _model(name: str):
    from ecl_jax.models import classification_loss, get_model

    model = get_model(name)
    return model, classification_loss(model)


def _params(model, n: int):
    import jax

    from ecl_jax.models import init_node_params

    return init_node_params(model, jax.random.PRNGKey(0), n, INPUT_SHAPE)


def _param_count(model) -> int:
    from ecl_jax.models import abstract_params, param_count

    return param_count(abstract_params(model, INPUT_SHAPE))


def _synthetic_data(n: int, m: int, seed: int = 0):
    import jax
    import jax.numpy as jnp

    from ecl_jax.engine import NodeData

    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.uniform(k1, (n, m) + INPUT_SHAPE, jnp.float32)
    y = jax.random.randint(k2, (n, m), 0, 10, jnp.int32)
    return NodeData(x, y, jnp.full((n,), m, jnp.int32))


def _topology(name: str, n: int, layout: str):
    from ecl_jax import topology as tp

    if name == "ring":
        return tp.ring(n, layout=layout)
    if name == "exponential":
        return tp.exponential(n, layout=layout)
    if name == "torus":
        rows = int(math.isqrt(n))
        while n % rows:
            rows -= 1
        return tp.torus(rows, n // rows, layout=layout)
    raise ValueError(f"unknown topology {name!r}; valid: ring, exponential, torus")


def _algorithm(name: str):
    from ecl_jax.algorithms import ecl_pdmm, gossip, local_sgd

    if name == "ecl-pdmm":
        return ecl_pdmm(LR, eta=ETA)
    if name == "gossip":
        return gossip(LR)
    if name == "local":  # no communication: sampling + vmapped gradients + SGD (the floor)
        return local_sgd(LR)
    raise ValueError(f"unknown algorithm {name!r}; valid: ecl-pdmm, gossip, local")


def _tree_bytes(tree) -> int:
    import jax

    return int(sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(tree) if hasattr(leaf, "dtype")))


def _block(tree):
    import jax

    jax.block_until_ready(tree)


def _data_rows(n: int) -> int:
    """Samples held per node: 2 batches (sampling with replacement), 1 batch when huge."""
    return 2 * BATCH if n <= 1024 else BATCH


def work_engine(cfg: dict) -> dict:
    """Vectorised run through :class:`Engine`: node-steps/s, compile time, memory."""
    import jax
    import jax.numpy as jnp

    from ecl_jax.engine import Engine, mixed_precision

    n, steps, repeats = cfg["n"], cfg["steps"], cfg["repeats"]
    model, loss = _model(cfg["model"])
    if cfg.get("precision", "float32") == "bfloat16":
        loss = mixed_precision(loss, jnp.bfloat16)
    topo = _topology(cfg["topology"], n, cfg.get("layout", "fast"))
    alg = _algorithm(cfg["algorithm"])
    data = _synthetic_data(n, _data_rows(n))
    params = _params(model, n)
    engine = Engine(alg, topo, loss, batch_size=BATCH, eval_every=steps, train_metrics=False)
    carry = engine.init(params, jax.random.PRNGKey(1))
    del params
    devices = int(cfg.get("devices", 1))
    collectives = None
    if devices > 1:
        from ecl_jax.sharding import collective_report, node_mesh, shard_carry, shard_node_data

        mesh = node_mesh(jax.devices()[:devices])
        carry = shard_carry(carry, topo, mesh)
        data = shard_node_data(data, mesh)
    state_bytes = _tree_bytes(carry.state)
    mode = engine.loop_mode(carry, data)
    total = 10**9
    t0 = time.perf_counter()
    carry, _ = engine.run_chunk(carry, data, total)
    _block(carry)
    first = time.perf_counter() - t0

    def chunk():
        nonlocal carry
        carry, _ = engine.run_chunk(carry, data, total)
        _block(carry)

    times = _timed_repeats(chunk, repeats)
    best = min(times)
    if devices > 1:
        txt = engine._chunk.lower(carry, data, jnp.asarray(total, jnp.int32), None).compile().as_text()
        big = [c for c in collective_report(txt) if c[2] >= n]
        collectives = sorted({f"{op} {shape}" for op, shape, _ in big})
    finite = bool(all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree_util.tree_leaves(carry.state)
                      if jnp.issubdtype(leaf.dtype, jnp.floating)))
    p = _param_count(model)
    return dict(
        node_steps_per_s=n * steps / best,
        samples_per_s=n * steps * BATCH / best,
        step_s=best / steps,
        step_s_median=sorted(times)[len(times) // 2] / steps,
        compile_s=max(first - best, 0.0),
        loop_mode=mode,
        layout=topo.layout,
        params_per_node=p,
        n_edges=topo.n_edges,
        max_degree=topo.max_degree,
        state_mb=state_bytes / 2**20,
        ideal_state_mb=(n * p + 2 * topo.n_edges * p) * 4 / 2**20 if cfg["algorithm"] == "ecl-pdmm" else n * p * 4 / 2**20,
        data_mb=_tree_bytes(data) / 2**20,
        finite=finite,
        collectives=collectives,
    )


def work_bigbatch(cfg: dict) -> dict:
    """One model, SGD on the concatenated batch of all N nodes (N*B samples per step)."""
    import jax
    import jax.numpy as jnp

    from ecl_jax.engine import mixed_precision

    n, steps, repeats = cfg["n"], cfg["steps"], cfg["repeats"]
    model, loss = _model(cfg["model"])
    if cfg.get("precision", "float32") == "bfloat16":
        loss = mixed_precision(loss, jnp.bfloat16)
    m = _data_rows(n)
    data = _synthetic_data(n, m)
    x = data.x.reshape((n * m,) + INPUT_SHAPE)
    y = data.y.reshape(-1)
    params = jax.tree_util.tree_map(lambda a: a[0], _params(model, 1))
    batch = n * BATCH

    def one(p, key):
        idx = jax.random.randint(key, (batch,), 0, n * m)
        g = jax.grad(lambda q: loss(q, x[idx], y[idx], None).mean())(p)
        return jax.tree_util.tree_map(lambda a, b: a - LR * b, p, g)

    conv = "conv_general_dilated" in str(jax.make_jaxpr(one)(params, jax.random.PRNGKey(0)))
    key = jax.random.PRNGKey(2)
    if conv:  # XLA:CPU runs convolutions in loop bodies slowly (as the Engine, python loop)
        step = jax.jit(one)

        def run(p):
            for t in range(steps):
                p = step(p, jax.random.fold_in(key, t))
            return p
    else:
        @jax.jit
        def run(p):
            return jax.lax.fori_loop(0, steps, lambda t, q: one(q, jax.random.fold_in(key, t)), p)

    t0 = time.perf_counter()
    params = run(params)
    _block(params)
    first = time.perf_counter() - t0

    def chunk():
        nonlocal params
        params = run(params)
        _block(params)

    times = _timed_repeats(chunk, repeats)
    best = min(times)
    return dict(
        node_steps_per_s=n * steps / best,  # "node-steps" = batches of B samples
        samples_per_s=batch * steps / best,
        step_s=best / steps,
        step_s_median=sorted(times)[len(times) // 2] / steps,
        compile_s=max(first - best, 0.0),
        params_per_node=_param_count(model),
        loop_mode="python" if conv else "scan",
    )


def work_loop(cfg: dict) -> dict:
    """Per-node Python loop over jitted single-node code (same maths as the engine)."""
    import jax
    import jax.numpy as jnp

    n, steps, repeats = cfg["n"], cfg["steps"], cfg["repeats"]
    variant = cfg["variant"]  # "loop-node" or "loop-ops"
    model, loss = _model(cfg["model"])
    topo = _topology(cfg["topology"], n, "slots")
    m = _data_rows(n)
    data = _synthetic_data(n, m)
    xs = [data.x[i] for i in range(n)]
    ys = [data.y[i] for i in range(n)]
    one = jax.tree_util.tree_map(lambda a: a[0], _params(model, 1))
    ws = [jax.tree_util.tree_map(jnp.copy, one) for _ in range(n)]
    nbrs = [topo.neighbors(i).tolist() for i in range(n)]
    sign = {(i, j): (1.0 if i < j else -1.0) for i in range(n) for j in nbrs[i]}
    key = jax.random.PRNGKey(3)
    mu = 1.0 / LR

    def node_grad(w, x, y, step, i):
        k = jax.random.fold_in(jax.random.fold_in(key, step), i)
        idx = jax.random.randint(k, (BATCH,), 0, m)
        return jax.grad(lambda p: loss(p, x[idx], y[idx], None).mean())(w)

    tmap = jax.tree_util.tree_map
    if cfg["algorithm"] == "ecl-pdmm":
        # z[(i, j)]: dual z_{i|j} held by node i for its edge to j.
        zs = {(i, j): tmap(jnp.zeros_like, one) for i in range(n) for j in nbrs[i]}

        def primal(w, g, z_list, s_list):
            agg = tmap(lambda *zz: sum(s * z for s, z in zip(s_list, zz)), *z_list)
            d = len(z_list)
            return tmap(lambda a, b, c: (mu * a - b + ETA * c) / (mu + ETA * d), w, g, agg)

        def reflect(z, w, s):
            return tmap(lambda a, b: a - 2.0 * s * b, z, w)

        if variant == "loop-node":
            @jax.jit
            def node_step(w, z_list, s_list, x, y, step, i):
                g = node_grad(w, x, y, step, i)
                w_new = primal(w, g, z_list, s_list)
                return w_new, [reflect(z, w_new, s) for z, s in zip(z_list, s_list)]

            def one_step(t):
                out = {}
                for i in range(n):
                    z_list = [zs[(i, j)] for j in nbrs[i]]
                    s_list = [sign[(i, j)] for j in nbrs[i]]
                    ws[i], y_list = node_step(ws[i], z_list, s_list, xs[i], ys[i], t, i)
                    for j, yv in zip(nbrs[i], y_list):
                        out[(j, i)] = yv  # y_{i|j} becomes z_{j|i} (PDMM, every edge active)
                zs.update(out)
        else:
            grad_j = jax.jit(node_grad)
            primal_j = jax.jit(primal)
            reflect_j = jax.jit(reflect)

            def one_step(t):
                out = {}
                for i in range(n):
                    g = grad_j(ws[i], xs[i], ys[i], t, i)
                    ws[i] = primal_j(ws[i], g, [zs[(i, j)] for j in nbrs[i]], [sign[(i, j)] for j in nbrs[i]])
                for i in range(n):
                    for j in nbrs[i]:
                        out[(j, i)] = reflect_j(zs[(i, j)], ws[i], sign[(i, j)])
                zs.update(out)
    else:  # gossip: local SGD, then w_i += sum_j W_ij (w_j - w_i), Metropolis-Hastings W
        deg = topo.degree
        wts = {(i, j): 1.0 / (1.0 + max(deg[i], deg[j])) for i in range(n) for j in nbrs[i]}

        def local(w, x, y, step, i):
            g = node_grad(w, x, y, step, i)
            return tmap(lambda a, b: a - LR * b, w, g)

        def mix(w, w_list, c_list):
            return tmap(lambda a, *bs: a + sum(c * (b - a) for c, b in zip(c_list, bs)), w, *w_list)

        local_j, mix_j = jax.jit(local), jax.jit(mix)

        def one_step(t):
            half = [local_j(ws[i], xs[i], ys[i], t, i) for i in range(n)]
            for i in range(n):
                ws[i] = mix_j(half[i], [half[j] for j in nbrs[i]], [wts[(i, j)] for j in nbrs[i]])

    t0 = time.perf_counter()
    one_step(0)
    _block(ws)
    first = time.perf_counter() - t0
    counter = [1]

    def chunk():
        for _ in range(steps):
            one_step(counter[0])
            counter[0] += 1
        _block(ws)

    times = _timed_repeats(chunk, repeats)
    best = min(times)
    return dict(
        node_steps_per_s=n * steps / best,
        samples_per_s=n * steps * BATCH / best,
        step_s=best / steps,
        step_s_median=sorted(times)[len(times) // 2] / steps,
        compile_s=max(first - best / steps, 0.0),
        params_per_node=_param_count(model),
        n_edges=topo.n_edges,
    )


def _elementwise(total_floats: int, iters: int, repeats: int) -> dict:
    """Streaming a <- c a + b over ``total_floats`` floats: in a loop (in place) and as
    fresh jitted calls (a new output buffer each call); bytes = 3 * 4 * floats."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((total_floats,), jnp.float32)
    b = jnp.full((total_floats,), 1e-3, jnp.float32)
    loop = jax.jit(lambda a, b: jax.lax.fori_loop(0, iters, lambda i, v: v * 0.999 + b, a))
    a = loop(a, b)
    _block(a)
    t_loop = min(_timed_repeats(lambda: _block(loop(a, b)), repeats)) / iters
    fresh = jax.jit(lambda a, b: a * 0.999 + b)
    _block(fresh(a, b))

    def calls():
        out = None
        for _ in range(iters):
            out = fresh(a, b)
        _block(out)

    t_fresh = min(_timed_repeats(calls, repeats)) / iters
    nbytes = 3 * 4 * total_floats
    return dict(ew_loop_gbs=nbytes / t_loop / 1e9, ew_fresh_gbs=nbytes / t_fresh / 1e9)


def work_update(cfg: dict) -> dict:
    """Algorithm step alone (fixed gradients) and the exchange + aggregation alone,
    as bandwidth of their minimal traffic, against elementwise streaming."""
    import jax
    import jax.numpy as jnp

    from ecl_jax import graph_ops as gops

    n, iters, repeats = cfg["n"], cfg["steps"], cfg["repeats"]
    model, _ = _model(cfg["model"])
    topo = _topology(cfg["topology"], n, cfg.get("layout", "fast"))
    alg = _algorithm(cfg["algorithm"])
    params = _params(model, n)
    p = _param_count(model)
    grads = jax.tree_util.tree_map(lambda w: jnp.full_like(w, 1e-3), params)
    state = alg.init(params, topo)
    del params
    ea = jnp.ones((topo.n_edges,), bool)
    na = jnp.ones((n,), bool)
    d = topo.max_degree
    slots = topo.edge_state_shape[1] if len(topo.edge_state_shape) == 2 else None

    # donated, as in the engine: the loop updates the state in place
    @functools.partial(jax.jit, donate_argnums=0)
    def steps(s):
        return jax.lax.fori_loop(0, iters, lambda i, st: alg.step(st, grads, topo, ea, na), s)

    t0 = time.perf_counter()
    state = steps(state)
    _block(state)
    compile_s = time.perf_counter() - t0

    def run_steps():
        nonlocal state
        state = steps(state)
        _block(state)

    t_step = min(_timed_repeats(run_steps, repeats)) / iters
    edge_floats = (n * slots if slots else topo.n_directed) * p
    if cfg["algorithm"] == "ecl-pdmm":
        from ecl_jax import edge_pairs as ep

        # the duals as ECL stores them: per undirected edge, (u, v) on an axis of 2
        edge_floats = math.prod(ep.pair_shape(topo)) * 2 * p
        # read w, g, z; write w, z
        step_bytes = 4 * (3 * n * p + 2 * edge_floats)
        exch_bytes = 4 * (3 * edge_floats + 2 * n * p)  # read z, w(+agg out); write z
        sign = gops.edge_weights(topo, "sign")
        def exchange(c):
            z, w = c
            out_z = jax.tree_util.tree_map(lambda x, ww: ep.exchange(topo, x, ww), z, w)  # PDMM, all edges
            agg = jax.tree_util.tree_map(lambda x: gops.sum_edges(topo, ep.to_layout(topo, x), sign), out_z)
            return out_z, jax.tree_util.tree_map(lambda ww, a: 0.999 * ww + 1e-3 * a, w, agg)

        carry0 = (state.duals, jax.tree_util.tree_map(lambda w: w.reshape(n, -1), state.params))
    else:
        # gossip: read w, g; write w (neighbour reads come from cache in the ideal case)
        step_bytes = 4 * 3 * n * p
        exch_bytes = 4 * 2 * n * p  # read w, write mixed w
        weights = jnp.where(gops.edge_weights(topo, "valid") > 0, 1.0 / (1.0 + d), 0.0)

        def exchange(c):
            w, _ = c
            mixed = jax.tree_util.tree_map(
                lambda ww: ww + gops.sum_edges(topo, gops.neighbor_values(topo, ww), weights)
                - gops.expand(gops.sum_edges(topo, weights), ww) * ww, w)
            return mixed, None

        carry0 = (state.params, None)
    del state

    @functools.partial(jax.jit, donate_argnums=0)
    def exch_loop(c):
        return jax.lax.fori_loop(0, iters, lambda i, cc: exchange(cc), c)

    c = exch_loop(carry0)
    _block(c)
    del carry0

    def run_exch():
        nonlocal c
        c = exch_loop(c)
        _block(c)

    t_exch = min(_timed_repeats(run_exch, repeats)) / iters
    del c
    ew = _elementwise(n * p * (1 + (slots or 2)), iters, repeats)
    return dict(
        update_s=t_step,
        update_gbs=step_bytes / t_step / 1e9,
        exchange_s=t_exch,
        exchange_gbs=exch_bytes / t_exch / 1e9,
        compile_s=compile_s,
        params_per_node=p,
        layout=topo.layout,
        n_edges=topo.n_edges,
        **ew,
    )


def work_precision(cfg: dict) -> dict:
    """Train on the embedded MNIST subset (IID over N nodes): accuracy and speed,
    float32 vs bfloat16 compute (state float32 in both)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ecl_jax.datasets import load_mnist5k
    from ecl_jax.engine import Engine, mixed_precision, stack_node_data
    from ecl_jax.models import accuracy_fn
    from ecl_jax.partition import iid

    n, steps = cfg["n"], cfg["steps"]
    model, loss = _model(cfg["model"])
    if cfg["precision"] == "bfloat16":
        loss = mixed_precision(loss, jnp.bfloat16)
    ds = load_mnist5k(n_test=1000, seed=0)
    parts = iid(ds.y_train, n, seed=0)
    data = stack_node_data([ds.x_train[p] for p in parts], [ds.y_train[p] for p in parts])
    topo = _topology(cfg["topology"], n, "fast")
    alg = _algorithm(cfg["algorithm"])
    engine = Engine(alg, topo, loss, batch_size=BATCH, eval_every=steps, train_metrics=False)
    params = _params(model, n)
    t0 = time.perf_counter()
    carry, _ = engine.run(params, data, steps, jax.random.PRNGKey(4))
    _block(carry)
    wall = time.perf_counter() - t0
    acc = accuracy_fn(model)
    node_params = alg.node_params(carry.state)
    xt, yt = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)
    per_node = jax.jit(jax.vmap(lambda p: acc(p, xt, yt).mean()))(node_params)
    mean_model = jax.tree_util.tree_map(lambda w: w.mean(0), node_params)
    test_loss = float(jax.jit(lambda p: loss(p, xt, yt, None).mean())(mean_model))
    return dict(
        test_acc_nodes=float(np.mean(np.asarray(per_node))),
        test_acc_mean_model=float(acc(mean_model, xt, yt).mean()),
        test_loss_mean_model=test_loss,
        wall_s=wall,
        params_per_node=_param_count(model),
    )


WORKERS = {
    "engine": work_engine,
    "layout": work_engine,
    "devices": work_engine,
    "largeN": work_engine,
    "bigbatch": work_bigbatch,
    "loop": work_loop,
    "update": work_update,
    "precision": work_precision,
}


def run_worker(cfg: dict) -> None:
    """Entry point of a subprocess: run one configuration, print one JSON line."""
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    import jax

    rss_import = _rss_mb()
    out = dict(cfg)
    try:
        out.update(WORKERS[cfg["kind"]](cfg))
        out["status"] = "ok"
    except Exception as err:  # reported in the table, not fatal to the suite
        out["status"] = f"error: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    out.update(
        peak_rss_mb=_rss_mb(),
        rss_after_import_mb=rss_import,
        rss_start_mb=rss0,
        worker_wall_s=time.perf_counter() - t0,
        n_devices=len(jax.devices()),
        load_avg_end=_load_avg(),
    )
    print(RESULT_TAG + json.dumps(out, default=str), flush=True)


# ============================================================================ driver
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
    return per * arrays + n * _data_rows(n) * 784 * 4


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
    """About 20 small configurations (~2-3 minutes on 2 cores): every kind once."""
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
        load_avg_start=_load_avg(),
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


def _launch(cfg: dict, timeout_s: int) -> dict:
    env = dict(os.environ)
    dev = int(cfg.get("devices", 1))
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    if dev > 1:
        flags.append(f"--xla_force_host_platform_device_count={dev}")
    env["XLA_FLAGS"] = " ".join(flags)
    cmd = [sys.executable, "-m", "experiments.bench", "--worker", json.dumps(cfg)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return dict(cfg, status=f"timeout after {timeout_s}s", worker_wall_s=time.perf_counter() - t0)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    status = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"exit {proc.returncode}: {tail[0][:200]}"
    return dict(cfg, status=status, worker_wall_s=time.perf_counter() - t0)


def _describe(cfg: dict) -> str:
    keys = ("kind", "variant", "model", "algorithm", "topology", "layout", "n", "devices", "precision")
    return " ".join(f"{cfg[k]}" for k in keys if k in cfg)


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
            print(f"[{k + 1}/{len(plan.configs)} {time.perf_counter() - t_start:6.0f}s] {_describe(cfg)}: "
                  f"{row['status'] if row['status'] != 'ok' else rate}{mem}", flush=True)
    return rows


# ----------------------------------------------------------------- reporting
def _fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _find(rows, **match):
    for r in rows:
        if r.get("status") == "ok" and all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def _best(rows, kind, **match):
    """The fastest measurement of one configuration over every row that measured it:
    plain rows plus the float32 precision-speed, 1-device and (for ring, default
    layout) shift-layout rows, which run the same program. Timings on a shared machine
    only err on the slow side, so the best of them is the fairest estimate; both sides
    of every ratio are taken the same way."""
    same = []
    for r in rows:
        if r.get("status") != "ok" or any(r.get(k) != v for k, v in match.items()):
            continue
        if r.get("precision", "float32") != "float32" or int(r.get("devices", 1)) != 1:
            continue
        k = r.get("kind")
        if k == kind or (kind == "engine" and k in ("devices", "layout") and r.get("layout") in ("shift", None)
                          and r.get("topology") in ("ring", "exponential")):
            same.append(r)
    return max(same, key=lambda r: r["node_steps_per_s"]) if same else None


def _ok(rows, kind):
    return [r for r in rows if r.get("kind") == kind and r.get("status") == "ok"]


def _engine_rows(rows):
    return [r for r in rows if r.get("kind") == "engine" and not r.get("tag")]


def summarize(rows: list[dict], machine: dict) -> tuple[str, dict]:
    """Markdown report and the target figures (issue #5)."""
    lines: list[str] = []
    add = lines.append
    targets: dict[str, Any] = {}
    add("# ecl_jax benchmark results\n")
    add(f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; "
        f"{machine['platform']}; Python {machine['python']}, jax {machine['jax']} / jaxlib {machine['jaxlib']} "
        f"({machine['backend']}). Run {machine['date']}, load average {machine['load_avg_start']} at start, "
        f"{machine.get('load_avg_end', '-')} at end. Batch {BATCH} per node.\n")

    # ---------------------------------------------------------------- throughput
    add("## Throughput: vectorised engine vs per-node loops vs the big-batch model\n")
    add("node-steps/s = N x steps / s (one node-step = one minibatch of 32 on one node), the best of all rows that ran the same program (see `_best`). "
        "`loop` = per-node Python loop over one jitted node step (`loop-node`) and over "
        "jitted per-node / per-edge ops (`loop-ops`), same maths. `big-batch` = one model "
        "on the concatenated batch (N x 32 samples per step); `vs big-batch` = samples/s "
        "of the decentralised run / samples/s of the big-batch model. Memory: peak RSS "
        "of the process; state = algorithm state bytes / (N P + 2E P) floats (ECL) or N P (gossip).\n")
    add("| model | algorithm | graph | N | node-steps/s | vs loop-node | vs loop-ops | vs big-batch | compile s | peak RSS MB | state / ideal |")
    add("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in _engine_rows(rows):
        if r.get("status") != "ok":
            add(f"| {r['model']} | {r['algorithm']} | {r['topology']} | {r['n']} | {r['status']} | | | | | | |")
            continue
        ln = _best(rows, "loop", variant="loop-node", model=r["model"], algorithm=r["algorithm"],
                   topology=r["topology"], n=r["n"])
        lo = _best(rows, "loop", variant="loop-ops", model=r["model"], algorithm=r["algorithm"],
                   topology=r["topology"], n=r["n"])
        bb = _best(rows, "bigbatch", model=r["model"], n=r["n"])
        r = dict(r, **{k: v for k, v in (_best(rows, "engine", model=r["model"], algorithm=r["algorithm"],
                                                 topology=r["topology"], n=r["n"]) or r).items()
                       if k in ("node_steps_per_s", "samples_per_s")})
        vs_ln = r["node_steps_per_s"] / ln["node_steps_per_s"] if ln else None
        vs_lo = r["node_steps_per_s"] / lo["node_steps_per_s"] if lo else None
        vs_bb = r["samples_per_s"] / bb["samples_per_s"] if bb else None
        ratio = r["state_mb"] / r["ideal_state_mb"] if r.get("ideal_state_mb") else None
        add(f"| {r['model']} | {r['algorithm']} | {r['topology']} | {r['n']} | {_fmt(r['node_steps_per_s'], 4)} | "
            f"{_fmt(vs_ln)}x | {_fmt(vs_lo)}x | {_fmt(vs_bb)}x | {_fmt(r['compile_s'])} | {_fmt(r['peak_rss_mb'], 4)} | {_fmt(ratio)} |")
    add("")
    add("Reference rows (per-node loops and big-batch model):\n")
    add("| kind | model | algorithm | graph | N | node-steps/s | samples/s | s/step | compile s | peak RSS MB |")
    add("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r.get("kind") in ("loop", "bigbatch") and not r.get("tag"):
            if r.get("status") != "ok":
                add(f"| {r.get('variant', r['kind'])} | {r['model']} | {r.get('algorithm', '-')} | {r.get('topology', '-')} | {r['n']} | {r['status']} | | | | |")
                continue
            add(f"| {r.get('variant', r['kind'])} | {r['model']} | {r.get('algorithm', '-')} | {r.get('topology', '-')} | {r['n']} | "
                f"{_fmt(r['node_steps_per_s'], 4)} | {_fmt(r['samples_per_s'], 4)} | {_fmt(r['step_s'])} | {_fmt(r['compile_s'])} | {_fmt(r['peak_rss_mb'], 4)} |")
    add("")

    # ---------------------------------------------------------------- layouts
    lay = [r for r in rows if r.get("kind") == "layout"]
    if lay:
        add("## Per-edge layouts (ECL-PDMM, ring)\n")
        add("`shift`: static rolls of the node axis; `slots`: neighbour slots with gathers and dense slot sums; "
            "`edges`: gather + sorted segment_sum over the directed edge list (the naive prototype's design).\n")
        add("| model | N | layout | node-steps/s | vs big-batch | peak RSS MB |")
        add("|---|---:|---|---:|---:|---:|")
        for r in lay:
            if r.get("status") != "ok":
                add(f"| {r['model']} | {r['n']} | {r['layout']} | {r['status']} | | |")
                continue
            bb = _best(rows, "bigbatch", model=r["model"], n=r["n"])
            vs_bb = r["samples_per_s"] / bb["samples_per_s"] if bb else None
            add(f"| {r['model']} | {r['n']} | {r['layout']} | {_fmt(r['node_steps_per_s'], 4)} | {_fmt(vs_bb)}x | {_fmt(r['peak_rss_mb'], 4)} |")
        add("")

    # ---------------------------------------------------------------- bandwidth
    upd = _ok(rows, "update")
    if upd:
        add("## Communication bandwidth\n")
        add("`update` = algorithm step with fixed gradients (primal update + dual exchange + aggregation); "
            "`exchange` = reflection, exchange and aggregation alone. GB/s of their minimal traffic "
            "(ECL: update reads w, g, z and writes w, z; exchange reads z, w and writes z). "
            "Elementwise reference in the same process over the same number of floats: `a <- c a + b` "
            "in a loop (in place) and as fresh jitted calls (new output buffer per call, the regime of the "
            "prototype's 5.5 GB/s).\n")
        add("| model | algorithm | graph | layout | N | update GB/s | exchange GB/s | elementwise loop GB/s | elementwise fresh GB/s | exchange / loop | exchange / fresh |")
        add("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in upd:
            add(f"| {r['model']} | {r['algorithm']} | {r['topology']} | {r['layout']} | {r['n']} | {_fmt(r['update_gbs'])} | "
                f"{_fmt(r['exchange_gbs'])} | {_fmt(r['ew_loop_gbs'])} | {_fmt(r['ew_fresh_gbs'])} | "
                f"{_fmt(r['exchange_gbs'] / r['ew_loop_gbs'])} | {_fmt(r['exchange_gbs'] / r['ew_fresh_gbs'])} |")
        add("")

    # ---------------------------------------------------------------- large N
    big = [r for r in rows if r.get("kind") == "largeN"]
    if big:
        add("## Large N (logistic regression, ECL-PDMM)\n")
        add("| graph | N | E | node-steps/s | compile s | state MB | ideal MB | data MB | peak RSS MB |")
        add("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in big:
            if r.get("status") != "ok":
                add(f"| {r['topology']} | {r['n']} | | {r['status']} | | | | | |")
                continue
            add(f"| {r['topology']} | {r['n']} | {r['n_edges']} | {_fmt(r['node_steps_per_s'], 4)} | {_fmt(r['compile_s'])} | "
                f"{_fmt(r['state_mb'], 4)} | {_fmt(r['ideal_state_mb'], 4)} | {_fmt(r['data_mb'], 4)} | {_fmt(r['peak_rss_mb'], 4)} |")
        for topo in sorted({r["topology"] for r in big}):
            pts = [(r["n"], r["peak_rss_mb"]) for r in big if r["topology"] == topo and r.get("status") == "ok"]
            if len(pts) >= 3:
                fit = _linear_fit(pts)
                add(f"\n{topo}: peak RSS = {fit['intercept']:.0f} MB + {fit['slope'] * 1000:.1f} MB per 1000 nodes "
                    f"(R^2 = {fit['r2']:.4f}, {len(pts)} sizes).")
                targets[f"largeN_{topo}_r2"] = fit["r2"]
            targets[f"largeN_{topo}_max_n"] = max((n for n, _ in pts), default=None)
            targets[f"largeN_{topo}_peak_mb"] = max((m for _, m in pts), default=None)
        add("")

    # ---------------------------------------------------------------- devices
    dev = [r for r in rows if r.get("kind") == "devices"]
    if dev:
        add("## 1 vs 4 devices (node axis sharded; 4 fake CPU devices on the same cores)\n")
        add("| model | graph | N | devices | node-steps/s | collectives in the compiled chunk (>= N elements) |")
        add("|---|---|---:|---:|---:|---|")
        for r in dev:
            if r.get("status") != "ok":
                add(f"| {r['model']} | {r['topology']} | {r['n']} | {r['devices']} | {r['status']} | |")
                continue
            col = ", ".join(r.get("collectives") or []) or "none"
            add(f"| {r['model']} | {r['topology']} | {r['n']} | {r['devices']} | {_fmt(r['node_steps_per_s'], 4)} | {col} |")
        add("")

    # ---------------------------------------------------------------- precision
    pr = [r for r in rows if r.get("tag") == "precision-speed" or r.get("kind") == "precision"]
    if pr:
        add("## Mixed precision (bfloat16 compute, float32 state)\n")
        add("| kind | model | N | precision | node-steps/s | samples/s | test acc (mean model) | test acc (nodes) | test loss |")
        add("|---|---|---:|---|---:|---:|---:|---:|---:|")
        for r in pr:
            if r.get("status") != "ok":
                add(f"| {r['kind']} | {r['model']} | {r['n']} | {r.get('precision')} | {r['status']} | | | | |")
                continue
            add(f"| {r['kind']} | {r['model']} | {r['n']} | {r.get('precision', 'float32')} | {_fmt(r.get('node_steps_per_s'), 4)} | "
                f"{_fmt(r.get('samples_per_s'), 4)} | {_fmt(r.get('test_acc_mean_model'), 4)} | {_fmt(r.get('test_acc_nodes'), 4)} | "
                f"{_fmt(r.get('test_loss_mean_model'), 4)} |")
        add("")

    # ---------------------------------------------------------------- targets
    add("## Targets (issue #5)\n")
    for model in ("logistic", "mlp"):
        e = _best(rows, "engine", model=model, algorithm="ecl-pdmm", topology="ring", n=64)
        for variant in ("loop-node", "loop-ops"):
            lp = _best(rows, "loop", variant=variant, model=model, algorithm="ecl-pdmm", topology="ring", n=64)
            if e and lp:
                targets[f"{model}_n64_vs_{variant}"] = e["node_steps_per_s"] / lp["node_steps_per_s"]
    for n in (512, 256):
        e = _best(rows, "engine", model="mlp", algorithm="ecl-pdmm", topology="ring", n=n)
        bb = _best(rows, "bigbatch", model="mlp", n=n)
        if e and bb:
            targets[f"mlp_n{n}_vs_bigbatch"] = e["samples_per_s"] / bb["samples_per_s"]
            break
    ex = [r for r in upd if r["algorithm"] == "ecl-pdmm" and r["layout"] == "shift"]
    if ex:
        loop_r = [r["exchange_gbs"] / r["ew_loop_gbs"] for r in ex]
        fresh_r = [r["exchange_gbs"] / r["ew_fresh_gbs"] for r in ex]
        targets["exchange_vs_elementwise_loop_min"] = min(loop_r)
        targets["exchange_vs_elementwise_loop_max"] = max(loop_r)
        targets["exchange_vs_elementwise_fresh_min"] = min(fresh_r)
    ratios = [r["state_mb"] / r["ideal_state_mb"] for r in _engine_rows(rows)
              if r.get("status") == "ok" and r["algorithm"] == "ecl-pdmm" and r.get("ideal_state_mb")]
    if ratios:
        targets["state_over_ideal_max"] = max(ratios)
    add("| target | measured | goal |")
    add("|---|---:|---:|")
    goals = {
        "logistic_n64_vs_loop-node": ">= 10", "logistic_n64_vs_loop-ops": ">= 10",
        "mlp_n64_vs_loop-node": ">= 10", "mlp_n64_vs_loop-ops": ">= 10",
        "mlp_n512_vs_bigbatch": ">= 0.5", "mlp_n256_vs_bigbatch": ">= 0.5 (at N = 512)",
        "exchange_vs_elementwise_loop_min": ">= 0.5", "exchange_vs_elementwise_loop_max": ">= 0.5",
        "exchange_vs_elementwise_fresh_min": ">= 0.5",
        "state_over_ideal_max": "<= 1.5",
    }
    for k, v in targets.items():
        add(f"| {k} | {_fmt(v)} | {goals.get(k, '-')} |")
    add("")
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        add("## Not run / failed\n")
        for r in failed:
            add(f"- {_describe(r)}: {r['status']}")
        add("")
    return "\n".join(lines), targets


def _linear_fit(pts):
    import numpy as np

    x = np.array([p[0] for p in pts], float)
    y = np.array([p[1] for p in pts], float)
    slope, intercept = np.polyfit(x, y, 1)
    pred = slope * x + intercept
    ss = ((y - y.mean()) ** 2).sum()
    r2 = 1.0 - ((y - pred) ** 2).sum() / ss if ss > 0 else 1.0
    return dict(slope=float(slope), intercept=float(intercept), r2=float(r2))


CSV_FIELDS = (
    "kind", "variant", "model", "algorithm", "topology", "layout", "n", "devices", "precision", "tag", "status",
    "node_steps_per_s", "samples_per_s", "step_s", "step_s_median", "compile_s", "params_per_node", "n_edges",
    "max_degree", "state_mb", "ideal_state_mb", "data_mb", "peak_rss_mb", "rss_after_import_mb", "update_s",
    "update_gbs", "exchange_s", "exchange_gbs", "ew_loop_gbs", "ew_fresh_gbs", "test_acc_mean_model",
    "test_acc_nodes", "test_loss_mean_model", "loop_mode", "collectives", "steps", "repeats", "worker_wall_s",
    "load_avg_end",
)


def write_outputs(rows: list[dict], machine: dict, out_dir: Path) -> tuple[Path, Path, dict]:
    machine = dict(machine, load_avg_end=_load_avg())
    csv_path = out_dir / "results.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()})
    md, targets = summarize(rows, machine)
    md_path = out_dir / "results.md"
    md_path.write_text(md + "\n")
    (out_dir / "machine.json").write_text(json.dumps(machine, indent=2) + "\n")
    (out_dir / "targets.json").write_text(json.dumps(targets, indent=2) + "\n")
    return csv_path, md_path, targets


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes only (~2-3 minutes on 2 CPU cores)")
    p.add_argument("--out", default=None, help="output folder (default runs/bench or runs/bench_quick)")
    p.add_argument("--budget", type=float, default=None, help="stop launching new configurations after this many seconds")
    p.add_argument("--max-gb", type=float, default=18.0, help="skip engine configurations estimated above this (GiB)")
    p.add_argument("--only", default=None, help="comma-separated kinds to run (engine,bigbatch,loop,layout,update,largeN,devices,precision)")
    p.add_argument("--report", default=None, metavar="JSONL", help="only rebuild the tables from a results.jsonl")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        run_worker(json.loads(args.worker))
        return 0
    out_dir = Path(args.out or ("runs/bench_quick" if args.quick else "runs/bench"))
    machine = machine_info()
    if args.report:
        rows = [json.loads(line) for line in Path(args.report).read_text().splitlines() if line.strip()]
        out_dir.mkdir(parents=True, exist_ok=True)
        old = Path(args.report).parent / "machine.json"
        if old.exists():
            machine = json.loads(old.read_text())
    else:
        plan = quick_plan() if args.quick else full_plan(args.max_gb)
        if args.only:
            kinds = set(args.only.split(","))
            plan = Plan(tuple(c for c in plan.configs if c["kind"] in kinds), plan.timeout_s)
        print(f"{len(plan.configs)} configurations -> {out_dir}  ({machine['cpu']}, {machine['cores']} cores)", flush=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "machine.json").write_text(json.dumps(machine, indent=2) + "\n")
        rows = run_plan(plan, out_dir, budget_s=args.budget)
    csv_path, md_path, targets = write_outputs(rows, machine, out_dir)
    print(md_path.read_text())
    print(f"wrote {csv_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
