"""Topology constructors and the static index arrays every algorithm relies on.

Ground truth is written independently of ``ecl_jax.topology``: edge sets are built here
by hand (or by networkx) and every derived array (CSR order, reverse, sign, slots) is
checked against its definition (docs/algorithms.md#per-node-and-per-edge-variables,
docs/design.md#topology).
"""

from __future__ import annotations

import time

import networkx as nx
import numpy as np
import pytest

from ecl_jax import layouts
from ecl_jax import topology as tp


def _edge_set(topo) -> set[tuple[int, int]]:
    return {(int(u), int(v)) for u, v in topo.edges}


def _undirected(pairs) -> set[tuple[int, int]]:
    return {(min(u, v), max(u, v)) for u, v in pairs if u != v}


# ----------------------------------------------------------------- constructors
CONSTRUCTORS = {
    # name: (factory, N, set of undirected edges built here by hand)
    "ring8": (lambda: tp.ring(8), 8, _undirected((i, (i + 1) % 8) for i in range(8))),
    "ring2": (lambda: tp.ring(2), 2, {(0, 1)}),
    "ring3": (lambda: tp.ring(3), 3, {(0, 1), (1, 2), (0, 2)}),
    "multiplex_ring8x2": (
        lambda: tp.multiplex_ring(8, 2),
        8,
        _undirected((i, (i + h) % 8) for i in range(8) for h in (1, 2)),
    ),
    "torus4x5": (
        lambda: tp.torus(4, 5),
        20,
        _undirected(
            (r * 5 + c, r * 5 + (c + 1) % 5) for r in range(4) for c in range(5)
        )
        | _undirected((r * 5 + c, ((r + 1) % 4) * 5 + c) for r in range(4) for c in range(5)),
    ),
    "complete5": (lambda: tp.complete(5), 5, _undirected((i, j) for i in range(5) for j in range(5))),
    "star6": (lambda: tp.star(6), 6, {(0, j) for j in range(1, 6)}),
    "star6_center3": (lambda: tp.star(6, center=3), 6, _undirected((3, j) for j in range(6))),
    "exponential8": (
        lambda: tp.exponential(8),
        8,
        _undirected((i, (i + h) % 8) for i in range(8) for h in (1, 2, 4)),
    ),
    "exponential12": (
        lambda: tp.exponential(12),
        12,
        _undirected((i, (i + h) % 12) for i in range(12) for h in (1, 2, 4, 8)),
    ),
    "icml21_random": (
        lambda: tp.icml21_random(),
        8,
        {(0, 1), (0, 4), (0, 6), (0, 7), (1, 6), (2, 4), (2, 5), (3, 6), (3, 7), (4, 5)},
    ),
}


@pytest.mark.parametrize("name", list(CONSTRUCTORS))
def test_constructor_edges_and_degrees(name):
    factory, n, expected = CONSTRUCTORS[name]
    topo = factory()
    assert topo.n_nodes == n
    assert _edge_set(topo) == expected
    assert topo.n_edges == len(expected) and topo.n_directed == 2 * len(expected)
    deg = np.zeros(n, int)
    for u, v in expected:
        deg[u] += 1
        deg[v] += 1
    np.testing.assert_array_equal(topo.degree, deg)
    assert topo.max_degree == deg.max()
    assert topo.is_regular == bool((deg == deg[0]).all())
    g = topo.to_networkx()
    assert nx.is_connected(g) and g.number_of_edges() == len(expected)


def test_paper_graph_sizes_and_degrees():
    mr = tp.multiplex_ring(8, 2)
    assert (mr.n_nodes, mr.n_edges) == (8, 16) and set(mr.degree.tolist()) == {4}
    rnd = tp.icml21_random()
    assert dict(enumerate(rnd.degree.tolist())) == {0: 4, 1: 2, 2: 2, 3: 2, 4: 3, 5: 2, 6: 3, 7: 2}
    assert rnd.n_edges == 10 and not rnd.is_regular
    tor = tp.torus(4, 5)
    assert tor.n_edges == 40 and set(tor.degree.tolist()) == {4}
    ex = tp.exponential(16)  # hops 1, 2, 4, 8 (8 = -8 mod 16): degree 2 + 2 + 2 + 1
    assert set(ex.degree.tolist()) == {7} and ex.n_edges == 16 * 7 // 2
    assert tp.complete(6).n_edges == 15 and set(tp.complete(6).degree.tolist()) == {5}
    hops = tp.multiplex_ring(10, (1, 3))
    assert _edge_set(hops) == _undirected((i, (i + h) % 10) for i in range(10) for h in (1, 3))


