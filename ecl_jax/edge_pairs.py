"""Per-edge state stored per *undirected* edge, in the sum/difference basis.

Each undirected edge {a, b} carries two directed values, x_{a|b} (held by a) and
x_{b|a} (held by b). Here an edge's pair is stored at one position, as

    u = x_{a|b} + x_{b|a},        v = x_{a|b} - x_{b|a}              (a: the edge's *owner*)

so x_{a|b} = (u + v)/2 and x_{b|a} = (u - v)/2. A pair-stored array has the shape
[*pair_shape, 2, ...]: index 0 of the axis after the pair axes is u, index 1 is v (one
array, so one fused loop updates both). Why: the ECL dual exchange

    z_{a|b} <- (1 - theta) z_{a|b} + theta (z_{b|a} - 2 A_{b|a} w_b)

swaps the two directions of an edge, so in the directed layouts it reads every dual at
its reverse position and cannot update in place. In this basis it is elementwise
(docs/algorithms.md#exchange; A = A_{a|b} = -A_{b|a}):

    u <- u + 2 theta A (w_b - w_a),      v <- (1 - 2 theta) v + 2 theta A (w_a + w_b)

and only the node models are read at shifted positions.

Storage (:func:`pair_shape`):

* ``"shift"`` layout: [N, S], one column per pair of opposite offsets (the slots s with
  reverse slot >= s, see :func:`pair_slots`); entry (i, s) is the edge (i, i + o_s) with
  owner i, so the state stays node-major (shardable along N). An offset that is its own
  reverse (N/2 on an even ring or exponential graph) keeps both ends' copies of its
  edges (consistent: the update maps them alike), N/2 more pairs per such offset.
* ``"slots"`` and ``"edges"`` layouts: [E], in ``topology.edges`` order, owner a =
  ``edges[e, 0]`` (the smaller index).

:func:`to_layout` and :func:`from_layout` convert to and from the directed values
x_{i|j} in the topology's edge layout (``topology.edge_state_shape``), the form the
naive references and :meth:`Topology.to_directed` use.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax import graph_ops as gops
from ecl_jax.topology import Topology, _cached

__all__ = [
    "pair_shape",
    "pair_slots",
    "pair_sign",
    "pair_mask",
    "endpoints",
    "exchange",
    "to_layout",
    "from_layout",
    "tree_to_layout",
    "tree_from_layout",
    "tree_zeros",
    "sum_diff",
]


def pair_slots(topology: Topology) -> np.ndarray:
    """Shift layout: the slots that own pairs (one of each +-offset pair, the smaller index)."""
    rs = topology.shift_reverse_slot
    return np.flatnonzero(rs >= np.arange(len(rs))).astype(np.int32)


def pair_shape(topology: Topology) -> tuple[int, ...]:
    """Leading shape of pair-stored arrays: [N, S] (shift layout) or [E] (slots, edges)."""
    if topology.layout == "shift":
        return (topology.n_nodes, len(pair_slots(topology)))
    return (topology.n_edges,)


def _positions(topology: Topology) -> dict:
    """Static index arrays of the slots/edges layouts (cached on the topology).

    ``owner``/``other``: flat layout position of a->b and b->a for each edge [E];
    ``pair``/``orient``: for each flat layout position, its edge and +1 (held by the
    owner), -1 (held by the other end), 0 (padding slot).
    """

    def build():
        und = topology.edge_array("undirected").reshape(-1)
        src = topology.edge_array("src").reshape(-1)
        valid = topology.edge_array("valid").reshape(-1)
        e = topology.n_edges
        owner = np.zeros(e, np.int32)
        other = np.zeros(e, np.int32)
        pos = np.flatnonzero(valid)
        is_owner = src[pos] == topology.edges[und[pos], 0]
        owner[und[pos[is_owner]]] = pos[is_owner]
        other[und[pos[~is_owner]]] = pos[~is_owner]
        pair = np.where(valid, und, 0).astype(np.int32)
        orient = np.where(valid, np.where(src == topology.edges[pair, 0], 1.0, -1.0), 0.0).astype(np.float32)
        shape = topology.edge_state_shape
        return dict(owner=owner, other=other, pair=pair.reshape(shape), orient=orient.reshape(shape))

    return _cached(topology, "_pair_positions", build)


def pair_sign(topology: Topology, dtype=jnp.float32) -> jax.Array:
    """A_{a|b} of every pair's owner a (static constant, pair-shaped)."""

    def build():
        if topology.layout == "shift":
            return topology.edge_array("sign")[:, pair_slots(topology)]
        return topology.edge_array("sign").reshape(-1)[_positions(topology)["owner"]]

    return jnp.asarray(_cached(topology, "_pair_sign", build), dtype)


def pair_mask(topology: Topology, edge_active: jax.Array, node_active: jax.Array | None = None) -> jax.Array:
    """Per-undirected-edge mask [E] -> pair-shaped mask; with ``node_active`` [N] an edge
    is active only when both of its ends are."""
    if topology.layout == "shift":
        return gops.edge_mask(topology, edge_active, node_active)[:, pair_slots(topology)]
    return gops.undirected_edge_mask(topology, edge_active, node_active)


