"""Pair storage of per-edge state (``ecl_jax.edge_pairs``) against its NumPy definition.

u = x_{a|b} + x_{b|a}, v = x_{a|b} - x_{b|a} per undirected edge {a, b}, owner a; the
conversions must be inverse to each other in every layout, including shift layouts with
an offset that is its own reverse (N/2 on the exponential graph, the 2-row torus).
"""

import jax.numpy as jnp
import numpy as np
import pytest

from ecl_jax import edge_pairs as ep
from ecl_jax import topology as tp

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
    if topo.layout == "shift":
        slots = ep.pair_slots(topo)
        owner = np.repeat(np.arange(topo.n_nodes)[:, None], len(slots), 1)
        other = topo.shift_neighbors[:, slots]
        return owner.reshape(-1), other.reshape(-1), x[:, :, 0].reshape(-1, *x.shape[3:]), x[:, :, 1].reshape(-1, *x.shape[3:])
    return topo.edges[:, 0], topo.edges[:, 1], x[:, 0], x[:, 1]


@pytest.mark.parametrize("name", list(GRAPHS))
def test_pairs_hold_sum_and_difference_and_convert_back(name):
    base = GRAPHS[name]()
    rng = np.random.default_rng(0)
    z = rng.normal(size=(base.n_directed, 3)).astype(np.float32)  # canonical x_{src|dst}
    w = rng.normal(size=(base.n_nodes, 3)).astype(np.float32)
    for layout in _layouts(base):
        topo = base.with_layout(layout)
        x = np.asarray(ep.from_layout(topo, jnp.asarray(topo.from_directed(z))))
        assert x.shape == ep.pair_shape(topo) + (2, 3)
        a, b, u, v = _owner_view(topo, x)
        k_ab = np.array([topo.directed_index(i, j) for i, j in zip(a, b)])
        k_ba = np.array([topo.directed_index(j, i) for i, j in zip(a, b)])
        np.testing.assert_allclose(u, z[k_ab] + z[k_ba], rtol=1e-6, atol=1e-6, err_msg=layout)
        np.testing.assert_allclose(v, z[k_ab] - z[k_ba], rtol=1e-6, atol=1e-6, err_msg=layout)
        # every undirected edge is stored (twice only for self-reverse shift offsets)
        assert {tuple(sorted(p)) for p in zip(a, b)} == set(map(tuple, topo.edges.tolist()))
        # back to directed values, padding slots 0
        back = ep.to_layout(topo, jnp.asarray(x))
        np.testing.assert_allclose(topo.to_directed(back), z, rtol=1e-6, atol=1e-6, err_msg=layout)
        if layout == "slots":
            assert np.all(np.asarray(back)[~topo.slot_valid] == 0)
        # owner's sign A_{a|b} and the two end values
        np.testing.assert_array_equal(np.asarray(ep.pair_sign(topo)).reshape(-1), topo.sign[k_ab])
        wa, wb = (np.asarray(e).reshape(-1, 3) for e in ep.endpoints(topo, jnp.asarray(w)))
        np.testing.assert_array_equal(wa, w[a])
        np.testing.assert_array_equal(wb, w[b])


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
        x = ep.from_layout(topo, jnp.asarray(topo.from_directed(z)))
        got = topo.to_directed(ep.to_layout(topo, ep.exchange(topo, x, jnp.asarray(w), theta)))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=layout)


@pytest.mark.parametrize("name", ["exponential8", "icml21"])
def test_pair_mask_is_edge_and_both_ends(name):
    base = GRAPHS[name]()
    rng = np.random.default_rng(1)
    edge_active = rng.random(base.n_edges) < 0.5
    node_active = rng.random(base.n_nodes) < 0.7
    for layout in _layouts(base):
        topo = base.with_layout(layout)
        got = np.asarray(ep.pair_mask(topo, jnp.asarray(edge_active), jnp.asarray(node_active))).reshape(-1)
        a, b, _, _ = _owner_view(topo, np.zeros(ep.pair_shape(topo) + (2, 1)))
        und = np.array([topo.undirected[topo.directed_index(i, j)] for i, j in zip(a, b)])
        np.testing.assert_array_equal(got, edge_active[und] & node_active[a] & node_active[b], err_msg=layout)


def test_pair_storage_is_two_floats_per_edge_up_to_self_reverse_offsets():
    assert ep.pair_shape(tp.ring(8, layout="shift")) == (8, 1)  # 8 edges
    assert ep.pair_shape(tp.ring(8, layout="edges")) == (8,)
    # exponential(64): offsets +-1..+-16 and 32; 32 is its own reverse: 6 columns for 352 edges
    topo = tp.exponential(64, layout="shift")
    assert ep.pair_shape(topo) == (64, 6) and topo.n_edges == 64 * 5 + 32
    assert ep.pair_shape(topo.with_layout("slots")) == (topo.n_edges,)
