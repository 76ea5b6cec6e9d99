"""The measured workloads: one function per kind (see the package docstring for what
each measures), each taking a config dict and returning a result dict; the runner's
worker adds the memory figures. Graphs and algorithms come from :mod:`ecl_jax.registry`;
JAX is imported inside the functions (the worker first measures a bare interpreter).
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

from .common import BATCH, ETA, INPUT_SHAPE, LR, data_rows


def _timed_repeats(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _first_and_repeats(run, state, repeats: int):
    """``state = run(state)`` once (compiles), then ``repeats`` timed times; returns
    (final state, seconds of the first call, timed seconds). For donating ``run``s: the
    caller's reference to the first ``state`` holds no memory then."""
    t0 = time.perf_counter()
    box = [run(state)]
    _block(box[0])
    first = time.perf_counter() - t0

    def again():
        box[0] = run(box[0])
        _block(box[0])

    times = _timed_repeats(again, repeats)
    return box[0], first, times


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


def _tree_bytes(tree) -> int:
    import jax

    return int(sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(tree) if hasattr(leaf, "dtype")))


def _block(tree):
    import jax

    jax.block_until_ready(tree)


def _topology(name: str, n: int, layout: str):
    """The registry's graph ``name`` on ``n`` nodes, its per-edge state in ``layout``."""
    from ecl_jax.config import RunConfig
    from ecl_jax.registry import build_topology

    return build_topology(RunConfig(topology=name, n_nodes=n)).with_layout(layout)


def _algorithm(name: str):
    """The registry's algorithm ``name`` with the bench's hyperparameters (lr, eta)."""
    from ecl_jax.config import RunConfig
    from ecl_jax.registry import build_algorithm

    return build_algorithm(name, RunConfig(lr=LR, eta=ETA))


def _layout_name(topo) -> str:
    """``"shift"`` / ``"slots"`` / ``"edges"``: the name of the topology's per-edge layout
    (``topology.layout`` is a :mod:`ecl_jax.layouts` object with a ``name``, or the name)."""
    return getattr(topo.layout, "name", topo.layout)


