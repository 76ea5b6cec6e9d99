""""Computes" and "answers" are different (docs/algorithms.md#mask-semantics).

A node mask can be an :class:`ecl_jax.masks.Activity`: ``computes`` (makes a local step)
and ``answers`` (takes part in its edges' exchanges). A paused node computes nothing but
answers: its model and optimiser state stay, while a swap refreshes both ends' received
copies / duals with its current values. A failed node does neither. Checked for every
algorithm against the per-node float64 reference (tests/naive_reference.py), which reads
the pair (computes, answers) the same way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import naive_reference as nr
from ecl_jax import Engine, masks
from ecl_jax.node_data import NodeData
from ecl_jax import topology as tp
from ecl_jax.algorithms import dsgd, ecl_pdmm

STEPS = 16


def _activity_masks(topology, seed):
    """Edge masks [T, E] and (computes, answers) pairs: about 1/3 of the nodes paused (answer
    without computing) and 1/6 failed (neither) at every step."""
    rng = np.random.default_rng(seed)
    u = rng.random((STEPS, topology.n_nodes))
    computes, answers = u >= 0.5, u >= 1 / 6
    edges = rng.random((STEPS, topology.n_edges)) < 0.7
    assert (answers & ~computes).any() and (~answers).any() and computes.any()
    return edges, [(c, a) for c, a in zip(computes, answers)]


@pytest.mark.slow
@pytest.mark.parametrize("topo_name,layout", [("ring5", "shift"), ("icml21_random", "edges"), ("icml21_random", "slots")])
@pytest.mark.parametrize("case", nr.CASE_NAMES)
def test_paused_and_failed_nodes_match_the_naive_reference(case, topo_name, layout):
    topo = (tp.ring(5) if topo_name == "ring5" else tp.icml21_random()).with_layout(layout)
    alg, naive = nr.build(case, topo)
    seed = sum(map(ord, case + topo_name + layout))
    problem = nr.Problem(topo.n_nodes, seed)
    edge_masks, node_masks = _activity_masks(topo, seed + 1)
    want = []
    nr.run_naive(naive, problem, edge_masks, node_masks, callback=lambda t, nv: want.append(nr.naive_view(nv)))

    def check(t, state):
        got = nr.jax_view(alg, state, topo)
        for part in want[t]:
            for leaf in want[t][part]:
                np.testing.assert_allclose(got[part][leaf], want[t][part][leaf], rtol=5e-5, atol=5e-6,
                                           err_msg=f"{case} on {topo_name}/{layout}, step {t + 1}: {part}[{leaf}]")

    nr.run_jax(alg, topo, problem, edge_masks, node_masks, callback=check)


def _one_step(alg, topo, state, node_active):
    grads = jax.tree_util.tree_map(lambda w: jnp.ones_like(w), alg.node_params(state))
    return alg.step(state, grads, topo, jnp.ones(topo.n_edges, bool), node_active)


@pytest.mark.slow
def test_a_paused_node_answers_a_failed_node_does_not():
    topo = tp.ring(6)
    w0 = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)), jnp.float32)}
    paused, failed = 2, 4
    comp = jnp.ones(6, bool).at[paused].set(False).at[failed].set(False)
    ans = jnp.ones(6, bool).at[failed].set(False)
    act = masks.Activity(comp, ans)
    for alg in (ecl_pdmm(0.1), dsgd(0.1)):
        s0 = alg.init(w0, topo)
        s0 = _one_step(alg, topo, s0, jnp.ones(6, bool))  # non-zero duals, moved models
        s1 = _one_step(alg, topo, s0, act)
        for node in (paused, failed):  # no local step: the model (and optimiser state) stay
            np.testing.assert_array_equal(s1.params["w"][node], s0.params["w"][node], err_msg=alg.name)
        if alg.name == "ecl-pdmm":
            z0, z1 = (topo.to_directed(s.duals.directed()["w"]) for s in (s0, s1))
        else:
            z0, z1 = (topo.to_directed(s.received["w"]) for s in (s0, s1))
        for j in topo.neighbors(paused):  # the paused node's edges exchanged: it received news
            k_in, k_out = topo.directed_index(paused, int(j)), topo.directed_index(int(j), paused)
            assert np.abs(z1[k_in] - z0[k_in]).max() > 1e-4, (alg.name, paused, int(j))
            if alg.name == "ecl-pdmm":  # ... and re-sent the message of its last step, which j holds already
                np.testing.assert_array_equal(z1[k_out], z0[k_out], err_msg="dual a paused node re-sent")
        for j in topo.neighbors(failed):  # the failed node's edges did not
            for k in (topo.directed_index(failed, int(j)), topo.directed_index(int(j), failed)):
                np.testing.assert_array_equal(z1[k], z0[k], err_msg=f"{alg.name}: edge of failed node {failed}")
        if alg.name == "dsgd":  # what the paused node's neighbours received is its current model
            for j in topo.neighbors(paused):
                np.testing.assert_array_equal(z1[topo.directed_index(int(j), paused)], s1.params["w"][paused])


@pytest.mark.slow
def test_bernoulli_nodes_idle_modes_and_the_engine_runs_an_activity():
    key = jax.random.PRNGKey(0)
    stops, answers = masks.BernoulliNodes(0.5), masks.BernoulliNodes(0.5, idle="answers")
    m = stops(key, 0, 10)
    a = answers(key, 0, 10)
    assert m.dtype == bool and isinstance(a, masks.Activity)
    np.testing.assert_array_equal(a.computes, m)  # the same draws compute
    assert bool(a.answers.all())
    with pytest.raises(ValueError, match="idle must be 'stops'.*or 'answers'.*got 'sleeps'"):
        masks.BernoulliNodes(0.5, idle="sleeps")
    topo = tp.ring(4)  # least squares per node, paused nodes answering, through the engine
    x = np.random.default_rng(0).normal(size=(4, 6, 3)).astype(np.float32)
    y = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
    eng = Engine(ecl_pdmm(0.1), topo, lambda w, x, y, rng: 0.5 * (x @ w - y) ** 2, batch_size=None,
                 node_schedule=masks.BernoulliNodes(0.5, idle="answers"), eval_every=5, train_metrics=False)
    data = NodeData(x, y, np.full(4, 6, np.int32))
    carry, hist = eng.run(np.zeros((4, 3), np.float32), data, 10, jax.random.PRNGKey(1))
    assert int(carry.step) == 10 and np.isfinite(hist["consensus_distance"]).all()
    assert hist["consensus_distance"][-1] > 0  # the nodes moved, apart
