"""The shift layout: per-edge values as [N, D, ...] where slot s of *every* node i holds the
neighbour i + o_s on the node grid, for a fixed offset o_s.

Available for graphs invariant under translations of the node index on a grid: (N,) for
circulant graphs (rings, multiplex rings, exponential and complete graphs), (rows, cols)
for a torus. Neighbour values and the exchange are then static ``roll``s of the node axis,
one per slot: contiguous slices, no index arrays, no padding; a roll of a sharded node axis
becomes a halo exchange (docs/design.md#per-edge-layouts).

Pairs: [N, S], one column per pair of opposite offsets (the slots s whose reverse slot is
>= s); entry (i, s) is the edge (i, i + o_s) with owner i. An offset that is its own reverse
(N/2 on an even ring) keeps both ends' copies of its edges: the update maps them alike.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax.errors import TopologyError
from ecl_jax.layouts.slots import SlotLayout

__all__ = ["ShiftLayout", "find_shift_offsets"]


def find_shift_offsets(topology: Any) -> np.ndarray | None:
    """[D, len(grid)] offsets o_s (each coordinate in [0, grid size)) with neighbour(i, s) =
    i + o_s on ``topology.node_grid`` for every node i, or None when the graph is not
    invariant under grid translations. Slot order: increasing flat offset code."""
    g = np.asarray(topology.node_grid)
    if int(np.prod(g)) != topology.n_nodes or not topology.is_regular:
        return None
    cs = np.stack(np.unravel_index(topology.src, tuple(g)), 1)
    cd = np.stack(np.unravel_index(topology.dst, tuple(g)), 1)
    codes = np.ravel_multi_index(tuple(((cd - cs) % g).T), tuple(g))  # offset of every directed edge
    d = topology.max_degree
    per_node = np.sort(codes.reshape(topology.n_nodes, d), axis=1)  # CSR order groups edges by source
    if not (per_node == per_node[:1]).all() or len(np.unique(per_node[0])) != d:
        return None
    return np.stack(np.unravel_index(per_node[0], tuple(g)), 1).astype(np.int64)


class ShiftLayout(SlotLayout):
    """Per-edge values [N, D, ...] by grid offset (see module docstring)."""

    name = "shift"
    node_major = True

    def __init__(self, topology: Any):
        super().__init__(topology)
        self.grid = tuple(topology.node_grid)
        offsets = topology.shift_offsets
        if offsets is None:
            raise TopologyError(
                f"{topology.name} is not invariant under translations of the node grid {self.grid}: "
                "the shift layout needs every node i to have the neighbours i + o_s for the same offsets o_s; "
                "use layout='auto' (or 'slots' / 'edges')"
            )
        self.offsets_grid = offsets
        g = np.asarray(self.grid)
        key = [tuple(o) for o in offsets.tolist()]
        self.reverse_slot = np.array([key.index(tuple(((-o) % g).tolist())) for o in offsets], np.int32)
        coords = np.stack(np.unravel_index(np.arange(self.n_nodes), self.grid), 1)  # [N, k]
        nbr = (coords[:, None, :] + offsets[None, :, :]) % g  # [N, D, k]
        self.neighbors = np.ravel_multi_index(tuple(np.moveaxis(nbr, -1, 0)), self.grid).astype(np.int32)
        #: slots that own pairs: one of each +-offset pair (the smaller slot index)
        self.pair_slots = np.flatnonzero(self.reverse_slot >= np.arange(len(self.reverse_slot))).astype(np.int32)

    def _build_slot_index(self) -> np.ndarray:
        # slot s of node i holds the directed edge (i -> i + o_s); keys src*N + dst are sorted
        # in CSR order, so a search finds each edge's index.
        n = self.n_nodes
        keys = self.src.astype(np.int64) * n + self.dst
        want = np.arange(n, dtype=np.int64)[:, None] * n + self.neighbors
        return np.searchsorted(keys, want).astype(np.int32)

    @property
    def pair_shape(self) -> tuple[int, ...]:
        return (self.n_nodes, len(self.pair_slots))

    def roll(self, x: jax.Array, offset) -> jax.Array:
        """y[i] = x[i + offset] on the node grid (a static shift; offset in grid coordinates)."""
        xg = x.reshape(self.grid + x.shape[1:])
        keep = [(-int(o), a) for a, o in enumerate(offset) if int(o) % self.grid[a] != 0]
        if keep:
            xg = jnp.roll(xg, tuple(s for s, _ in keep), tuple(a for _, a in keep))
        return xg.reshape(x.shape)

    def neighbor_values(self, x: jax.Array) -> jax.Array:
        return jnp.stack([self.roll(x, o) for o in self.offsets_grid], axis=1)

    def reverse(self, e: jax.Array) -> jax.Array:
        rs = self.reverse_slot
        return jnp.stack([self.roll(e[:, rs[s]], o) for s, o in enumerate(self.offsets_grid)], axis=1)

    def pair_endpoints(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        owner = jnp.broadcast_to(x[:, None], (x.shape[0], len(self.pair_slots)) + x.shape[1:])
        other = jnp.stack([self.roll(x, self.offsets_grid[s]) for s in self.pair_slots], axis=1)
        return owner, other

    def pair_sign(self) -> np.ndarray:
        return self._cached("pair_sign", lambda: self.edge_array("sign")[:, self.pair_slots])

    def pair_mask(self, edge_active: jax.Array) -> jax.Array:
        return self.edge_mask(edge_active)[:, self.pair_slots]

    def pairs_to_edges(self, x: jax.Array) -> jax.Array:
        # one column at a time, read straight from x [N, S, 2, ...] (slicing u and v out first
        # makes XLA:CPU copy them)
        slots = list(self.pair_slots)
        cols = []
        for s in range(self.max_degree):
            if s in slots:  # i owns (i, i + o_s): x_{i|i+o_s} = (u + v)/2 at i
                q = slots.index(s)
                cols.append(0.5 * (x[:, q, 0] + x[:, q, 1]))
            else:  # i + o_s owns the edge through slot rs[s]: x_{i|i+o_s} = (u - v)/2 there
                q = slots.index(int(self.reverse_slot[s]))
                cols.append(self.roll(0.5 * (x[:, q, 0] - x[:, q, 1]), self.offsets_grid[s]))
        return jnp.stack(cols, axis=1)

    def edges_to_pairs(self, x: jax.Array) -> jax.Array:
        back = self.reverse(x)  # x_{j|i} at (i, slot of j)
        return jnp.stack([(x + back)[:, self.pair_slots], (x - back)[:, self.pair_slots]], axis=2)

    def check_shardable(self, n_devices: int) -> None:
        super().check_shardable(n_devices)
        if self.grid[0] % n_devices:
            raise ValueError(
                f"shift layout on grid {self.grid}: the first grid axis ({self.grid[0]}) "
                f"must be divisible by {n_devices} devices"
            )

    def shards_leading(self, size: int) -> bool:
        return size == self.n_nodes