def test_auto_layout_choice():
    # the fastest correct layout: shift on translation-invariant graphs ...
    for topo in (tp.ring(8), tp.multiplex_ring(8, 2), tp.torus(4, 5), tp.exponential(16), tp.complete(5)):
        assert isinstance(topo.layout, layouts.ShiftLayout) and topo.layout.name == "shift", topo
    # ... else slots when padding adds <= 25 % to 2E, else the edge list
    assert tp.random_regular(10, 3).layout.name == "slots"
    assert tp.star(8).layout.name == "edges"  # padding N * D = 56 vs 2E = 14
    assert tp.star(8).edge_state_shape == (14,)
    assert tp.ring(8).edge_state_shape == (8, 2)
    # icml21_random: N * D = 32 vs 2E = 20 -> edge list
    assert isinstance(tp.icml21_random().layout, layouts.EdgeListLayout)
    assert tp.ring(8, layout="edges").layout.name == "edges"
    assert tp.ring(8, layout="fast").layout.name == "shift"  # the older name of "auto"
    assert isinstance(tp.star(8, layout="slots").layout, layouts.SlotLayout)
    assert tp.star(8, layout="slots").edge_state_shape == (8, 7)
    assert tp.ring(8).with_layout("edges").layout.name == "edges"
    with pytest.raises(tp.TopologyError, match="not invariant under translations.*layout='auto'"):
        tp.star(8, layout="shift")
    with pytest.raises(tp.TopologyError, match="layout must be one of 'auto', 'shift', 'slots', 'edges'.*got 'ring'"):
        tp.ring(8, layout="ring")


def test_random_regular_is_regular_connected_and_seeded():
    a = tp.random_regular(10, 3, seed=4)
    b = tp.random_regular(10, 3, seed=4)
    assert set(a.degree.tolist()) == {3} and a.n_edges == 15
    assert nx.is_connected(a.to_networkx())
    np.testing.assert_array_equal(a.edges, b.edges)
    others = [tp.random_regular(10, 3, seed=s).edges for s in range(5, 10)]
    assert any(o.shape != a.edges.shape or not np.array_equal(o, a.edges) for o in others)


def test_erdos_renyi_connected_and_reproducible():
    graphs = [tp.erdos_renyi(20, 0.15, seed=s) for s in range(6)]
    for g in graphs:
        assert nx.is_connected(g.to_networkx())
        assert g.n_nodes == 20
    again = tp.erdos_renyi(20, 0.15, seed=3)
    np.testing.assert_array_equal(again.edges, graphs[3].edges)
    assert len({g.edges.tobytes() for g in graphs}) > 1  # seeds matter
    # Expected edge count ~ p * N(N-1)/2 = 28.5 (resampling until connected biases it up a bit).
    mean_e = np.mean([g.n_edges for g in graphs])
    assert 18 <= mean_e <= 45
    assert tp.erdos_renyi(6, 1.0).n_edges == 15  # p = 1 is the complete graph


def test_from_networkx_relabels_in_node_order():
    g = nx.petersen_graph()
    topo = tp.from_networkx(g)
    assert (topo.n_nodes, topo.n_edges) == (10, 15) and set(topo.degree.tolist()) == {3}
    assert _edge_set(topo) == _undirected(g.edges)
    labelled = nx.Graph([("c", "a"), ("a", "b"), ("b", "d")])  # node order: c, a, b, d
    t2 = tp.from_networkx(labelled)
    assert _edge_set(t2) == {(0, 1), (1, 2), (2, 3)}
    np.testing.assert_array_equal(t2.degree, [1, 2, 2, 1])


