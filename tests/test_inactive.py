"""Asynchrony semantics (docs/algorithms.md#mask-semantics; masks.py):

* an inactive node keeps its model, optimiser state, trackers and the state of every
  edge touching it, and its gradient is ignored;
* an inactive edge changes nothing: its duals and received models stay, and neither end
  sees the other's current state through it.

Checked on the irregular ICML21 graph in both per-edge layouts, from a state reached by
a few random asynchronous steps (so the duals are non-zero).
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import naive_reference as nr  # noqa: E402

from ecl_jax import topology as tp  # noqa: E402

NODE_PARTS = ("params", "mixed_tracker", "prev_grads")
EDGE_PARTS = ("duals", "smoothed_duals", "received")
SILENT = ("local", "centralized")  # no communication at all


def _setup(case, layout):
    topo = tp.icml21_random(layout=layout)
    alg, _ = nr.build(case, topo)
    step = nr.jitted_step(alg, topo)
    problem = nr.Problem(topo.n_nodes, seed=21)
    edge_masks, node_masks = nr.random_masks(topo, 6, seed=22)
    state = nr.run_jax(alg, topo, problem, edge_masks, node_masks, step_fn=step)
    params = {k: np.asarray(v) for k, v in alg.node_params(state).items()}
    grads = {k: jnp.asarray(v, jnp.float32) for k, v in problem.grads(params).items()}
    return topo, alg, step, state, grads


def _leaves_equal(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def _node_rows(tree, node, n):
    """Row ``node`` of every node-stacked leaf of ``tree`` (e.g. the optimiser state)."""
    return [np.asarray(x)[node] for x in jax.tree_util.tree_leaves(tree) if np.ndim(x) and np.shape(x)[0] == n]


def _view_at(view, topo, node, *, incident: bool):
    """The parts of a canonical view that belong to ``node``: its rows of node-stacked parts
    and its directed edges (outgoing; with ``incident`` also incoming, except for the
    smoothed duals, which the other end advances on its own)."""
    out_edges = topo.src == node
    both = out_edges | (topo.dst == node) if incident else out_edges
    out = {}
    for part, leaves in view.items():
        # zbar_{j|node} is j's own running mean, advanced at every local step of j.
        sel = out_edges if part == "smoothed_duals" else both
        for leaf, x in leaves.items():
            out[(part, leaf)] = x[node] if part in NODE_PARTS else x[sel]
    return out


def _assert_same(a: dict, b: dict, msg: str):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{msg}: {key}")


@pytest.mark.parametrize("layout", ["slots", "edges"])
@pytest.mark.parametrize("case", nr.CASE_NAMES)
def test_inactive_node_keeps_state_and_ignores_its_gradient(case, layout):
    topo, alg, step, state, grads = _setup(case, layout)
    n, k = topo.n_nodes, 0  # node 0 has the largest degree (4)
    all_edges = jnp.ones((topo.n_edges,), bool)
    node_mask = np.ones(n, bool)
    node_mask[k] = False
    new = step(state, grads, all_edges, jnp.asarray(node_mask))
    before, after = nr.jax_view(alg, state, topo), nr.jax_view(alg, new, topo)

    if case != "centralized":  # the centralised model is shared; covered by the gradient check
        _assert_same(_view_at(after, topo, k, incident=True), _view_at(before, topo, k, incident=True),
                     f"{case}: inactive node {k} changed")
        opt_before = _node_rows(getattr(state, "opt_state", None), k, n)
        opt_after = _node_rows(getattr(new, "opt_state", None), k, n)
        for x, y in zip(opt_before, opt_after):
            np.testing.assert_array_equal(x, y, err_msg=f"{case}: optimiser state of inactive node changed")
        # The active nodes did move.
        others = np.arange(n) != k
        assert np.abs(after["params"]["kernel"][others] - before["params"]["kernel"][others]).max() > 1e-4

    # Its gradient is ignored: a huge change of g_k changes nothing anywhere...
    shifted = {key: g.at[k].add(1e3) for key, g in grads.items()}
    assert _leaves_equal(step(state, shifted, all_edges, jnp.asarray(node_mask)), new)
    # ... whereas it matters when the node is active.
    all_nodes = jnp.ones((n,), bool)
    assert not _leaves_equal(step(state, shifted, all_edges, all_nodes), step(state, grads, all_edges, all_nodes))


@pytest.mark.parametrize("layout", ["slots", "edges"])
@pytest.mark.parametrize("case", nr.CASE_NAMES)
def test_inactive_edge_changes_nothing(case, layout):
    topo, alg, step, state, grads = _setup(case, layout)
    n = topo.n_nodes
    u, v = 0, 1
    e = next(i for i, (a, b) in enumerate(topo.edges) if (a, b) == (u, v))
    edge_mask = np.ones(topo.n_edges, bool)
    edge_mask[e] = False
    edge_mask = jnp.asarray(edge_mask)
    all_edges = jnp.ones((topo.n_edges,), bool)
    all_nodes = jnp.ones((n,), bool)

    if case in SILENT:  # edge masks are irrelevant
        assert _leaves_equal(step(state, grads, edge_mask, all_nodes), step(state, grads, all_edges, all_nodes))
        assert _leaves_equal(
            step(state, grads, jnp.zeros_like(all_edges), all_nodes), step(state, grads, all_edges, all_nodes)
        )
        return

    new = step(state, grads, edge_mask, all_nodes)
    before, after = nr.jax_view(alg, state, topo), nr.jax_view(alg, new, topo)
    pair = [topo.directed_index(u, v), topo.directed_index(v, u)]
    for part in ("duals", "received"):  # smoothed duals advance every local step regardless
        for leaf in before.get(part, {}):
            np.testing.assert_array_equal(after[part][leaf][pair], before[part][leaf][pair],
                                          err_msg=f"{case}: {part} on inactive edge ({u}, {v}) changed")

    # Neither end sees the other's current state through the inactive edge: perturb v's
    # model; everything u holds after the step is unchanged ...
    perturbed = state._replace(params={key: w.at[v].add(0.5) for key, w in state.params.items()})

    def u_view(s, mask):
        return _view_at(nr.jax_view(alg, step(s, grads, mask, all_nodes), topo), topo, u, incident=False)

    _assert_same(u_view(perturbed, edge_mask), u_view(state, edge_mask), f"{case}: node {u} saw node {v}")
    # ... but it is not when the edge is active (the check is sensitive).
    a, b = u_view(perturbed, all_edges), u_view(state, all_edges)
    assert any(not np.array_equal(a[key], b[key]) for key in a)