def _rates(n: int, steps: int, times: list[float], batch: int = BATCH) -> dict:
    """Throughput of ``n`` nodes x ``steps`` steps per timed chunk: best and median."""
    best = min(times)
    return dict(
        node_steps_per_s=n * steps / best,
        samples_per_s=n * steps * batch / best,
        step_s=best / steps,
        step_s_median=sorted(times)[len(times) // 2] / steps,
    )


def _edge_schedule(name: str, n: int):
    """Every edge every step, or on a changing graph (one_peer_exponential, random_matching)
    every edge of the step's graph."""
    from ecl_jax import masks
    from ecl_jax.config import RunConfig
    from ecl_jax.registry import graph_schedule

    graph = graph_schedule(RunConfig(topology=name, n_nodes=n))
    return masks.AlwaysEdges() if graph is None else masks.ChangingGraph(graph, masks.AlwaysEdges())


def work_engine(cfg: dict) -> dict:
    """Vectorised run through :class:`Engine`: node-steps/s, compile time, memory."""
    import jax
    import jax.numpy as jnp

    from ecl_jax import tuning
    from ecl_jax.engine import Engine, mixed_precision

    n, steps, repeats = cfg["n"], cfg["steps"], cfg["repeats"]
    batch = int(cfg.get("batch", BATCH))
    model, loss = _model(cfg["model"])
    if cfg.get("precision", "float32") == "bfloat16":
        loss = mixed_precision(loss, jnp.bfloat16)
    topo = _topology(cfg["topology"], n, cfg.get("layout", "auto"))
    alg = _algorithm(cfg["algorithm"])
    data = _synthetic_data(n, data_rows(n) * batch // BATCH)  # as many batches per node as at BATCH
    params = _params(model, n)
    engine = Engine(alg, topo, loss, batch_size=batch, eval_every=steps, train_metrics=False,
                    edge_schedule=_edge_schedule(cfg["topology"], n))
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
    mode = engine.plan(carry, data).loop  # "scan" or "python"
    total = 10**9
    carry, first, times = _first_and_repeats(lambda c: engine.run_chunk(c, data, total)[0], carry, repeats)
    best = min(times)
    if devices > 1:
        txt = engine.lower(carry, data, total).compile().as_text()
        big = [c for c in collective_report(txt) if c[2] >= n]
        collectives = sorted({f"{op} {shape}" for op, shape, _ in big})
    finite = bool(all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree_util.tree_leaves(carry.state)
                      if jnp.issubdtype(leaf.dtype, jnp.floating)))
    p = _param_count(model)
    return dict(
        **_rates(n, steps, times, batch),
        times_s=times,
        speed_settings=tuning.summary(),
        compile_s=max(first - best, 0.0),
        loop_mode=mode,
        layout=_layout_name(topo),
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
    m = data_rows(n)
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
    params = run(params)  # (rebound, not through _first_and_repeats: not donated, the first copy is freed)
    _block(params)
    first = time.perf_counter() - t0

    def chunk():
        nonlocal params
        params = run(params)
        _block(params)

    times = _timed_repeats(chunk, repeats)
    return dict(
        **_rates(n, steps, times),  # "node-steps" = batches of B samples; samples = N*B per step
        compile_s=max(first - min(times), 0.0),
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
    m = data_rows(n)
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
    return dict(
        **_rates(n, steps, times),
        compile_s=max(first - min(times) / steps, 0.0),
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


def _exchange_and_aggregate(topo, algorithm: str, state, p: int):
    """The communication of one step alone, as the ``exchange`` columns time it: the one
    place where the bench calls the communication primitives (:class:`ecl_jax.duals.EdgeDuals`,
    :mod:`ecl_jax.graph_ops`).

    ECL-PDMM, every edge active: the reflection + exchange of every dual pair (PDMM,
    ``EdgeDuals.exchange``: z_{j|i} <- z_{i|j} - 2 A_{i|j} w_i, on the duals as ECL stores
    them, per undirected edge), then the aggregation sum_j A_{i|j} z_{i|j} per node
    (``EdgeDuals.signed_sum``), folded into the node models (w <- 0.999 w + 1e-3 agg) so it is not dead code.
    Gossip (any other algorithm): w_i <- w_i + sum_j c (w_j - w_i), c = 1 / (1 + max degree).

    ``state`` is the algorithm state, ``p`` the parameters per node. Returns
    ``(exchange, carry0, step_bytes, exchange_bytes)``: the loop body ``carry -> carry``,
    its first carry taken from ``state``, and the minimal memory traffic of one algorithm
    step (ECL: read w, g, z, write w, z; gossip: read w, g, write w) and of one exchange.
    """
    import jax
    import jax.numpy as jnp

    from ecl_jax import graph_ops as gops

    n = topo.n_nodes
    tmap = jax.tree_util.tree_map
    if algorithm == "ecl-pdmm":
        edge_floats = math.prod(topo.layout.pair_shape) * 2 * p
        step_bytes = 4 * (3 * n * p + 2 * edge_floats)  # read w, g, z; write w, z
        exch_bytes = 4 * (3 * edge_floats + 2 * n * p)  # read z, w(+agg out); write z
        everywhere = jnp.ones((topo.n_edges,), bool)

        def exchange(c):
            z, w = c
            out_z = z.exchange(w, everywhere)  # PDMM, all edges
            agg = out_z.signed_sum()
            return out_z, tmap(lambda ww, a: 0.999 * ww + 1e-3 * a, w, agg)

        carry0 = (state.duals, state.params)
    else:
        # gossip: read w, g; write w (neighbour reads come from cache in the ideal case)
        step_bytes = 4 * 3 * n * p
        exch_bytes = 4 * 2 * n * p  # read w, write mixed w
        weights = jnp.where(gops.edge_weights(topo, "valid") > 0, 1.0 / (1.0 + topo.max_degree), 0.0)

        def exchange(c):
            w, _ = c
            mixed = tmap(lambda ww: ww + gops.sum_edges(topo, gops.neighbor_values(topo, ww), weights)
                         - gops.expand(gops.sum_edges(topo, weights), ww) * ww, w)
            return mixed, None

        carry0 = (state.params, None)
    return exchange, carry0, step_bytes, exch_bytes


def work_update(cfg: dict) -> dict:
    """Algorithm step alone (fixed gradients) and the exchange + aggregation alone
    (:func:`_exchange_and_aggregate`), as bandwidth of their minimal traffic, against
    elementwise streaming."""
    import jax
    import jax.numpy as jnp

    n, iters, repeats = cfg["n"], cfg["steps"], cfg["repeats"]
    model, _ = _model(cfg["model"])
    topo = _topology(cfg["topology"], n, cfg.get("layout", "auto"))
    alg = _algorithm(cfg["algorithm"])
    params = _params(model, n)
    p = _param_count(model)
    grads = jax.tree_util.tree_map(lambda w: jnp.full_like(w, 1e-3), params)
    state = alg.init(params, topo)
    del params
    ea = jnp.ones((topo.n_edges,), bool)
    na = jnp.ones((n,), bool)
    slots = topo.edge_state_shape[1] if len(topo.edge_state_shape) == 2 else None

    # donated, as in the engine: the loop updates the state in place
    @functools.partial(jax.jit, donate_argnums=0)
    def steps(s):
        return jax.lax.fori_loop(0, iters, lambda i, st: alg.step(st, grads, topo, ea, na), s)

    state, compile_s, times = _first_and_repeats(steps, state, repeats)
    t_step = min(times) / iters
    exchange, carry0, step_bytes, exch_bytes = _exchange_and_aggregate(topo, cfg["algorithm"], state, p)

    @functools.partial(jax.jit, donate_argnums=0)
    def exch_loop(c):
        return jax.lax.fori_loop(0, iters, lambda i, cc: exchange(cc), c)

    del state
    t_exch = min(_first_and_repeats(exch_loop, carry0, repeats)[2]) / iters
    ew = _elementwise(n * p * (1 + (slots or 2)), iters, repeats)
    return dict(
        update_s=t_step,
        update_gbs=step_bytes / t_step / 1e9,
        exchange_s=t_exch,
        exchange_gbs=exch_bytes / t_exch / 1e9,
        compile_s=compile_s,
        params_per_node=p,
        layout=_layout_name(topo),
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
    topo = _topology(cfg["topology"], n, "auto")
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


def notebook_rule(path: Path | None = None):
    """``ecl_pdmm_heavy_ball`` as defined in ``notebooks/02_new_update_rule.py`` (its import cell
    and the cell that defines the rule, executed as they are), so the bench times the
    notebook's own code."""
    path = path or Path(__file__).resolve().parents[2] / "notebooks" / "02_new_update_rule.py"
    cells = path.read_text().split("\n# %%")
    code = [c for c in cells if c.startswith("\n") and ("import jax" in c or "def ecl_pdmm_heavy_ball" in c)]
    namespace: dict = {}
    exec(compile("\n".join(code), str(path), "exec"), namespace)  # noqa: S102 - our own notebook source
    return namespace["ecl_pdmm_heavy_ball"]


def work_user_rule(cfg: dict) -> dict:
    """The notebook's heavy-ball rule (a user's rule on the library's primitives) against the
    built-in ECL-PDMM, same engine, model, data and masks, chunks timed interleaved:
    node-steps/s of each and their ratio per round."""
    import jax
    import numpy as np

    from ecl_jax.engine import Engine

    n, steps, rounds = cfg["n"], cfg["steps"], cfg["repeats"]
    model, loss = _model(cfg["model"])
    topo = _topology(cfg["topology"], n, cfg.get("layout", "auto"))
    data = _synthetic_data(n, data_rows(n))
    params = _params(model, n)
    algs = {"ecl-pdmm": _algorithm("ecl-pdmm"), "notebook heavy-ball": notebook_rule()(LR, ETA, beta=0.5)}
    engines = {k: Engine(a, topo, loss, batch_size=BATCH, eval_every=steps, train_metrics=False) for k, a in algs.items()}
    carries = {k: e.init(params, jax.random.PRNGKey(1)) for k, e in engines.items()}
    times: dict[str, list[float]] = {k: [] for k in engines}
    for r in range(rounds + 1):  # round 0 compiles
        for k, e in engines.items():
            t0 = time.perf_counter()
            carries[k] = jax.block_until_ready(e.run_chunk(carries[k], data, 10**9)[0])
            if r:
                times[k].append(time.perf_counter() - t0)
    rate = {k: n * steps / np.asarray(v) for k, v in times.items()}
    ratio = rate["notebook heavy-ball"] / rate["ecl-pdmm"]
    return dict(
        node_steps_per_s=float(np.median(rate["notebook heavy-ball"])),
        builtin_node_steps_per_s=float(np.median(rate["ecl-pdmm"])),
        ratio_median=float(np.median(ratio)),
        ratio_min=float(ratio.min()),
        ratio_max=float(ratio.max()),
        layout=_layout_name(topo),
    )


def work_seeds(cfg: dict) -> dict:
    """``seeds`` seeds of the default job (``ecl-jax run experiments/default.py``, cut to ``steps`` steps) as one
    program (``--seeds``) against the same seeds run one after another, each a whole
    ``run_experiment`` (data, compilation, checkpoints, plots) as a user would run them;
    wall seconds of each side and the ratio sequential / batched."""
    import dataclasses
    import tempfile

    from ecl_jax.config import load_experiment
    from ecl_jax.runner import run_experiment

    config, _ = load_experiment(str(Path(__file__).resolve().parents[2] / "experiments" / "default.py"))
    seeds, steps = int(cfg["seeds"]), int(cfg["steps"])
    with tempfile.TemporaryDirectory() as tmp:
        base = dataclasses.replace(config, steps=steps, out_dir=tmp)
        t0 = time.perf_counter()
        batched = run_experiment(dataclasses.replace(base, name="batched", seeds=seeds), quiet=True)
        batched_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        alone = [run_experiment(dataclasses.replace(base, name=f"seed{s}", seed=s), quiet=True) for s in range(seeds)]
        sequential_s = time.perf_counter() - t0
    from ecl_jax.records import summarize

    mean_acc = lambda final: {k: v["test_acc_mean"] for k, v in summarize(final).items()}
    per_seed = [mean_acc(r.final) for r in alone]
    same = {k: abs(summarize(batched.final)[k]["test_acc_mean"] - sum(p[k] for p in per_seed) / seeds)
            for k in per_seed[0]}
    return dict(batched_s=batched_s, sequential_s=sequential_s, speedup=sequential_s / batched_s,
                algorithms=list(config.algorithms), n_nodes=config.n_nodes, model=config.model,
                max_acc_gap=max(same.values()))


WORKLOADS = {
    "seeds": work_seeds,
    "user_rule": work_user_rule,
    "engine": work_engine,
    "layout": work_engine,
    "devices": work_engine,
    "largeN": work_engine,
    "bigbatch": work_bigbatch,
    "loop": work_loop,
    "update": work_update,
    "precision": work_precision,
}


