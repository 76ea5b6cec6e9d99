"""Pair-stored duals (``ecl_jax.duals.EdgeDuals`` and the layouts' pair methods) against
their NumPy definition.

u = x_{a|b} + x_{b|a}, v = x_{a|b} - x_{b|a} per undirected edge {a, b}, owner a; the
conversions must be inverse to each other in every layout, including shift layouts with
an offset that is its own reverse (N/2 on the exponential graph, the 2-row torus).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecl_jax import graph_ops as gops
from ecl_jax import topology as tp
from ecl_jax.duals import EdgeDuals, is_duals

GRAPHS = {
    "ring7": lambda: tp.ring(7),
    "exponential8": lambda: tp.exponential(8),  # offset 4 = -4 (mod 8)
    "torus3x4": lambda: tp.torus(3, 4),
    "torus2x4": lambda: tp.torus(2, 4),  # vertical offset 1 = -1 (mod 2)
    "icml21": lambda: tp.icml21_random(),
    "star6": lambda: tp.star(6),
}


def _layouts(topo):
    return [lay for lay in ("shift", "slots", "edges") if lay != "shift" or topo.supports_shift]


def _owner_view(topo, x):
    """Pair-stored array -> (owner, other, u, v) per stored pair, from the static arrays."""
    if topo.layout.name == "shift":
        slots = topo.layout.pair_slots
        owner = np.repeat(np.arange(topo.n_nodes)[:, None], len(slots), 1)
        other = topo.layout.neighbors[:, slots]
        return owner.reshape(-1), other.reshape(-1), x[:, :, 0].reshape(-1, *x.shape[3:]), x[:, :, 1].reshape(-1, *x.shape[3:])
    return topo.edges[:, 0], topo.edges[:, 1], x[:, 0], x[:, 1]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(GRAPHS))
def test_pairs_hold_sum_and_difference_and_convert_back(name):
    base = GRAPHS[name]()
    rng = np.random.default_rng(0)
    z = rng.normal(size=(base.n_directed, 3)).astype(np.float32)  # canonical x_{src|dst}
    w = rng.normal(size=(base.n_nodes, 3)).astype(np.float32)
    for layout in _layouts(base):
        topo = base.with_layout(layout)
        duals = EdgeDuals.from_directed(topo, {"w": jnp.asarray(topo.from_directed(z))})
        x = np.asarray(duals.pairs["w"])
        assert x.shape == topo.layout.pair_shape + (2, 3)
        a, b, u, v = _owner_view(topo, x)
        k_ab = np.array([topo.directed_index(i, j) for i, j in zip(a, b)])
        k_ba = np.array([topo.directed_index(j, i) for i, j in zip(a, b)])
        np.testing.assert_allclose(u, z[k_ab] + z[k_ba], rtol=1e-6, atol=1e-6, err_msg=layout)
        np.testing.assert_allclose(v, z[k_ab] - z[k_ba], rtol=1e-6, atol=1e-6, err_msg=layout)
        # every undirected edge is stored (twice only for self-reverse shift offsets)
        assert {tuple(sorted(p)) for p in zip(a, b)} == set(map(tuple, topo.edges.tolist()))
        # back to directed values, padding slots 0
        back = duals.directed()["w"]
        np.testing.assert_allclose(topo.to_directed(back), z, rtol=1e-6, atol=1e-6, err_msg=layout)
        if layout == "slots":
            assert np.all(np.asarray(back)[~topo.layout.slot_valid] == 0)
        # owner's sign A_{a|b} and the two end values
        np.testing.assert_array_equal(np.asarray(topo.layout.pair_sign()).reshape(-1), topo.sign[k_ab])
        wa, wb = (np.asarray(e).reshape(-1, 3) for e in topo.layout.pair_endpoints(jnp.asarray(w)))
        np.testing.assert_array_equal(wa, w[a])
        np.testing.assert_array_equal(wb, w[b])


@pytest.mark.slow
@pytest.mark.parametrize("theta", [1.0, 0.5])
@pytest.mark.parametrize("name", list(GRAPHS))
def test_exchange_is_the_directed_exchange(name, theta):
    # z_{i|j} <- (1 - theta) z_{i|j} + theta (z_{j|i} - 2 A_{j|i} w_j), per directed edge (NumPy)
    base = GRAPHS[name]()
    rng = np.random.default_rng(1)
    z = rng.normal(size=(base.n_directed, 3)).astype(np.float32)
    w = rng.normal(size=(base.n_nodes, 3)).astype(np.float32)
    src, dst = base.src, base.dst
    rev = np.array([base.directed_index(j, i) for i, j in zip(src, dst)])
    want = (1 - theta) * z + theta * (z[rev] - 2 * base.sign[rev][:, None] * w[dst])
    for layout in _layouts(base):
        topo = base.with_layout(layout)
        duals = EdgeDuals.from_directed(topo, {"w": jnp.asarray(topo.from_directed(z))})
        every = jnp.ones(topo.n_edges, bool)
        got = topo.to_directed(duals.exchange({"w": jnp.asarray(w)}, every, theta).directed()["w"])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=layout)
        # a masked exchange changes exactly the active edges' two duals
        active = rng.random(topo.n_edges) < 0.5
        got = topo.to_directed(duals.exchange({"w": jnp.asarray(w)}, jnp.asarray(active), theta).directed()["w"])
        on = active[topo.undirected]
        np.testing.assert_allclose(got[on], want[on], rtol=1e-5, atol=1e-5, err_msg=layout)
        np.testing.assert_allclose(got[~on], z[~on], rtol=1e-6, atol=1e-6, err_msg=layout)


@pytest.mark.parametrize("name", ["exponential8", "icml21"])
def test_pair_mask_is_edge_and_both_ends(name):
    base = GRAPHS[name]()
    rng = np.random.default_rng(1)
    edge_active = rng.random(base.n_edges) < 0.5
    node_active = rng.random(base.n_nodes) < 0.7
    for layout in _layouts(base):
        topo = base.with_layout(layout)
        exchanging = gops.exchanging_edges(topo, jnp.asarray(edge_active), jnp.asarray(node_active))
        got = np.asarray(topo.layout.pair_mask(exchanging)).reshape(-1)
        a, b, _, _ = _owner_view(topo, np.zeros(topo.layout.pair_shape + (2, 1)))
        und = np.array([topo.undirected[topo.directed_index(i, j)] for i, j in zip(a, b)])
        np.testing.assert_array_equal(got, edge_active[und] & node_active[a] & node_active[b], err_msg=layout)


def test_pair_storage_is_two_floats_per_edge_up_to_self_reverse_offsets():
    assert tp.ring(8, layout="shift").layout.pair_shape == (8, 1)  # 8 edges
    assert tp.ring(8, layout="edges").layout.pair_shape == (8,)
    # exponential(64): offsets +-1..+-16 and 32; 32 is its own reverse: 6 columns for 352 edges
    topo = tp.exponential(64, layout="shift")
    assert topo.layout.pair_shape == (64, 6) and topo.n_edges == 64 * 5 + 32
    assert topo.with_layout("slots").layout.pair_shape == (topo.n_edges,)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(GRAPHS))
def test_signed_sum_against_numpy(name):
    base = GRAPHS[name]()
    rng = np.random.default_rng(2)
    z = rng.normal(size=(base.n_directed, 2, 3)).astype(np.float32)  # leaves with trailing shape (2, 3)
    # sum_j A_{i|j} z_{i|j} per node
    want = np.zeros((base.n_nodes, 2, 3), np.float64)
    np.add.at(want, base.src, base.sign[:, None, None] * z)
    for layout in _layouts(base):
        topo = base.with_layout(layout)
        new = EdgeDuals.from_directed(topo, {"w": jnp.asarray(topo.from_directed(z))})
        got = new.signed_sum()["w"]
        assert got.shape == (topo.n_nodes, 2, 3)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=layout)


def test_duals_are_a_typed_pytree():
    topo = tp.ring(6)
    params = {"k": jnp.ones((6, 4, 3)), "b": jnp.ones((6, 3))}
    duals = EdgeDuals.zeros(topo, params)
    assert is_duals(duals) and not is_duals(params)
    assert [x.shape for x in jax.tree_util.tree_leaves(duals)] == [(6, 1, 2, 3), (6, 1, 2, 12), (6, 1, 2)]  # values in key order, then news
    assert duals.news.shape == (6, 1, 2) and duals.news.dtype == bool and not duals.news.any()
    doubled = duals.map(lambda x: x + 2.0)  # elementwise maps keep the type
    assert isinstance(doubled, EdgeDuals) and doubled.layout is topo.layout
    out = jax.jit(lambda d: d.exchange(params, jnp.ones(6, bool)))(doubled)  # through jit
    assert isinstance(out, EdgeDuals) and out.shapes == duals.shapes
    assert {k: v.shape for k, v in out.directed().items()} == {"k": (6, 2, 4, 3), "b": (6, 2, 3)}
    assert {k: v.shape for k, v in out.signed_sum().items()} == {"k": (6, 4, 3), "b": (6, 3)}
