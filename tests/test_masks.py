"""Edge and node activation schedules (docs/algorithms.md#edge-schedules;
docs/official_codes.md#kdd20-communication, #icml21-communication).

Random schedules are checked statistically (empirical rate within a few standard
errors of the nominal one); deterministic schedules against plain Python loops that
follow the official codes: the ICML21 code's per-directed-edge slots and the KDD20
code's ``Contract.swap`` (a per-node counter starting at an offset; every ``interval``
updates it resets and the node swaps with its next neighbour, round-robin).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecl_jax import masks as mk
from ecl_jax import topology as tp

KEY = jax.random.PRNGKey(0)


def _sample(schedule, topo, n_keys, step=0):
    keys = jax.random.split(jax.random.PRNGKey(123), n_keys)
    return np.asarray(jax.jit(jax.vmap(lambda k: schedule(k, step, topo)))(keys))


def _rate_ok(masks, p, n_sd=5.0):
    n = masks.size
    rate = masks.mean()
    return abs(rate - p) <= n_sd * np.sqrt(p * (1 - p) / n) + 1e-12, rate


# ------------------------------------------------------------------- random
@pytest.mark.parametrize(
    "schedule, expected",
    [
        (mk.BernoulliEdges(p=0.3), 0.3),
        (mk.BernoulliEdges(K=8), 1 / 8),
        (mk.BernoulliEdges(p=1 / 6), 1 / 6),
        (mk.BernoulliEdges(p=0.5, failure_prob=0.4), 0.5 * 0.6),
        (mk.AlwaysEdges(failure_prob=0.25), 0.75),
    ],
)
def test_random_edge_rate(schedule, expected):
    topo = tp.multiplex_ring(8, 2)
    m = _sample(schedule, topo, 3000)
    assert m.shape == (3000, topo.n_edges) and m.dtype == bool
    ok, rate = _rate_ok(m, expected)
    assert ok, f"empirical rate {rate:.4f}, expected {expected:.4f}"
    # every edge individually near the nominal rate (no edge is stuck on or off)
    per_edge = m.mean(0)
    assert np.all(np.abs(per_edge - expected) < 6 * np.sqrt(expected * (1 - expected) / m.shape[0]))
    # independent across edges: correlation of two edges ~ 0
    c = np.corrcoef(m[:, 0], m[:, 1])[0, 1]
    assert abs(c) < 0.1


def test_always_edges_without_failures_is_all_true():
    topo = tp.ring(5)
    m = _sample(mk.AlwaysEdges(), topo, 10)
    assert m.all() and m.shape == (10, 5)


@pytest.mark.slow
def test_fixed_slots_with_link_failures_halves_the_rate():
    topo = tp.ring(8)
    sched = mk.FixedSlotEdges(K=4, seed=2)
    fail = mk.FixedSlotEdges(K=4, seed=2, failure_prob=0.5)
    keys = jax.random.split(jax.random.PRNGKey(1), 2000)
    sample = jax.jit(lambda t: jax.vmap(lambda k: fail(k, t, topo))(keys))
    for t in range(4):
        clean = np.asarray(sched(KEY, t, topo))
        noisy = np.asarray(sample(t))
        assert not noisy[:, ~clean].any()  # a failure never turns an edge on
        if clean.any():
            ok, rate = _rate_ok(noisy[:, clean], 0.5)
            assert ok, rate


def test_bernoulli_nodes_rate_and_all_nodes():
    keys = jax.random.split(KEY, 3000)
    m = np.asarray(jax.vmap(lambda k: mk.BernoulliNodes(p=0.7)(k, 0, 6))(keys))
    assert m.shape == (3000, 6) and m.dtype == bool
    ok, rate = _rate_ok(m, 0.7)
    assert ok, rate
    assert np.asarray(mk.AllNodes()(KEY, 3, 6)).all()


# ------------------------------------------------------------ deterministic
def _slot_reference(topo, slots, K, steps):
    """ICML21 code: directed edge k initiates a (two-way) swap when t mod K == slots[k]."""
    out = np.zeros((steps, topo.n_edges), bool)
    for t in range(steps):
        for e, (u, v) in enumerate(topo.edges.tolist()):
            k_uv = topo.directed_index(u, v)
            k_vu = topo.directed_index(v, u)
            out[t, e] = slots[k_uv] == t % K or slots[k_vu] == t % K
    return out


@pytest.mark.parametrize("topo_name", ["ring8", "icml21_random"])
def test_fixed_slot_edges_match_python_loop(topo_name):
    topo = {"ring8": tp.ring, "icml21_random": lambda n: tp.icml21_random()}[topo_name](8)
    K = 8
    rng = np.random.default_rng(5)
    explicit = tuple(int(s) for s in rng.integers(0, K, topo.n_directed))
    for sched in (mk.FixedSlotEdges(K=K, slots=explicit), mk.FixedSlotEdges(K=K, seed=3)):
        slots = sched.directed_slots(topo)
        assert slots.shape == (topo.n_directed,) and slots.min() >= 0 and slots.max() < K
        ref = _slot_reference(topo, slots, K, 3 * K)
        got = np.stack([np.asarray(sched(KEY, t, topo)) for t in range(3 * K)])
        np.testing.assert_array_equal(got, ref)
        # every edge exchanges at least once and at most twice per round of K
        per_round = got[:K].sum(0)
        assert per_round.min() >= 1 and per_round.max() <= 2
    np.testing.assert_array_equal(mk.FixedSlotEdges(K=K, slots=explicit).directed_slots(topo), explicit)
    # the default slots depend on the seed
    assert not np.array_equal(mk.FixedSlotEdges(K=K, seed=3).directed_slots(topo),
                              mk.FixedSlotEdges(K=K, seed=4).directed_slots(topo))


def _round_robin_reference(topo, offsets, interval, steps):
    """KDD20 ``Contract.swap``: counter starts at offset, +1 per update; on reaching
    ``interval`` it resets to 0 and the node swaps with its next neighbour (neighbours
    in increasing order, cycled)."""
    counter = [int(o) for o in offsets]
    next_edge = [0] * topo.n_nodes
    nbrs = [sorted(int(j) for j in topo.neighbors(i)) for i in range(topo.n_nodes)]
    edge_index = {tuple(e): k for k, e in enumerate(topo.edges.tolist())}
    out = np.zeros((steps, topo.n_edges), bool)
    for t in range(steps):
        for i in range(topo.n_nodes):
            counter[i] += 1
            if counter[i] >= interval:
                counter[i] = 0
                j = nbrs[i][next_edge[i]]
                out[t, edge_index[(min(i, j), max(i, j))]] = True
                next_edge[i] = (next_edge[i] + 1) % len(nbrs[i])
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    "topo_fn, offsets, interval",
    [
        (lambda: tp.complete(3), None, 6),  # KDD20 samples: 3 nodes, offsets 1, 3, 5
        (lambda: tp.complete(3), (1, 3, 5), 6),
        (lambda: tp.ring(8), None, 6),
        (lambda: tp.ring(8), (0, 5, 2, 2, 4, 1, 3, 0), 6),
        (lambda: tp.icml21_random(), (0, 1, 2, 3, 0, 1, 2, 3), 4),
    ],
)
def test_round_robin_matches_kdd20_contract(topo_fn, offsets, interval):
    topo = topo_fn()
    sched = mk.RoundRobinEdges(interval=interval, offsets=offsets)
    off = sched.node_offsets(topo)
    if offsets is None:
        np.testing.assert_array_equal(off, (1 + 2 * np.arange(topo.n_nodes)) % interval)
    steps = 5 * interval * topo.max_degree
    ref = _round_robin_reference(topo, off, interval, steps)
    got = np.stack([np.asarray(sched(KEY, t, topo)) for t in range(steps)])
    np.testing.assert_array_equal(got, ref)
    assert ref.any(1).sum() > 0 and not ref.all()


def test_round_robin_kdd20_three_nodes_explicit():
    # Hand-derived: node offsets 1, 3, 5 reach 6 after 5, 3, 1 updates (steps 4, 2, 0),
    # then every 6 steps. Node 0 swaps with 1, 2, 1, ...; node 1 with 0, 2, ...;
    # node 2 with 0, 1, ... Edges of complete(3): 0:(0,1) 1:(0,2) 2:(1,2).
    topo = tp.complete(3)
    sched = mk.RoundRobinEdges()
    got = {t: np.flatnonzero(np.asarray(sched(KEY, t, topo))).tolist() for t in range(14)}
    expected = {t: [] for t in range(14)}
    expected[0] = [1]  # node 2 -> node 0
    expected[2] = [0]  # node 1 -> node 0
    expected[4] = [0]  # node 0 -> node 1
    expected[6] = [2]  # node 2 -> node 1
    expected[8] = [2]  # node 1 -> node 2
    expected[10] = [1]  # node 0 -> node 2
    expected[12] = [1]  # node 2 -> node 0 again
    assert got == expected


def test_array_and_function_schedules():
    topo = tp.ring(5)
    table = np.random.default_rng(0).random((3, 5)) < 0.5
    sched = mk.ArrayEdges(table)
    for t in range(7):
        np.testing.assert_array_equal(np.asarray(sched(KEY, t, topo)), table[t % 3])
    fn = mk.FunctionEdges(lambda key, step, topo: jnp.arange(topo.n_edges) % 2 == step % 2)
    np.testing.assert_array_equal(np.asarray(fn(KEY, 1, topo)), np.arange(5) % 2 == 1)
    ntable = np.array([[1, 0, 1, 1, 0], [0, 1, 1, 0, 1]])
    nodes = mk.ArrayNodes(ntable)
    for t in range(5):
        got = np.asarray(nodes(KEY, t, 5))
        assert got.dtype == bool
        np.testing.assert_array_equal(got, ntable[t % 2].astype(bool))
    fnode = mk.FunctionNodes(lambda key, step, n: jnp.arange(n) < step)
    np.testing.assert_array_equal(np.asarray(fnode(KEY, 2, 5)), [True, True, False, False, False])


@pytest.mark.parametrize("topo_fn", [lambda: tp.icml21_random(), lambda: tp.star(6), lambda: tp.torus(3, 3)])
def test_dense_mask_symmetric_and_matches_edges(topo_fn):
    topo = topo_fn()
    m = np.asarray(mk.BernoulliEdges(p=0.5)(jax.random.PRNGKey(7), 0, topo))
    d = np.asarray(mk.dense_mask(topo, m))
    assert d.shape == (topo.n_nodes,) * 2 and d.dtype == bool
    assert (d == d.T).all() and not d.diagonal().any()
    expected = np.zeros_like(d)
    for e, (u, v) in enumerate(topo.edges):
        expected[u, v] = expected[v, u] = m[e]
    np.testing.assert_array_equal(d, expected)
    assert d.sum() == 2 * m.sum()
    assert not (d & ~topo.adjacency()).any()


EDGE_SCHEDULES = {
    "always": mk.AlwaysEdges(),
    "always_fail": mk.AlwaysEdges(failure_prob=0.3),
    "bernoulli": mk.BernoulliEdges(K=4),
    "bernoulli_fail": mk.BernoulliEdges(p=0.5, failure_prob=0.2),
    "slots": mk.FixedSlotEdges(K=5, seed=1),
    "slots_fail": mk.FixedSlotEdges(K=5, seed=1, failure_prob=0.2),
    "round_robin": mk.RoundRobinEdges(interval=3),
    "array": mk.ArrayEdges(np.eye(8, dtype=bool)[:5]),
    "function": mk.FunctionEdges(lambda k, s, t: jnp.arange(t.n_edges) == s % t.n_edges),
}


@pytest.mark.parametrize("name", list(EDGE_SCHEDULES))
def test_edge_schedules_under_jit_with_traced_step(name):
    topo = tp.ring(8)
    sched = EDGE_SCHEDULES[name]
    jitted = jax.jit(lambda key, step: sched(key, step, topo))
    seen = []
    for t in range(12):
        key = jax.random.fold_in(KEY, t)
        got = np.asarray(jitted(key, jnp.asarray(t, jnp.int32)))
        assert got.shape == (topo.n_edges,) and got.dtype == bool
        np.testing.assert_array_equal(got, np.asarray(sched(key, t, topo)))
        seen.append(got)
    # also inside a scan, the way the engine calls it
    def body(c, t):
        return c, sched(jax.random.fold_in(KEY, t), t, topo)

    _, scanned = jax.lax.scan(body, 0, jnp.arange(12))
    np.testing.assert_array_equal(np.asarray(scanned), np.stack(seen))
    if name != "always":
        assert len({s.tobytes() for s in seen}) > 1  # the mask does change over steps


@pytest.mark.parametrize(
    "sched", [mk.AllNodes(), mk.BernoulliNodes(p=0.5), mk.ArrayNodes(np.eye(4, dtype=bool)),
              mk.FunctionNodes(lambda k, s, n: jnp.arange(n) <= s)]
)
def test_node_schedules_under_jit_with_traced_step(sched):
    jitted = jax.jit(lambda key, step: sched(key, step, 4))
    for t in range(6):
        key = jax.random.fold_in(KEY, t)
        got = np.asarray(jitted(key, jnp.asarray(t)))
        assert got.shape == (4,) and got.dtype == bool
        np.testing.assert_array_equal(got, np.asarray(sched(key, t, 4)))


def test_edge_schedule_from_string():
    assert mk.edge_schedule_from_string("always") == mk.AlwaysEdges()
    assert mk.edge_schedule_from_string("bernoulli:K=8") == mk.BernoulliEdges(K=8)
    assert mk.edge_schedule_from_string("bernoulli:p=0.25,fail=0.1") == mk.BernoulliEdges(p=0.25, failure_prob=0.1)
    assert mk.edge_schedule_from_string("slots:K=8") == mk.FixedSlotEdges(K=8)
    assert mk.edge_schedule_from_string("round_robin:interval=6") == mk.RoundRobinEdges(interval=6)
    assert (mk.edge_schedule_from_string("round_robin:interval=6,offsets=5/1/3")
            == mk.RoundRobinEdges(interval=6, offsets=(5, 1, 3)))
    with pytest.raises(ValueError, match=r"offsets in .* must be integers separated by '/'.*got '5;1'"):
        mk.edge_schedule_from_string("round_robin:interval=6,offsets=5;1")
    with pytest.raises(ValueError, match=r"option K in 'slots:K=eight' must be a number, got 'eight'"):
        mk.edge_schedule_from_string("slots:K=eight")
