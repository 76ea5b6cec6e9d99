"""The fast per-edge layouts compute exactly what the generic edge-list path computes.

The ``"shift"`` layout (static rolls of the node axis for rings, tori and other
circulant graphs) and the ``"slots"`` layout (dense neighbour slots, unrolled slot sums)
are performance paths; the ``"edges"`` layout (gathers over the CSR directed-edge list
and sorted ``segment_sum``) is the generic reference. Here:

* every graph primitive in the fast layouts equals its definition written in NumPy
  from the canonical directed-edge arrays (src, dst, reverse);
* every algorithm run for several steps with random edge and node masks gives the same
  models and the same per-edge state (compared in canonical (src, dst) order) in every
  layout as in the edges layout.

Correctness only, no timing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import naive_reference as nr

from ecl_jax import graph_ops as gops
from ecl_jax import topology as tp
from ecl_jax.layouts.slots import UNROLL_SLOTS
from ecl_jax.algorithms import dsgd, ecl_admm, ecl_pdmm, gossip, gradient_tracking, pairwise_gossip

SHIFT_TOPOS = {
    "ring7": lambda: tp.ring(7),
    "ring2": lambda: tp.ring(2),
    "torus3x4": lambda: tp.torus(3, 4),
    "torus2x3": lambda: tp.torus(2, 3),  # rows = 2: the +-1 row offsets coincide (degree 3)
    "exponential8": lambda: tp.exponential(8),  # offset N/2 is its own reverse
    "multiplex_ring9x2": lambda: tp.multiplex_ring(9, 2),
    "complete5": lambda: tp.complete(5),
}


# ------------------------------------------------------------------ topology
@pytest.mark.parametrize("name", list(SHIFT_TOPOS))
def test_shift_slots_hold_translated_neighbours(name):
    topo = SHIFT_TOPOS[name]().with_layout("shift")
    assert topo.layout.name == "shift" and topo.supports_shift
    grid = np.asarray(topo.node_grid)
    offsets = topo.shift_offsets
    assert topo.edge_state_shape == (topo.n_nodes, topo.max_degree) == (topo.n_nodes, len(offsets))
    dst = topo.edge_array("dst")
    for i in range(topo.n_nodes):
        c = np.array(np.unravel_index(i, tuple(grid)))
        want = [int(np.ravel_multi_index(tuple((c + o) % grid), tuple(grid))) for o in offsets]
        np.testing.assert_array_equal(dst[i], want)  # slot s of node i is i + o_s
        assert sorted(want) == topo.neighbors(i).tolist()  # and these are all its neighbours
    # the reverse slot holds the way back
    rs = topo.layout.reverse_slot
    nbr = topo.layout.neighbors
    for s in range(len(offsets)):
        np.testing.assert_array_equal(nbr[nbr[:, s], rs[s]], np.arange(topo.n_nodes))
    # position keeps its meaning: rank of the neighbour in increasing order
    pos = topo.edge_array("position")
    for i in range(topo.n_nodes):
        for s in range(len(offsets)):
            assert topo.neighbors(i)[pos[i, s]] == dst[i, s]
    # canonical round trip
    vals = np.random.default_rng(0).normal(size=(topo.n_directed, 2)).astype(np.float32)
    np.testing.assert_array_equal(topo.to_directed(topo.from_directed(vals)), vals)


def test_shift_layout_errors_and_fast_choice():
    with pytest.raises(tp.TopologyError, match="not invariant under translations"):
        tp.star(6, layout="shift")
    with pytest.raises(tp.TopologyError, match="not invariant under translations"):
        tp.icml21_random().with_layout("shift")
    assert tp.ring(6, layout="fast").layout.name == "shift"  # "fast": the older name of "auto"
    assert tp.torus(3, 3).layout.name == "shift"  # "auto": shift where the graph allows it
    assert tp.star(6, layout="fast").layout.name == "edges"  # else slots or edges by padding
    assert tp.icml21_random().layout.name == "edges"
    assert tp.ring(6, layout="slots").layout.name == "slots"
    with pytest.raises(ValueError, match="layout must be one of"):
        tp.ring(6, layout="roll")
    # a torus numbered on its grid is not circulant in the flat index: the grid matters
    flat = tp.from_edges(12, tp.torus(3, 4).edges)
    assert not flat.supports_shift and tp.torus(3, 4).supports_shift


# ------------------------------------------------------------ graph primitives
def _numpy_primitives(topo, x, e_dir, w_dir):
    """Definitions on canonical directed edges: (broadcast, neighbour, reverse, sum)."""
    src, dst, rev = topo.src, topo.dst, topo.reverse
    bcast = x[src]
    nbr = x[dst]
    reverse = e_dir[rev]
    total = np.zeros((topo.n_nodes,) + e_dir.shape[1:], np.float64)
    np.add.at(total, src, e_dir * w_dir.reshape((-1,) + (1,) * (e_dir.ndim - 1)))
    return bcast, nbr, reverse, total


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["shift", "slots", "edges"])
@pytest.mark.parametrize("name", ["ring7", "torus3x4", "torus2x3", "exponential8", "complete5"])
def test_primitives_match_numpy_definition(name, layout):
    topo = SHIFT_TOPOS[name]().with_layout(layout)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(topo.n_nodes, 3, 2)).astype(np.float32)
    e_dir = rng.normal(size=(topo.n_directed, 3, 2)).astype(np.float32)
    w_dir = rng.normal(size=topo.n_directed).astype(np.float32)
    want_b, want_n, want_r, want_s = _numpy_primitives(topo, x, e_dir, w_dir)
    e = jnp.asarray(topo.from_directed(e_dir))
    w = jnp.asarray(topo.from_directed(w_dir))
    np.testing.assert_array_equal(topo.to_directed(gops.broadcast_to_edges(topo, jnp.asarray(x))), want_b)
    np.testing.assert_array_equal(topo.to_directed(gops.neighbor_values(topo, jnp.asarray(x))), want_n)
    np.testing.assert_array_equal(topo.to_directed(gops.reverse(topo, e)), want_r)
    np.testing.assert_allclose(np.asarray(gops.sum_edges(topo, e, w)), want_s, rtol=1e-5, atol=1e-5)
    # unweighted sum = valid-slot mask (padding contributes nothing)
    ones = np.ones(topo.n_directed, np.float32)
    _, _, _, want_plain = _numpy_primitives(topo, x, e_dir, ones)
    np.testing.assert_allclose(np.asarray(gops.sum_edges(topo, e)), want_plain, rtol=1e-5, atol=1e-5)


def test_unrolled_and_reduced_slot_sums_agree():
    # complete(40) has 39 slots: above the unroll threshold, so the reduce path is used.
    topo = tp.complete(40, layout="slots")
    assert topo.max_degree > UNROLL_SLOTS
    rng = np.random.default_rng(2)
    e_dir = rng.normal(size=(topo.n_directed, 4)).astype(np.float32)
    w_dir = rng.normal(size=topo.n_directed).astype(np.float32)
    _, _, _, want = _numpy_primitives(topo, np.zeros((40, 4), np.float32), e_dir, w_dir)
    got = gops.sum_edges(topo, jnp.asarray(topo.from_directed(e_dir)), jnp.asarray(topo.from_directed(w_dir)))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ algorithms
ALGORITHMS = {
    "ecl-pdmm": lambda: ecl_pdmm(0.1, eta=0.7),
    "ecl-admm-kdd20": lambda: ecl_admm(0.1, eta=0.5, theta=1.0, dual_smoothing=True, rho=0.3, eta_rule="degree"),
    "gossip": lambda: gossip(0.1),
    "pairwise-gossip": lambda: pairwise_gossip(0.1),
    "dsgd": lambda: dsgd(0.1),
    "gradient-tracking": lambda: gradient_tracking(0.1),
}


def _edge_parts(state, topo):
    """Per-edge state leaves in canonical directed order (layout-independent)."""
    out = {}
    state = nr.directed_duals(state)  # EdgeDuals (recognised by type) -> z_{i|j} per directed edge
    names = getattr(state, "_fields", ())
    for field in ("duals", "smoothed_duals", "received"):
        if field in names and getattr(state, field) is not None:
            for k, leaf in enumerate(jax.tree_util.tree_leaves(getattr(state, field))):
                out[f"{field}{k}"] = topo.to_directed(np.asarray(leaf))
    return out


def _run(alg, topo, steps, seed):
    n = topo.n_nodes
    key = jax.random.PRNGKey(seed)
    params = {"w": jax.random.normal(key, (n, 3, 2)), "b": jax.random.normal(jax.random.fold_in(key, 1), (n, 2))}
    targets = jax.tree_util.tree_map(lambda p: jax.random.normal(jax.random.fold_in(key, 2), p.shape), params)
    state = alg.init(params, topo)
    step = jax.jit(lambda s, g, ea, na: alg.step(s, g, topo, ea, na))
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        p = alg.node_params(state)
        grads = jax.tree_util.tree_map(lambda w, t: jnp.tanh(w - t) + 0.1 * w**3, p, targets)  # nonlinear
        ea = jnp.asarray(rng.random(topo.n_edges) < 0.6)
        na = jnp.asarray(rng.random(n) < 0.8)
        state = step(state, grads, ea, na)
    return state


@pytest.mark.slow
@pytest.mark.parametrize("alg_name", list(ALGORITHMS))
@pytest.mark.parametrize("name", ["ring7", "torus3x4", "exponential8"])
def test_algorithms_same_in_every_layout(name, alg_name):
    base = SHIFT_TOPOS[name]()
    ref_topo = base.with_layout("edges")
    ref = _run(ALGORITHMS[alg_name](), ref_topo, steps=6, seed=3)
    ref_params = jax.tree_util.tree_leaves(ALGORITHMS[alg_name]().node_params(ref))
    ref_edges = _edge_parts(ref, ref_topo)
    for layout in ("shift", "slots"):
        topo = base.with_layout(layout)
        got = _run(ALGORITHMS[alg_name](), topo, steps=6, seed=3)
        for a, b in zip(jax.tree_util.tree_leaves(ALGORITHMS[alg_name]().node_params(got)), ref_params):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6, err_msg=f"{layout} params")
        got_edges = _edge_parts(got, topo)
        assert set(got_edges) == set(ref_edges)
        for k in ref_edges:
            np.testing.assert_allclose(got_edges[k], ref_edges[k], rtol=2e-5, atol=2e-6, err_msg=f"{layout} {k}")
    # the run did something: models moved and (for ECL) duals are nonzero
    assert max(float(np.abs(np.asarray(a)).max()) for a in ref_params) > 0


# ------------------------------------------------------------------ engine paths
def _engine_setup():
    from ecl_jax.engine import NodeData

    n, d, c = 4, 6, 3
    key = jax.random.PRNGKey(5)
    k1, k2, k3 = jax.random.split(key, 3)
    params = {"w": 0.5 * jax.random.normal(k1, (n, d, c)), "b": jnp.zeros((n, c))}
    data = NodeData(jax.random.normal(k2, (n, 10, d)), jax.random.randint(k3, (n, 10), 0, c), jnp.full((n,), 10, jnp.int32))

    def loss(p, x, y, rng):
        logits = jnp.tanh(x @ p["w"]) + p["b"]
        return -jax.nn.log_softmax(logits)[jnp.arange(x.shape[0]), y]

    return tp.ring(n, layout="shift"), params, data, loss


@pytest.mark.slow
def test_unrolled_node_gradients_equal_vmapped():
    from ecl_jax.engine import Engine

    topo, params, data, loss = _engine_setup()
    runs = {}
    for mode in ("vmap", "unrolled"):
        eng = Engine(ecl_pdmm(0.1), topo, loss, batch_size=4, eval_every=3, node_grads=mode)
        carry, _ = eng.run(params, data, 6, jax.random.PRNGKey(0))
        runs[mode] = jax.tree_util.tree_leaves(carry.state)
    for a, b in zip(runs["vmap"], runs["unrolled"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(runs["vmap"][0] - params["b"]).max()) > 1e-3  # the models moved
    with pytest.raises(ValueError, match="node_grads must be"):
        Engine(ecl_pdmm(0.1), topo, loss, node_grads="scan")


@pytest.mark.slow
def test_mixed_precision_keeps_float32_state_and_changes_only_rounding():
    from ecl_jax.engine import Engine, mixed_precision

    topo, params, data, loss = _engine_setup()
    out = {}
    for name, fn in (("f32", loss), ("bf16", mixed_precision(loss))):
        eng = Engine(ecl_pdmm(0.1), topo, fn, batch_size=4, eval_every=3)
        carry, hist = eng.run(params, data, 6, jax.random.PRNGKey(0))
        out[name] = carry
        floats = [leaf for leaf in jax.tree_util.tree_leaves(carry.state) if leaf.ndim and leaf.dtype != jnp.bool_]
        assert floats and all(leaf.dtype == jnp.float32 for leaf in floats)  # bool: the duals' news flags
    a = jax.tree_util.tree_leaves(out["f32"].state.params)
    b = jax.tree_util.tree_leaves(out["bf16"].state.params)
    worst = max(float(jnp.abs(x - y).max()) for x, y in zip(a, b))
    assert 0.0 < worst < 0.05  # bfloat16 rounding shows, but the runs agree closely
    # the wrapped loss computes in bfloat16 and returns float32
    x = data.x[0, :3]
    assert mixed_precision(loss)(jax.tree_util.tree_map(lambda w: w[0], params), x, data.y[0, :3]).dtype == jnp.float32
    with pytest.raises(ValueError, match="floating dtype"):
        mixed_precision(loss, jnp.int32)


# ------------------------------------------------------------ fusion boundary
def test_materialized_is_fn_for_any_token_and_a_conditional_on_cpu():
    from ecl_jax.algorithms.base import materialized

    def fn(a, b):
        return {"x": a * 2.0 + b, "y": (a - b, b.sum())}

    a, b = jnp.arange(6.0).reshape(2, 3), jnp.ones((2, 3))
    want = fn(a, b)
    for token in (0, 7, -3):  # a negative token takes the other branch, which also computes fn
        got = jax.jit(lambda a, b, t: materialized(fn, a, b, token=t))(a, b, jnp.int32(token))
        jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
    hlo = jax.jit(lambda a, b, t: materialized(fn, a, b, token=t)).lower(a, b, jnp.int32(0)).as_text()
    assert ("stablehlo.case" in hlo or "stablehlo.if" in hlo) == (jax.default_backend() == "cpu")


@pytest.mark.parametrize("make", [lambda: ecl_pdmm(lr=0.1, eta=1.0), lambda: gossip(lr=0.1), lambda: dsgd(lr=0.1)],
                         ids=["ecl-pdmm", "gossip", "dsgd"])
def test_steps_materialise_the_local_update_once(make):
    """On CPU the local/primal update runs inside one conditional (a fusion boundary), so
    XLA cannot recompute it inside every consumer of the shifted exchange."""
    if jax.default_backend() != "cpu":
        pytest.skip("the boundary is only inserted on the CPU backend")
    alg, topo = make(), tp.ring(8, layout="fast")
    params = {"w": jnp.ones((8, 5)), "b": jnp.zeros((8,))}
    state = alg.init(params, topo)
    ea, na = jnp.ones(topo.n_edges, bool), jnp.ones(8, bool)
    hlo = jax.jit(lambda s, g: alg.step(s, g, topo, ea, na)).lower(state, params).compile().as_text()
    assert hlo.count(" conditional(") == 1


def test_layout_is_a_config_field_and_a_cli_setting():
    from ecl_jax.config import ConfigError, RunConfig, apply_overrides
    from ecl_jax.registry import build_topology

    assert RunConfig().layout == "auto"
    assert build_topology(RunConfig()).layout.name == "shift"  # the default ring: the fastest correct layout
    assert build_topology(RunConfig(topology="star")).layout.name == "edges"
    for lay in ("shift", "slots", "edges"):
        assert build_topology(apply_overrides(RunConfig(), [f"layout={lay}"])).layout.name == lay
    with pytest.raises(ConfigError, match="unknown layout 'rolls'; valid: auto, shift, slots, edges"):
        RunConfig(layout="rolls")
    with pytest.raises(ConfigError, match="star16 is not invariant under translations.*layout='auto'"):
        build_topology(RunConfig(topology="star", layout="shift"))
