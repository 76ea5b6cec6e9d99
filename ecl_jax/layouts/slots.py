"""The slot layout: per-edge values as [N, D, ...], slot s of node i its s-th neighbour.

D is the maximum degree; slot s of node i holds directed edge i|j for the s-th neighbour j
of i in increasing order, and slots past a node's degree are padding (masked out). A
node's sum over its edges is a dense sum over the slot axis (unrolled for D <= 32); the
exchange is one gather with a precomputed reverse-slot permutation. Node-major, so it
shards like node arrays (docs/design.md#per-edge-layouts).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax.layouts.base import EdgeLayout, expand

__all__ = ["SlotLayout", "UNROLL_SLOTS", "slot_sum"]

#: Up to this many slots, slot sums are unrolled into one elementwise expression (an
#: exponential graph has 2 log2(N) - 1 slots: 31 at N = 65,536). Above it the sum is a
#: reduce over the slot axis, which XLA:CPU runs on a materialised [N, D, ...] product
#: (measurements: BENCHMARKS.md, "exponential graph").
UNROLL_SLOTS = 32


def slot_sum(e: jax.Array, weights: jax.Array) -> jax.Array:
    """sum_s weights[:, s] e[:, s] over the slot axis 1 of e [N, D, ...]."""
    wts = weights.astype(e.dtype)
    d = e.shape[1]
    if d <= UNROLL_SLOTS:
        # An explicit sum over the few slots is one elementwise fusion; a reduce over a
        # short middle axis is much slower on XLA:CPU.
        total = e[:, 0] * expand(wts[:, 0], e[:, 0])
        for s in range(1, d):
            total = total + e[:, s] * expand(wts[:, s], e[:, s])
        return total
    return (e * expand(wts, e)).sum(axis=1)


class SlotLayout(EdgeLayout):
    """Per-edge values [N, D, ...] (see module docstring)."""

    name = "slots"
    node_major = True

    @property
    def edge_shape(self) -> tuple[int, ...]:
        return (self.n_nodes, self.max_degree)

    @property
    def slot_index(self) -> np.ndarray:
        """[N, D] int32: directed-edge index (CSR order) held in slot (i, s); 2E on padding."""
        return self._cached("slot_index", self._build_slot_index)

    def _build_slot_index(self) -> np.ndarray:
        idx = np.full((self.n_nodes, self.max_degree), self.n_directed, dtype=np.int32)
        pos = np.arange(self.n_directed) - self.offsets[self.src]
        idx[self.src, pos] = np.arange(self.n_directed, dtype=np.int32)
        return idx

    @property
    def slot_valid(self) -> np.ndarray:
        """[N, D] bool: which slots hold a real edge."""
        return self.slot_index < self.n_directed

    def from_directed(self, values: Any, fill: Any = 0.0) -> np.ndarray:
        values = np.asarray(values)
        padded = np.concatenate([values, np.full((1,) + values.shape[1:], fill, dtype=values.dtype)])
        return padded[self.slot_index]

    def to_directed(self, x: Any) -> np.ndarray:
        x = np.asarray(x)
        valid = self.slot_valid
        return x.reshape((-1,) + x.shape[2:])[np.flatnonzero(valid.reshape(-1))][
            np.argsort(self.slot_index[valid], kind="stable")
        ]

    def _build_edge_array(self, name: str) -> np.ndarray:
        own = np.broadcast_to(np.arange(self.n_nodes, dtype=np.int32)[:, None], self.edge_shape)
        if name == "src":
            return own.copy()
        if name == "dst":
            return np.where(self.slot_valid, self.from_directed(self.dst, 0), own)
        if name == "reverse":
            # position in the flattened [N*D] slot array of the opposite direction
            valid = self.slot_valid.reshape(-1)
            flat_of_directed = np.empty(self.n_directed, np.int64)
            flat_of_directed[self.slot_index.reshape(-1)[valid]] = np.flatnonzero(valid)
            rev = np.arange(self.n_nodes * self.max_degree)
            rev[valid] = flat_of_directed[self.directed_reverse[self.slot_index.reshape(-1)[valid]]]
            return rev.reshape(self.edge_shape).astype(np.int32)
        return super()._build_edge_array(name)

    def source_values(self, x: jax.Array) -> jax.Array:
        return jnp.broadcast_to(x[:, None], (x.shape[0], self.max_degree) + x.shape[1:])

    def reverse(self, e: jax.Array) -> jax.Array:
        rev = jnp.asarray(self.edge_array("reverse"))
        flat = e.reshape((-1,) + e.shape[2:])
        return flat[rev.reshape(-1)].reshape(e.shape)

    def sum_edges(self, e: jax.Array, weights: jax.Array | None = None) -> jax.Array:
        if weights is None:
            weights = jnp.asarray(self.edge_array("valid"), e.dtype)
        return slot_sum(e, weights)
