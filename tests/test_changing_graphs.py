"""Graphs that change (docs/algorithms.md#graphs-that-change): the one-peer exponential graph
cycles through the offsets 2^m of its union, a random matching pairs every node with one
other at every step from the run's key; every rule on such a graph equals the naive per-node
reference (an absent edge is an inactive one: its duals and received models stay as they
are), and ECL-PDMM / ECL-ADMM still reach the least-squares optimum when the union is connected.
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import naive_reference as nr  # noqa: E402
from test_convergence import ECL, lsq_problem, run_full_batch, weighted_lsq  # noqa: E402
from test_reference_equivalence import assert_views_close  # noqa: E402

from ecl_jax import masks as mk  # noqa: E402
from ecl_jax import registry  # noqa: E402
from ecl_jax import topology as tp  # noqa: E402
from ecl_jax.participation import Participation  # noqa: E402
from ecl_jax.runtime import FreeRunning  # noqa: E402


def _edges(topology, mask):
    return sorted(tuple(e) for e, on in zip(topology.edges.tolist(), np.asarray(mask)) if on)


def test_one_peer_exponential_cycles_through_the_offsets():
    topo = tp.exponential(8)
    graph = mk.OnePeerExponential()
    ring = [(i, i + 1) for i in range(7)] + [(0, 7)]
    assert _edges(topo, graph(None, 0, topo)) == sorted(ring)
    assert _edges(topo, graph(None, 1, topo)) == sorted(tuple(sorted((i, (i + 2) % 8))) for i in range(8))
    assert _edges(topo, graph(None, 2, topo)) == [(0, 4), (1, 5), (2, 6), (3, 7)]  # offset N/2: one peer each
    assert _edges(topo, graph(None, 3, topo)) == sorted(ring)  # period log2(N) = 3
    six = tp.exponential(6)  # not a power of two: offsets 1, 2, 4; every edge of the union appears
    table = graph.table(six)
    assert table.shape == (3, six.n_edges) and table.any(0).all()
    for row in table:  # every node meets at most two peers per step
        assert np.bincount(six.edges[row].ravel(), minlength=6).max() <= 2
    with pytest.raises(ValueError, match=r"one-peer exponential needs the exponential graph's edges; ring8 lacks"):
        graph(None, 0, tp.ring(8))


@pytest.mark.parametrize("n", [6, 7])
def test_random_matchings_pair_every_node_once_per_step(n):
    topo = tp.complete(n)
    graph = mk.RandomMatching()
    seen = set()
    for t in range(12):
        mask = graph(jax.random.fold_in(jax.random.PRNGKey(0), t), t, topo)
        deg = np.bincount(topo.edges[np.asarray(mask)].ravel(), minlength=n)
        assert sorted(deg) == [0] * (n % 2) + [1] * (n - n % 2)  # a perfect matching (one node out if N odd)
        seen.add(tuple(_edges(topo, mask)))
    assert len(seen) > 6  # drawn anew every step
    again = graph(jax.random.fold_in(jax.random.PRNGKey(0), 3), 3, topo)
    assert _edges(topo, again) in [list(s) for s in seen]  # the key decides
    with pytest.raises(ValueError, match=r"random matchings need the complete graph as the union"):
        graph(jax.random.PRNGKey(0), 0, tp.ring(n))


@pytest.mark.parametrize("runtime", [None, FreeRunning(speed=0.7, jitter=0.2)], ids=["lockstep", "free"])
def test_the_schedule_opens_only_edges_of_the_steps_graph(runtime):
    topo = tp.exponential(8)
    schedule = mk.ChangingGraph(mk.OnePeerExponential(), mk.BernoulliEdges(0.6))
    part = Participation(topo, schedule, mk.AllNodes(), runtime)
    _, who = part.along(jax.random.PRNGKey(2), 12)
    present = mk.OnePeerExponential().table(topo)[np.arange(12) % 3]
    edges = np.asarray(who.edge_active)
    assert not (edges & ~present).any() and edges.any() and (present & ~edges).any()


def _changing_masks(topo, graph, steps, seed):
    schedule = mk.ChangingGraph(graph, mk.BernoulliEdges(0.7))
    key = jax.random.PRNGKey(seed)
    edges = np.stack([np.asarray(schedule(jax.random.fold_in(key, t), t, topo)) for t in range(steps)])
    _, nodes = nr.random_masks(topo, steps, seed + 1)
    return edges, nodes


GRAPHS = {
    "one_peer_exponential8": (lambda: tp.exponential(8), mk.OnePeerExponential()),
    "random_matching6": (lambda: tp.complete(6), mk.RandomMatching()),
}


@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
@pytest.mark.parametrize("case", nr.CASE_NAMES)
def test_every_rule_on_a_changing_graph_matches_the_naive_reference(case, graph_name):
    build, graph = GRAPHS[graph_name]
    topo = build()
    alg, naive = nr.build(case, topo)
    seed = sum(map(ord, case + graph_name))
    problem = nr.Problem(topo.n_nodes, seed)
    edge_masks, node_masks = _changing_masks(topo, graph, 20, seed)
    assert edge_masks.any() and (edge_masks.sum(1) < topo.n_edges // 2).all()  # a sparse graph every step
    want = []
    nr.run_naive(naive, problem, edge_masks, node_masks, callback=lambda t, nv: want.append(nr.naive_view(nv)))

    def check(t, state):
        assert_views_close(nr.jax_view(alg, state, topo), want[t], f"{case} on {graph_name}, step {t + 1}")

    nr.run_jax(alg, topo, problem, edge_masks, node_masks, callback=check)


@pytest.mark.slow
@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
@pytest.mark.parametrize("alg", sorted(ECL))
def test_ecl_reaches_the_optimum_on_a_changing_graph(alg, graph_name):
    x, y = lsq_problem()
    w_star = weighted_lsq(x, y)
    build = {"one_peer_exponential8": tp.exponential, "random_matching6": tp.complete}[graph_name]
    graph = GRAPHS[graph_name][1]
    w, err = run_full_batch(ECL[alg](), build(8), mk.ChangingGraph(graph, mk.AlwaysEdges()), x, y, w_star,
                            steps=3000)
    assert np.abs(w - w_star[None]).max() <= 1e-5, err


def test_the_config_names_build_the_union_and_its_schedule():
    from ecl_jax.config import RunConfig

    for name, union, kind in (("one_peer_exponential", tp.exponential(16), mk.OnePeerExponential),
                              ("random_matching", tp.complete(16), mk.RandomMatching)):
        config = RunConfig(topology=name, n_nodes=16)
        topo = registry.build_topology(config)
        np.testing.assert_array_equal(topo.edges, union.edges)
        assert topo.name == f"{name}16" and isinstance(registry.graph_schedule(config), kind)
    assert registry.graph_schedule(RunConfig(topology="ring")) is None


def test_a_users_sequence_from_a_json_file(tmp_path):
    from ecl_jax.config import ConfigError, RunConfig, apply_overrides

    path = tmp_path / "seq.json"
    path.write_text("[[[0,1],[2,3]], [[1,2],[3,0]], [[2,0]]]")
    config = apply_overrides(RunConfig(n_nodes=4), ["topology=sequence", f"graphs={path}"])
    assert config.graphs == (((0, 1), (2, 3)), ((1, 2), (3, 0)), ((2, 0),))  # the graphs, not the path
    topo = registry.build_topology(config)
    assert [tuple(e) for e in topo.edges.tolist()] == [(0, 1), (0, 2), (0, 3), (1, 2), (2, 3)]  # the union
    schedule = registry.graph_schedule(config)
    assert [_edges(topo, schedule(None, t, topo)) for t in (0, 1, 2, 3)] == [
        [(0, 1), (2, 3)], [(0, 3), (1, 2)], [(0, 2)], [(0, 1), (2, 3)]]  # step t: graph t mod 3
    for overrides, message in (
        (["topology=sequence"], r"topology=sequence needs graphs, one list of \[u, v\] edges per step"),
        (["topology=sequence", "graphs=[[[0,1]],[[1,7]]]"], r"graphs\[1\] has edge \(1, 7\): an edge is \[u, v\]"),
        (["topology=sequence", "graphs=[[[0,0]]]"], r"graphs\[0\] has edge \(0, 0\)"),
        (["graphs=[[[0,1]]]"], r"graphs has no effect with topology='ring'"),
        (["topology=sequence", f"graphs={tmp_path / 'missing.json'}"], r"graphs file .* is not a readable JSON list"),
    ):
        with pytest.raises(ConfigError, match=message):
            apply_overrides(RunConfig(n_nodes=4), overrides)
    apart = apply_overrides(RunConfig(n_nodes=4), ["topology=sequence", "graphs=[[[0,1]],[[1,2]]]"])
    with pytest.raises(ConfigError, match=r"the union of the 2 graphs must connect all 4 nodes"):
        registry.build_topology(apart)


def test_an_absent_edges_duals_stay_as_they_are_until_it_returns():
    """The choice of docs/algorithms.md#graphs-that-change: an edge missing from the step's
    graph is an inactive edge, its duals z_{i|j}, z_{j|i} kept exactly (not reset)."""
    import jax.numpy as jnp

    from ecl_jax import engine as eng
    from ecl_jax.algorithms import ecl_pdmm

    topo = tp.exponential(8)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6, 3)).astype(np.float32)
    data = eng.NodeData(x, (x[..., 0] > 0).astype(np.float32), np.full(8, 6, np.int32))
    loss = lambda w, xb, yb, r: jnp.logaddexp(0.0, xb @ w) - yb * (xb @ w)
    engine = eng.Engine(ecl_pdmm(0.1), topo, loss, batch_size=3, eval_every=1,
                        edge_schedule=mk.ChangingGraph(mk.OnePeerExponential(), mk.AlwaysEdges()))
    carry = engine.init(rng.normal(size=(8, 3)).astype(np.float32), jax.random.PRNGKey(0))
    table = mk.OnePeerExponential().table(topo)
    for t in range(6):
        before = topo.to_directed(np.asarray(carry.state.duals.directed()))
        carry, _ = engine.run(None, data, t + 1, None, carry=carry)
        after = topo.to_directed(np.asarray(carry.state.duals.directed()))
        present = table[t % 3][topo.undirected]  # per directed edge
        np.testing.assert_array_equal(after[~present], before[~present])  # absent: kept bit for bit
        assert (np.abs(after[present] - before[present]).max(axis=1) > 0).all()  # present: exchanged


def _one_gossip_step(algorithm, topo, mask, w0):
    state = algorithm.init(w0, topo)
    grads = np.zeros_like(w0)
    return np.asarray(algorithm.step(state, grads, topo, mask, np.ones(topo.n_nodes, bool)).params)


def _mh_mix(topo, mask, w0, degrees):
    """w_i + sum_{j active} W_ij (w_j - w_i), W_ij = 1 / (1 + max(d_i, d_j)), per node in NumPy."""
    out = w0.astype(np.float64).copy()
    for (a, b), on in zip(topo.edges.tolist(), np.asarray(mask)):
        if on:
            wt = 1.0 / (1.0 + max(degrees[a], degrees[b]))
            out[a] += wt * (w0[b] - w0[a])
            out[b] += wt * (w0[a] - w0[b])
    return out


def test_gossip_on_a_changing_graph_mixes_with_the_steps_degrees():
    """mixing='step': the Metropolis-Hastings weights of the step's graph (W_t = MH(G_t)): on the
    one-peer exponential graph 1/3 per peer (two peers), 1/2 at offset N/2 (one peer: exact
    pairwise averages, Ying et al.'s one-peer weight); the default 'union' keeps the union's
    degrees (7 here: 1/8 per peer). A run on a changing topology uses 'step'."""
    import optax

    from ecl_jax.algorithms import gossip, gradient_tracking
    from ecl_jax.config import ConfigError, RunConfig

    topo = tp.exponential(8)
    w0 = np.random.default_rng(1).normal(size=(8, 3)).astype(np.float32)
    table = mk.OnePeerExponential().table(topo)
    frozen = optax.sgd(0.0)  # no local step: the result is the mixing alone
    for m in range(3):
        mask = table[m]
        step_deg = np.bincount(topo.edges[mask].ravel(), minlength=8)
        got = _one_gossip_step(gossip(optimizer=frozen, mixing="step"), topo, mask, w0)
        np.testing.assert_allclose(got, _mh_mix(topo, mask, w0, step_deg), rtol=1e-6, atol=1e-6)
        union = _one_gossip_step(gossip(optimizer=frozen), topo, mask, w0)
        np.testing.assert_allclose(union, _mh_mix(topo, mask, w0, topo.degree), rtol=1e-6, atol=1e-6)
    pairs = _one_gossip_step(gossip(optimizer=frozen, mixing="step"), topo, table[2], w0)
    np.testing.assert_allclose(pairs[0], (w0[0] + w0[4]) / 2, rtol=1e-6)  # offset 4: the average of the pair
    on_changing = registry.build_algorithm("gossip", RunConfig(topology="one_peer_exponential", n_nodes=8))
    state = on_changing.init(w0, topo)
    got = np.asarray(on_changing.step(state, np.zeros_like(w0), topo, table[2], np.ones(8, bool)).params)
    np.testing.assert_allclose(got[0], w0[0] + 0.05 * 0 + (w0[4] - w0[0]) / 2, rtol=1e-5)  # zero gradient
    gradient_tracking(0.1, mixing="step")
    with pytest.raises(ValueError, match=r"mixing must be 'union' .* or 'step'"):
        gossip(0.1, mixing="local")
    with pytest.raises(ConfigError, match=r"gossip: mixing must be 'union'"):
        registry.build_algorithm("gossip", RunConfig(options={"gossip": {"mixing": "x"}}, algorithms=("gossip",)))