def endpoints(topology: Topology, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x [N, ...] -> (x_a, x_b): the owner's and the other end's value at every pair."""
    if topology.layout == "shift":
        slots = pair_slots(topology)
        owner = jnp.broadcast_to(x[:, None], (x.shape[0], len(slots)) + x.shape[1:])
        offsets = topology.shift_offsets
        other = jnp.stack([gops._grid_roll(topology, x, offsets[s]) for s in slots], axis=1)
        return owner, other
    e = jnp.asarray(topology.edges)
    return x[e[:, 0]], x[e[:, 1]]


def exchange(topology: Topology, x: jax.Array, w: jax.Array, theta: float = 1.0) -> jax.Array:
    """The ECL dual exchange of every pair, elementwise in x [*pair_shape, 2, ...] (module
    docstring; docs/algorithms.md#dual-storage-per-undirected-edge), with node values w [N, ...]:
    u <- u + 2 theta A (w_b - w_a), v <- (1 - 2 theta) v + 2 theta A (w_a + w_b).
    All pairs are updated; masking is the caller's."""
    k = len(pair_shape(topology))
    w_a, w_b = (jnp.expand_dims(e, k) for e in endpoints(topology, w))
    a2 = 2.0 * theta * gops.expand(pair_sign(topology), x).astype(x.dtype)
    is_sum = (jnp.arange(2) == 0).reshape((2,) + (1,) * (x.ndim - k - 1))  # u at 0, v at 1
    return jnp.where(is_sum, x + a2 * (w_b - w_a), (1.0 - 2.0 * theta) * x + a2 * (w_a + w_b))


def sum_diff(topology: Topology, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A pair-stored array [*pair_shape, 2, ...] -> (u, v), each [*pair_shape, ...]."""
    k = len(pair_shape(topology))
    lead = (slice(None),) * k
    return x[lead + (0,)], x[lead + (1,)]


def to_layout(topology: Topology, x: jax.Array) -> jax.Array:
    """Pair-stored [*pair_shape, 2, ...] -> x_{i|j} in the topology's edge layout (0 on
    padding slots). Read-only: static rolls (shift) or gathers (slots, edges).
    """
    if topology.layout == "shift":
        slots = list(pair_slots(topology))
        rs = topology.shift_reverse_slot
        offsets = topology.shift_offsets
        cols = []
        for s in range(topology.max_degree):
            if s in slots:  # i owns (i, i + o_s): x_{i|i+o_s} = (u + v)/2 at i
                q = slots.index(s)
                cols.append(0.5 * (x[:, q, 0] + x[:, q, 1]))
            else:  # (i + o_s) owns the edge through slot rs[s]: x_{i|i+o_s} = (u - v)/2 there
                q = slots.index(int(rs[s]))
                cols.append(gops._grid_roll(topology, 0.5 * (x[:, q, 0] - x[:, q, 1]), offsets[s]))
        return jnp.stack(cols, axis=1)
    u, v = sum_diff(topology, x)
    pos = _positions(topology)
    pair = jnp.asarray(pos["pair"])
    orient = jnp.asarray(pos["orient"], u.dtype)
    return gops.expand(0.5 * jnp.abs(orient), u[pair]) * u[pair] + gops.expand(0.5 * orient, v[pair]) * v[pair]


def from_layout(topology: Topology, x: jax.Array) -> jax.Array:
    """x_{i|j} in the topology's edge layout -> pair-stored [*pair_shape, 2, ...]
    (padding slots are ignored)."""
    k = len(pair_shape(topology))
    if topology.layout == "shift":
        slots = pair_slots(topology)
        back = gops.reverse(topology, x)  # x_{j|i} at (i, slot of j)
        return jnp.stack([(x + back)[:, slots], (x - back)[:, slots]], axis=k)
    pos = _positions(topology)
    flat = x.reshape((-1,) + x.shape[len(topology.edge_state_shape):])
    a, b = flat[jnp.asarray(pos["owner"])], flat[jnp.asarray(pos["other"])]
    return jnp.stack([a + b, a - b], axis=k)


def tree_to_layout(topology: Topology, tree: Any) -> Any:
    """:func:`to_layout` over a pytree of pair-stored leaves."""
    return jax.tree_util.tree_map(lambda x: to_layout(topology, x), tree)


def tree_from_layout(topology: Topology, tree: Any) -> Any:
    """:func:`from_layout` over a pytree of layout-shaped leaves."""
    return jax.tree_util.tree_map(lambda x: from_layout(topology, x), tree)


def tree_zeros(topology: Topology, like: Any, *, flat: bool = False) -> Any:
    """Zero pair-stored leaves for a node-stacked pytree ``like`` [N, ...]: each
    [*pair_shape, 2, *trailing shape], or with ``flat`` [*pair_shape, 2, prod(trailing)]."""

    def zeros(w):
        tail = (int(np.prod(w.shape[1:])),) if flat else tuple(w.shape[1:])
        return jnp.zeros(pair_shape(topology) + (2,) + tail, w.dtype)

    return jax.tree_util.tree_map(zeros, like)
