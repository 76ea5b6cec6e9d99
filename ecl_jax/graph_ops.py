"""Node <-> edge data movement on a :class:`~ecl_jax.topology.Topology`.

These are the only primitives the algorithms use to communicate; each works on one
array leaf whose leading axes are the node axis [N, ...] or the layout's edge axes
(``topology.edge_state_shape``), and a ``tree_`` variant maps it over a pytree.
No Python loop over nodes or edges: gathers with static index arrays, dense sums over
the slot axis (slot layout) or sorted segment sums (edge layout). In the shift layout
(rings, tori, circulant graphs) neighbour values and the exchange are static rolls of
the node axis, one per slot: contiguous slices, no index arrays at all.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ecl_jax.topology import Topology

__all__ = [
    "undirected_edge_mask",
    "edge_mask",
    "broadcast_to_edges",
    "neighbor_values",
    "reverse",
    "sum_edges",
    "edge_weights",
    "expand",
    "tree_broadcast_to_edges",
    "tree_neighbor_values",
    "tree_reverse",
    "tree_sum_edges",
]


#: Up to this many slots, slot sums are unrolled into one elementwise expression (an
#: exponential graph has 2 log2(N) - 1 slots: 31 at N = 65,536). Above it the sum is a
#: reduce over the slot axis, which XLA:CPU runs on a materialised [N, D, ...] product:
#: with 17 slots (exponential graph, N = 512) gossip on the MLP peaked at 15.6 GB and
#: ran at 18 node-steps/s, and ECL-PDMM ran out of memory (24 GiB).
_UNROLL_SLOTS = 32


def expand(v: jax.Array, leaf: jax.Array) -> jax.Array:
    """Append trailing singleton axes to ``v`` so it broadcasts against ``leaf``."""
    return v.reshape(v.shape + (1,) * (leaf.ndim - v.ndim))


def edge_weights(topology: Topology, name: str, dtype=jnp.float32) -> jax.Array:
    """A static per-edge array (``"sign"``, ``"valid"``, ...) as a layout-shaped constant."""
    return jnp.asarray(topology.edge_array(name), dtype=dtype)


def undirected_edge_mask(
    topology: Topology, edge_active: jax.Array, node_active: jax.Array | None = None
) -> jax.Array:
    """Per-undirected-edge mask [E]; with ``node_active`` [N], an edge only exchanges when
    both end nodes are active (an inactive node neither computes nor communicates)."""
    edge_active = jnp.asarray(edge_active, bool)
    if node_active is not None:
        node_active = jnp.asarray(node_active, bool)
        e = jnp.asarray(topology.edges)
        edge_active = edge_active & node_active[e[:, 0]] & node_active[e[:, 1]]
    return edge_active


def edge_mask(topology: Topology, edge_active: jax.Array, node_active: jax.Array | None = None) -> jax.Array:
    """Per-undirected-edge mask [E] -> layout-shaped mask over directed edges.

    With ``node_active`` [N], an edge only exchanges when both end nodes are active
    (:func:`undirected_edge_mask`). Padding slots are False.
    """
    edge_active = undirected_edge_mask(topology, edge_active, node_active)
    padded = jnp.concatenate([edge_active, jnp.zeros((1,), bool)])
    return padded[jnp.asarray(topology.edge_array("undirected"))]


def _grid_roll(topology: Topology, x: jax.Array, offset) -> jax.Array:
    """y[i] = x[i + offset] on the node grid (static shift; offset in grid coordinates)."""
    grid = topology.node_grid
    xg = x.reshape(grid + x.shape[1:])
    shifts = tuple(-int(o) for o in offset)
    axes = tuple(range(len(grid)))
    keep = [(s, a) for s, a in zip(shifts, axes) if s % grid[a] != 0]
    if keep:
        xg = jnp.roll(xg, tuple(s for s, _ in keep), tuple(a for _, a in keep))
    return xg.reshape(x.shape)


def broadcast_to_edges(topology: Topology, x: jax.Array) -> jax.Array:
    """x [N, ...] -> value of the *source* node on every directed edge."""
    if topology.layout in ("slots", "shift"):
        return jnp.broadcast_to(x[:, None], (x.shape[0], topology.max_degree) + x.shape[1:])
    return jnp.repeat(x, jnp.asarray(topology.degree), axis=0, total_repeat_length=topology.n_directed)


def neighbor_values(topology: Topology, x: jax.Array) -> jax.Array:
    """x [N, ...] -> value of the *destination* node on every directed edge (x_j at i|j).

    Padding slots receive the node's own value.
    """
    if topology.layout == "shift":
        return jnp.stack([_grid_roll(topology, x, o) for o in topology.shift_offsets], axis=1)
    return x[jnp.asarray(topology.edge_array("dst"))]


def reverse(topology: Topology, e: jax.Array) -> jax.Array:
    """Per-edge values -> the value held on the opposite direction (what j holds for i)."""
    if topology.layout == "shift":
        rs = topology.shift_reverse_slot
        return jnp.stack(
            [_grid_roll(topology, e[:, rs[s]], o) for s, o in enumerate(topology.shift_offsets)], axis=1
        )
    rev = jnp.asarray(topology.edge_array("reverse"))
    if topology.layout == "slots":
        flat = e.reshape((-1,) + e.shape[2:])
        return flat[rev.reshape(-1)].reshape(e.shape)
    return e[rev]


def sum_edges(topology: Topology, e: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """sum_{j in N(i)} w_{i|j} e_{i|j} -> [N, ...]; padding slots contribute nothing.

    ``weights`` is layout-shaped (e.g. the signs A_{i|j}); when omitted the valid-slot
    mask is used.
    """
    if weights is None:
        weights = edge_weights(topology, "valid", e.dtype)
    if topology.layout in ("slots", "shift"):
        d = topology.max_degree
        if d <= _UNROLL_SLOTS:
            # An explicit sum over the few slots is one elementwise fusion; a reduce over
            # a short middle axis is much slower on XLA:CPU.
            wts = weights.astype(e.dtype)
            total = e[:, 0] * expand(wts[:, 0], e[:, 0])
            for s in range(1, d):
                total = total + e[:, s] * expand(wts[:, s], e[:, s])
            return total
        return (e * expand(weights.astype(e.dtype), e)).sum(axis=1)
    prod = e * expand(weights.astype(e.dtype), e)
    return jax.ops.segment_sum(
        prod, jnp.asarray(topology.src), num_segments=topology.n_nodes, indices_are_sorted=True
    )


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
