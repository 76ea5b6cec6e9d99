"""Node <-> edge data movement on a :class:`~ecl_jax.topology.Topology`.

The one route from a rule to the layout: every algorithm, built-in or a user's, moves
values between nodes and edges through these functions (and ECL's duals through
:class:`~ecl_jax.duals.EdgeDuals`), never through ``topology.layout`` itself. Each works on one array leaf whose
leading axes are the node axis [N, ...] or the layout's edge axes
(``topology.edge_state_shape``), and a ``tree_`` variant maps it over a pytree. How the
values move (static rolls, gathers, slot sums, segment sums) is the topology's layout's
business (:mod:`ecl_jax.layouts`); ECL's pair-stored duals have their own verbs in
:mod:`ecl_jax.duals`.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp

from ecl_jax.layouts import expand
from ecl_jax.masks import answers, computes
from ecl_jax.participation import check_masks
from ecl_jax.topology import Topology

__all__ = [
    "exchanging_edges",
    "edge_mask",
    "broadcast_to_edges",
    "neighbor_values",
    "reverse",
    "sum_edges",
    "refresh_received",
    "keep_inactive_edges",
    "edge_weights",
    "expand",
    "tree_broadcast_to_edges",
    "tree_neighbor_values",
    "tree_reverse",
    "tree_sum_edges",
]


def edge_weights(topology: Topology, name: str, dtype=jnp.float32) -> jax.Array:
    """A static per-edge array (``"sign"``, ``"valid"``, ...) as a layout-shaped constant."""
    return jnp.asarray(topology.edge_array(name), dtype=dtype)


def exchanging_edges(topology: Topology, edge_active: jax.Array, node_active=None) -> jax.Array:
    """Per-undirected-edge mask [E] of the edges that exchange: drawn by the edge schedule and,
    with ``node_active`` (a bool [N] mask or a :class:`~ecl_jax.masks.Activity`), with both
    ends answering (a node with a False mask neither computes nor communicates; a paused node
    of an ``Activity`` still answers). The masks' shapes and dtypes are checked here, so a rule
    that exchanges needs no checks of its own."""
    if node_active is None:
        edge_active = jnp.asarray(edge_active, bool)
        chex.assert_shape(edge_active, (topology.n_edges,))
        return edge_active
    check_masks(topology, edge_active, node_active)
    node_active = jnp.asarray(answers(node_active), bool)
    e = jnp.asarray(topology.edges)
    return jnp.asarray(edge_active, bool) & node_active[e[:, 0]] & node_active[e[:, 1]]


def edge_mask(topology: Topology, edge_active: jax.Array, node_active=None) -> jax.Array:
    """:func:`exchanging_edges` as a layout-shaped mask over directed edges (padding False)."""
    return topology.layout.edge_mask(exchanging_edges(topology, edge_active, node_active))


def broadcast_to_edges(topology: Topology, x: jax.Array) -> jax.Array:
    """x [N, ...] -> the *source* node's value x_i on every directed edge i|j."""
    return topology.layout.source_values(x)


def neighbor_values(topology: Topology, x: jax.Array) -> jax.Array:
    """x [N, ...] -> the *destination* node's value x_j on every directed edge i|j
    (padding slots receive the node's own value)."""
    return topology.layout.neighbor_values(x)


def reverse(topology: Topology, e: jax.Array) -> jax.Array:
    """Per-edge values -> the value held on the opposite direction (what j holds for i)."""
    return topology.layout.reverse(e)


def sum_edges(topology: Topology, e: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """sum_{j in N(i)} w_{i|j} e_{i|j} -> [N, ...]; padding slots contribute nothing.

    ``weights`` is layout-shaped (e.g. the signs A_{i|j}); when omitted the valid-edge
    mask is used.
    """
    return topology.layout.sum_edges(e, weights)


def keep_inactive_edges(topology: Topology, new, old, node_active):
    """Per directed edge i|j: ``new`` where node i computes this step, ``old`` where it does not
    (trees in the edge layout; ``node_active`` bool [N] or an :class:`~ecl_jax.masks.Activity`):
    the edge variables a node holds change only with its own step."""
    on = broadcast_to_edges(topology, computes(node_active))
    return jax.tree_util.tree_map(lambda n, o: jnp.where(expand(on, n), n, o), new, old)


def refresh_received(topology: Topology, received, params, exchanging: jax.Array):
    """w_j^recv <- w_j on every directed edge i|j whose undirected edge is in ``exchanging`` [E]
    (e.g. :func:`exchanging_edges`), the old copy elsewhere: the received neighbour models
    (a tree in the edge layout) after a step's swaps, from the new models ``params`` [N, ...]."""
    on = topology.layout.edge_mask(exchanging)
    return jax.tree_util.tree_map(lambda r, w: jnp.where(expand(on, r), neighbor_values(topology, w), r),
                                  received, params)


def _tree(fn):
    @functools.wraps(fn)
    def mapped(topology, tree, *args, **kwargs):
        return jax.tree_util.tree_map(lambda leaf: fn(topology, leaf, *args, **kwargs), tree)

    mapped.__doc__ = f"Pytree version of :func:`{fn.__name__}`."
    mapped.__name__ = "tree_" + fn.__name__
    return mapped


tree_broadcast_to_edges = _tree(broadcast_to_edges)
tree_neighbor_values = _tree(neighbor_values)
tree_reverse = _tree(reverse)
tree_sum_edges = _tree(sum_edges)
