"""The primitives a rule is written with: ``for_each_node`` (one node's update, run for every
node) and the notebook's user rule built on them (timed against ECL-PDMM by the bench)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecl_jax import topology as tp
from ecl_jax.algorithms import ecl_pdmm, for_each_node
from ecl_jax.duals import EdgeDuals
from experiments.bench.workloads import notebook_rule


def _tree(n, seed):
    rng = np.random.default_rng(seed)
    return {"k": jnp.asarray(rng.normal(size=(n, 3, 2)), jnp.float32), "b": jnp.asarray(rng.normal(size=(n, 2)), jnp.float32)}


def test_for_each_node_is_the_per_node_update_and_keeps_inactive_nodes():
    n = 6
    w, g = _tree(n, 0), _tree(n, 1)
    c = jnp.arange(n, dtype=jnp.float32)
    active = jnp.asarray([True, False, True, True, False, True])

    def one_node(w, g, c):  # written for ONE node: w, g unstacked, c a scalar
        assert w["k"].shape == (3, 2) and c.shape == ()
        return jax.tree_util.tree_map(lambda a, b: a - c * b, w, g)

    got = jax.jit(lambda w, g, c, m: for_each_node(one_node, w, g, c, node_active=m, keep=w))(w, g, c, active)
    for k in w:
        for i in range(n):
            if active[i]:
                np.testing.assert_allclose(got[k][i], w[k][i] - c[i] * g[k][i], rtol=1e-6, atol=1e-6, err_msg=f"{k}[{i}]")
            else:  # an inactive node keeps its leaves exactly
                np.testing.assert_array_equal(got[k][i], w[k][i], err_msg=f"{k}[{i}]")
    # without node_active every node updates; tuple results and a lazily evaluated argument
    lazy = lambda: jax.tree_util.tree_map(lambda a: 2 * a, g)
    new, old = for_each_node(lambda w, h: (jax.tree_util.tree_map(jnp.add, w, h), w), w, lazy)
    for k in w:
        np.testing.assert_allclose(new[k], w[k] + 2 * g[k], rtol=1e-6)
        np.testing.assert_array_equal(old[k], w[k])


@pytest.mark.slow
def test_notebook_rule_runs_on_the_primitives_and_reduces_to_ecl_pdmm():
    topo = tp.ring(6)
    hb = notebook_rule()(0.1, 1.0, beta=0.0)  # the notebook's own source
    ref = ecl_pdmm(0.1, 1.0)
    w = _tree(6, 2)
    s_hb, s_ref = hb.init(w, topo), ref.init(w, topo)
    assert isinstance(s_hb.duals, EdgeDuals) and s_hb.duals.layout is topo.layout
    rng = np.random.default_rng(3)
    for t in range(5):
        g = _tree(6, 10 + t)
        e = jnp.asarray(rng.random(topo.n_edges) < 0.6)
        m = jnp.asarray(rng.random(topo.n_nodes) < 0.8)
        s_hb, s_ref = hb.step(s_hb, g, topo, e, m), ref.step(s_ref, g, topo, e, m)
    for a, b in zip(jax.tree_util.tree_leaves((s_hb.params, s_hb.duals)), jax.tree_util.tree_leaves((s_ref.params, s_ref.duals))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ masks in the primitives
def _rules():
    from ecl_jax.algorithms import centralized, dsgd, ecl_admm, gossip, gradient_tracking, local_sgd, pairwise_gossip

    return {"ecl-pdmm": ecl_pdmm(0.1), "ecl-admm (KDD20 code)": ecl_admm(0.1, rho=0.1, theta=1.0, dual_smoothing=True),
            "gossip": gossip(0.1), "pairwise-gossip": pairwise_gossip(0.1), "dsgd": dsgd(0.1),
            "gradient-tracking": gradient_tracking(0.1), "local": local_sgd(0.1), "centralized": centralized(0.1)}


@pytest.mark.parametrize("name", sorted(_rules()))
def test_every_rule_has_its_node_mask_checked_by_the_primitives(name):
    """No rule checks masks itself (none calls check_masks); the primitives it is written with
    do: a node mask of the wrong length or dtype is refused inside every rule's step."""
    import inspect

    from ecl_jax.algorithms import baselines, edge_consensus

    for module in (baselines, edge_consensus):
        assert "check_masks(" not in inspect.getsource(module)
    topo = tp.ring(5)
    alg = _rules()[name]
    w = _tree(5, 0)
    state = alg.init(w, topo)
    edges, nodes = jnp.ones(topo.n_edges, bool), jnp.ones(5, bool)
    alg.step(state, _tree(5, 1), topo, edges, nodes)  # right masks: fine
    for bad in (jnp.ones(4, bool), jnp.ones(5, jnp.float32)):
        with pytest.raises(AssertionError):
            alg.step(state, _tree(5, 1), topo, edges, bad)


@pytest.mark.parametrize("name", ["ecl-pdmm", "ecl-admm (KDD20 code)", "gossip", "pairwise-gossip", "dsgd",
                                  "gradient-tracking"])
def test_every_exchanging_rule_has_its_edge_mask_checked_by_the_primitives(name):
    topo = tp.ring(5)
    alg = _rules()[name]
    state = alg.init(_tree(5, 0), topo)
    with pytest.raises(AssertionError):
        alg.step(state, _tree(5, 1), topo, jnp.ones(topo.n_edges + 1, bool), jnp.ones(5, bool))


def test_a_users_rule_without_checks_of_its_own_gets_them():
    """A rule written only with for_each_node and exchanging_edges refuses bad masks."""
    from ecl_jax import graph_ops as gops

    topo = tp.ring(4)

    def step(w, g, edge_active, node_active):
        new = for_each_node(lambda w, g: jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, w, g), w, g,
                            node_active=node_active, keep=w)
        return new, gops.exchanging_edges(topo, edge_active, node_active)

    w, g = _tree(4, 0), _tree(4, 1)
    new, on = step(w, g, jnp.ones(topo.n_edges, bool), jnp.asarray([True, False, True, True]))
    np.testing.assert_array_equal(np.asarray(on), [1 not in e for e in topo.edges.tolist()])  # node 1's edges closed
    np.testing.assert_array_equal(new["k"][1], w["k"][1])  # node 1 kept its model
    with pytest.raises(AssertionError):
        step(w, g, jnp.ones(topo.n_edges, bool), jnp.ones(3, bool))
    with pytest.raises(AssertionError):
        step(w, g, jnp.ones(topo.n_edges - 1, bool), jnp.ones(4, bool))
