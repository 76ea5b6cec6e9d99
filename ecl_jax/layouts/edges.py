"""The edge-list layout: per-edge values as [2E, ...] in CSR order (sorted by source, then
destination).

A node's sum over its edges is a sorted ``segment_sum``; neighbour values and the exchange
are gathers with static index arrays. No padding, so it suits skewed degree distributions
(a star), where the slot layout would pad to O(N^2) (docs/design.md#per-edge-layouts).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax.layouts.base import EdgeLayout, expand

__all__ = ["EdgeListLayout"]


class EdgeListLayout(EdgeLayout):
    """Per-edge values [2E, ...] (see module docstring)."""

    name = "edges"
    node_major = False

    @property
    def edge_shape(self) -> tuple[int, ...]:
        return (self.n_directed,)

    def from_directed(self, values: Any, fill: Any = 0.0) -> np.ndarray:
        return np.asarray(values)

    def to_directed(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def source_values(self, x: jax.Array) -> jax.Array:
        return jnp.repeat(x, jnp.asarray(self.degree), axis=0, total_repeat_length=self.n_directed)

    def reverse(self, e: jax.Array) -> jax.Array:
        return e[jnp.asarray(self.directed_reverse)]

    def sum_edges(self, e: jax.Array, weights: jax.Array | None = None) -> jax.Array:
        prod = e if weights is None else e * expand(weights.astype(e.dtype), e)
        return jax.ops.segment_sum(prod, jnp.asarray(self.src), num_segments=self.n_nodes, indices_are_sorted=True)

    def check_shardable(self, n_devices: int) -> None:
        super().check_shardable(n_devices)
        if self.n_directed % n_devices:
            raise ValueError(
                f"the edges layout has 2E={self.n_directed} directed edges, not divisible by {n_devices} devices; "
                f"use layout='shift' or 'slots' (node-major per-edge state)"
            )