@pytest.mark.parametrize("factory", [lambda: tp.icml21_random(), lambda: tp.torus(3, 4), lambda: tp.star(5)])
def test_adjacency_round_trip(factory):
    topo = factory()
    a = topo.adjacency()
    assert a.dtype == bool and a.shape == (topo.n_nodes,) * 2
    assert (a == a.T).all() and not a.diagonal().any()
    assert a.sum() == 2 * topo.n_edges
    for u, v in topo.edges:
        assert a[u, v] and a[v, u]
    again = tp.from_adjacency(a)
    np.testing.assert_array_equal(again.edges, topo.edges)
    np.testing.assert_array_equal(tp.from_adjacency(a.astype(np.int64)).edges, topo.edges)
    np.testing.assert_array_equal(tp.from_adjacency(a.astype(np.float32)).edges, topo.edges)


# ---------------------------------------------------------- directed arrays
ALL_TOPOS = {
    "ring8": lambda: tp.ring(8),
    "ring2": lambda: tp.ring(2),
    "icml21_random": lambda: tp.icml21_random(),
    "star7": lambda: tp.star(7, center=2),
    "torus3x4": lambda: tp.torus(3, 4),
    "er15": lambda: tp.erdos_renyi(15, 0.3, seed=1),
}


@pytest.mark.parametrize("name", list(ALL_TOPOS))
def test_directed_arrays_consistent(name):
    topo = ALL_TOPOS[name]()
    src, dst, rev, sign, und = topo.src, topo.dst, topo.reverse, topo.sign, topo.undirected
    m = topo.n_directed
    assert src.shape == dst.shape == rev.shape == sign.shape == und.shape == (m,)
    # CSR order: sorted by (src, dst), and offsets point at each node's first edge.
    keys = list(zip(src.tolist(), dst.tolist()))
    assert keys == sorted(keys) and len(set(keys)) == m
    np.testing.assert_array_equal(topo.offsets, np.concatenate([[0], np.cumsum(topo.degree)]))
    np.testing.assert_array_equal(np.bincount(src, minlength=topo.n_nodes), topo.degree)
    # Directed set = both orientations of every undirected edge.
    assert set(keys) == _edge_set(topo) | {(v, u) for u, v in _edge_set(topo)}
    # reverse is an involution that swaps the endpoints; sign is antisymmetric.
    np.testing.assert_array_equal(rev[rev], np.arange(m))
    assert (rev != np.arange(m)).all()
    np.testing.assert_array_equal(src[rev], dst)
    np.testing.assert_array_equal(dst[rev], src)
    np.testing.assert_array_equal(sign[rev], -sign)
    np.testing.assert_array_equal(sign, np.where(src < dst, 1.0, -1.0))
    # undirected index: both directions of (u, v) point at the row (u, v) of edges.
    np.testing.assert_array_equal(und[rev], und)
    np.testing.assert_array_equal(topo.edges[und], np.sort(np.stack([src, dst], 1), axis=1))
    # edges: u < v, lexicographically sorted, unique.
    assert (topo.edges[:, 0] < topo.edges[:, 1]).all()
    assert [tuple(e) for e in topo.edges.tolist()] == sorted(_edge_set(topo))
    for i in range(topo.n_nodes):
        np.testing.assert_array_equal(topo.neighbors(i), sorted(v for u, v in keys if u == i))
        for j in topo.neighbors(i):
            k = topo.directed_index(i, int(j))
            assert (src[k], dst[k]) == (i, j)
    with pytest.raises(tp.TopologyError, match="not an edge"):
        topo.directed_index(0, 0)


