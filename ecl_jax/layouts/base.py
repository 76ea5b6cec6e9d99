"""The per-edge layout protocol: how values living on the directed edges of a graph are stored.

Every quantity an algorithm keeps per directed edge i|j (duals z_{i|j}, received models
w_j^recv, smoothed duals) is an array whose leading axes are a layout's
:attr:`EdgeLayout.edge_shape`; ECL's duals are stored per *undirected* edge (pairs, leading
axes :attr:`EdgeLayout.pair_shape`, see :mod:`ecl_jax.duals`). A layout answers every
question the algorithms ask about those arrays (docs/design.md#per-edge-layouts):

* where values come from: :meth:`~EdgeLayout.source_values` (w_i on i|j),
  :meth:`~EdgeLayout.neighbor_values` (w_j on i|j), :meth:`~EdgeLayout.reverse` (e_{j|i} on i|j);
* how a node gathers its edges: :meth:`~EdgeLayout.sum_edges` (sum_j weight_{i|j} e_{i|j});
* which edges exchange: :meth:`~EdgeLayout.edge_mask` from a per-undirected-edge mask [E];
* pairs: :meth:`~EdgeLayout.pair_endpoints`, :meth:`~EdgeLayout.pair_sign`,
  :meth:`~EdgeLayout.pair_mask`, :meth:`~EdgeLayout.pairs_to_edges`, :meth:`~EdgeLayout.edges_to_pairs`;
* conversions to the canonical CSR order [2E, ...] of :class:`~ecl_jax.topology.Topology`
  (:meth:`~EdgeLayout.to_directed`, :meth:`~EdgeLayout.from_directed`) and static per-edge
  constants (:meth:`~EdgeLayout.edge_array`);
* sharding: :meth:`~EdgeLayout.check_shardable`, :meth:`~EdgeLayout.shards_leading`,
  :attr:`~EdgeLayout.node_major`.

This base class implements pairs stored per undirected edge [E] in ``edges`` order (owner =
the smaller index), used by the slot and edge-list layouts; the shift layout overrides them.
One layout per file: :mod:`~ecl_jax.layouts.slots`, :mod:`~ecl_jax.layouts.edges`,
:mod:`~ecl_jax.layouts.shift`. Jax methods act on one array leaf; :mod:`ecl_jax.graph_ops`
maps them over pytrees.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["EdgeLayout", "expand"]


def expand(v: jax.Array, leaf: jax.Array) -> jax.Array:
    """Append trailing singleton axes to ``v`` so it broadcasts against ``leaf``."""
    return v.reshape(v.shape + (1,) * (leaf.ndim - v.ndim))


class EdgeLayout:
    """Storage of per-directed-edge values of one graph (abstract; see module docstring).

    Built by :meth:`ecl_jax.topology.Topology.with_layout` from the topology's graph arrays;
    holds NumPy index arrays only (static constants when traced). Instances hash by identity.
    """

    name: str = "abstract"
    node_major: bool = False
    """Whether per-edge arrays lead with the node axis N (then they shard like node arrays)."""

    def __init__(self, topology: Any):
        t = topology
        self.n_nodes, self.n_edges, self.n_directed = t.n_nodes, t.n_edges, t.n_directed
        self.edges, self.src, self.dst, self.sign = t.edges, t.src, t.dst, t.sign
        self.directed_reverse, self.undirected = t.reverse, t.undirected
        self.degree, self.offsets, self.max_degree = t.degree, t.offsets, t.max_degree
        self._cache: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(edge_shape={self.edge_shape}, pair_shape={self.pair_shape})"

    def _cached(self, key: str, build):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    # ------------------------------------------------------------- shapes
    @property
    def edge_shape(self) -> tuple[int, ...]:
        """Leading shape of per-directed-edge arrays."""
        raise NotImplementedError

    @property
    def pair_shape(self) -> tuple[int, ...]:
        """Leading shape of pair-stored (per undirected edge) arrays: [E] here."""
        return (self.n_edges,)

    # ------------------------------------------------- NumPy conversions
    def from_directed(self, values: Any, fill: Any = 0.0) -> np.ndarray:
        """Canonical [2E, ...] per-edge values (CSR order) -> this layout (padding = ``fill``)."""
        raise NotImplementedError

    def to_directed(self, x: Any) -> np.ndarray:
        """Layout-shaped per-edge values -> canonical [2E, ...] CSR order (NumPy)."""
        raise NotImplementedError

    def edge_array(self, name: str) -> np.ndarray:
        """Static per-edge arrays in layout shape.

        ``"sign"`` (A_{src|dst}; 0 on padding), ``"valid"``, ``"undirected"`` (E on padding),
        ``"src"``, ``"dst"`` (own node on padding), ``"position"`` (rank of the neighbour among
        the source's neighbours), ``"reverse"`` (flat layout index of the opposite direction;
        padding maps to itself).
        """
        if name not in ("sign", "valid", "undirected", "src", "dst", "position", "reverse"):
            raise KeyError(f"unknown edge array {name!r}")
        return self._cached("edge_array_" + name, lambda: self._build_edge_array(name))

    def _build_edge_array(self, name: str) -> np.ndarray:
        if name == "sign":
            return self.from_directed(self.sign, 0.0)
        if name == "valid":
            return self.from_directed(np.ones(self.n_directed, bool), False)
        if name == "undirected":
            return self.from_directed(self.undirected, self.n_edges)
        if name == "position":
            return self.from_directed((np.arange(self.n_directed) - self.offsets[self.src]).astype(np.int32), 0)
        if name == "src":
            return self.from_directed(self.src, 0)
        if name == "dst":
            return self.from_directed(self.dst, 0)
        return self.from_directed(self.directed_reverse, 0)

    # ------------------------------------------------ node <-> edge values
    def source_values(self, x: jax.Array) -> jax.Array:
        """x [N, ...] -> the *source* node's value x_i on every directed edge i|j."""
        raise NotImplementedError

    def neighbor_values(self, x: jax.Array) -> jax.Array:
        """x [N, ...] -> the *destination* node's value x_j on every directed edge i|j
        (padding slots receive the node's own value)."""
        return x[jnp.asarray(self.edge_array("dst"))]

    def reverse(self, e: jax.Array) -> jax.Array:
        """Per-edge values -> the value on the opposite direction (e_{j|i} at i|j)."""
        raise NotImplementedError

    def sum_edges(self, e: jax.Array, weights: jax.Array | None = None) -> jax.Array:
        """sum_{j in N(i)} w_{i|j} e_{i|j} -> [N, ...] (``weights`` layout-shaped; default: the
        valid-edge mask, so padding contributes nothing)."""
        raise NotImplementedError

    def edge_mask(self, edge_active: jax.Array) -> jax.Array:
        """Per-undirected-edge mask [E] -> layout-shaped mask over directed edges (padding False)."""
        padded = jnp.concatenate([jnp.asarray(edge_active, bool), jnp.zeros((1,), bool)])
        return padded[jnp.asarray(self.edge_array("undirected"))]

    # --------------------------------------------------------------- pairs
    def _positions(self) -> dict:
        """Flat layout positions of a->b (``owner``) and b->a (``other``) per edge [E]; for each
        flat position its edge (``pair``) and +1 (held by the owner), -1 (the other end), 0 (padding)."""

        def build():
            und = self.edge_array("undirected").reshape(-1)
            src = self.edge_array("src").reshape(-1)
            valid = self.edge_array("valid").reshape(-1)
            owner = np.zeros(self.n_edges, np.int32)
            other = np.zeros(self.n_edges, np.int32)
            pos = np.flatnonzero(valid)
            is_owner = src[pos] == self.edges[und[pos], 0]
            owner[und[pos[is_owner]]] = pos[is_owner]
            other[und[pos[~is_owner]]] = pos[~is_owner]
            pair = np.where(valid, und, 0).astype(np.int32)
            orient = np.where(valid, np.where(src == self.edges[pair, 0], 1.0, -1.0), 0.0).astype(np.float32)
            return dict(owner=owner, other=other, pair=pair.reshape(self.edge_shape),
                        orient=orient.reshape(self.edge_shape))

        return self._cached("positions", build)

    def pair_endpoints(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [N, ...] -> (x_a, x_b): the owner's and the other end's value at every pair."""
        e = jnp.asarray(self.edges)
        return x[e[:, 0]], x[e[:, 1]]

    def pair_sign(self) -> np.ndarray:
        """A_{a|b} of every pair's owner a (static, pair-shaped; +1 here: the owner is the smaller index)."""
        return self._cached("pair_sign", lambda: self.edge_array("sign").reshape(-1)[self._positions()["owner"]])

    def pair_mask(self, edge_active: jax.Array) -> jax.Array:
        """Per-undirected-edge mask [E] -> pair-shaped mask."""
        return jnp.asarray(edge_active, bool)

    def pairs_to_edges(self, x: jax.Array) -> jax.Array:
        """Pairs x [*pair_shape, 2, ...] (u = x_{a|b} + x_{b|a} at 0, v = x_{a|b} - x_{b|a} at 1)
        -> x_{i|j} in this layout (0 on padding)."""
        u, v = x[:, 0], x[:, 1]
        pos = self._positions()
        pair = jnp.asarray(pos["pair"])
        orient = jnp.asarray(pos["orient"], u.dtype)
        return expand(0.5 * jnp.abs(orient), u[pair]) * u[pair] + expand(0.5 * orient, v[pair]) * v[pair]

    def edges_to_pairs(self, x: jax.Array) -> jax.Array:
        """x_{i|j} in this layout -> pairs [*pair_shape, 2, ...] (padding is ignored)."""
        pos = self._positions()
        flat = x.reshape((-1,) + x.shape[len(self.edge_shape):])
        a, b = flat[jnp.asarray(pos["owner"])], flat[jnp.asarray(pos["other"])]
        return jnp.stack([a + b, a - b], axis=1)

    # ------------------------------------------------------------ sharding
    def check_shardable(self, n_devices: int) -> None:
        """Raise ValueError, naming the sizes, when this layout's arrays cannot be split over
        ``n_devices`` along their leading axis."""
        if self.n_nodes % n_devices:
            raise ValueError(
                f"N={self.n_nodes} nodes cannot be split evenly over {n_devices} devices; "
                f"use a multiple of {n_devices} nodes (or fewer devices)"
            )

    def shards_leading(self, size: int) -> bool:
        """Whether a per-edge or node array with leading axis ``size`` is split over devices
        (the node axis, and this layout's edge/pair axes)."""
        return size in (self.n_nodes, self.edge_shape[0], self.pair_shape[0])