@pytest.mark.parametrize("name", list(ALL_TOPOS))
@pytest.mark.parametrize("layout", ["slots", "edges"])
def test_layout_edge_arrays(name, layout):
    topo = ALL_TOPOS[name]().with_layout(layout)
    shape = topo.edge_state_shape
    valid = topo.edge_array("valid")
    src = topo.edge_array("src")
    dst = topo.edge_array("dst")
    sign = topo.edge_array("sign")
    rev = topo.edge_array("reverse")
    und = topo.edge_array("undirected")
    pos = topo.edge_array("position")
    for a in (valid, src, dst, sign, rev, und, pos):
        assert a.shape == shape
    assert valid.sum() == topo.n_directed
    f_valid, f_src, f_dst = valid.reshape(-1), src.reshape(-1), dst.reshape(-1)
    f_sign, f_rev, f_und, f_pos = sign.reshape(-1), rev.reshape(-1), und.reshape(-1), pos.reshape(-1)
    vi = np.flatnonzero(f_valid)
    # The opposite direction of a valid slot is a valid slot with swapped endpoints.
    np.testing.assert_array_equal(f_rev[f_rev[vi]], vi)
    assert f_valid[f_rev[vi]].all()
    np.testing.assert_array_equal(f_src[f_rev[vi]], f_dst[vi])
    np.testing.assert_array_equal(f_dst[f_rev[vi]], f_src[vi])
    np.testing.assert_array_equal(f_sign[f_rev[vi]], -f_sign[vi])
    np.testing.assert_array_equal(f_sign[vi], np.where(f_src[vi] < f_dst[vi], 1.0, -1.0))
    np.testing.assert_array_equal(f_und[vi], f_und[f_rev[vi]])
    # position: rank of the destination among the source's sorted neighbours.
    for k in vi:
        nbrs = topo.neighbors(int(f_src[k]))
        assert nbrs[f_pos[k]] == f_dst[k]
    if layout == "slots":
        pad = np.flatnonzero(~f_valid)
        np.testing.assert_array_equal(f_rev[pad], pad)  # padding maps to itself
        assert (f_sign[pad] == 0).all() and (f_und[pad] == topo.n_edges).all()
        np.testing.assert_array_equal(src, np.arange(topo.n_nodes)[:, None].repeat(shape[1], 1))
        np.testing.assert_array_equal(f_dst[pad], f_src[pad])  # padding points at the own node
        # slot s of node i holds its s-th neighbour in increasing order
        for i in range(topo.n_nodes):
            np.testing.assert_array_equal(dst[i, : topo.degree[i]], topo.neighbors(i))
            assert valid[i, : topo.degree[i]].all() and not valid[i, topo.degree[i]:].any()


@pytest.mark.parametrize("name", list(ALL_TOPOS))
@pytest.mark.parametrize("layout", ["slots", "edges"])
def test_to_from_directed_round_trip(name, layout):
    topo = ALL_TOPOS[name]().with_layout(layout)
    rng = np.random.default_rng(0)
    vals = rng.normal(size=(topo.n_directed, 3)).astype(np.float32)
    lay = topo.from_directed(vals, fill=-7.0)
    assert lay.shape == topo.edge_state_shape + (3,)
    np.testing.assert_array_equal(topo.to_directed(lay), vals)
    valid = topo.edge_array("valid")
    assert (lay[~valid] == -7.0).all()
    # Layout slot k holds the value of the directed edge (src, dst) it represents.
    flat = lay.reshape(-1, 3)
    for k in np.flatnonzero(valid.reshape(-1)):
        d = topo.directed_index(int(topo.edge_array("src").reshape(-1)[k]), int(topo.edge_array("dst").reshape(-1)[k]))
        np.testing.assert_array_equal(flat[k], vals[d])


# -------------------------------------------------------------- scalability
def test_large_ring_is_linear_memory_and_fast():
    n = 100_000
    t0 = time.perf_counter()
    topo = tp.ring(n)
    # Build the slot bookkeeping the algorithms use, too.
    for name in ("reverse", "sign", "dst", "undirected", "valid"):
        topo.edge_array(name)
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0, f"ring({n}) took {elapsed:.2f}s"
    assert topo.n_edges == n and set(np.unique(topo.degree).tolist()) == {2}
    limit = 10 * (topo.n_nodes + topo.n_edges)
    arrays = [v for v in vars(topo).values() if isinstance(v, np.ndarray)]
    arrays += [v for v in vars(topo).get("_cache", {}).values() if isinstance(v, np.ndarray)]
    arrays += [v for v in vars(topo.layout).values() if isinstance(v, np.ndarray)]  # the layout's index arrays
    arrays += [v for v in topo.layout._cache.values() if isinstance(v, np.ndarray)]
    assert len(arrays) >= 15
    for a in arrays:
        assert a.size <= limit, f"array of shape {a.shape} is not O(N + E)"
    # spot-check a far-away node
    np.testing.assert_array_equal(topo.neighbors(54_321), [54_320, 54_322])
    np.testing.assert_array_equal(topo.neighbors(0), [1, n - 1])
