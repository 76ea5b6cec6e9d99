"""Per-edge duals as one typed primitive: :class:`EdgeDuals`, stored per undirected edge.

Each undirected edge {a, b} (a: the edge's *owner*) carries two duals, z_{a|b} (held by a)
and z_{b|a} (held by b). They are stored at one position, in the sum/difference basis

    u = z_{a|b} + z_{b|a},        v = z_{a|b} - z_{b|a}

so z_{a|b} = (u + v)/2 and z_{b|a} = (u - v)/2. Why: the ECL exchange
z_{a|b} <- (1 - theta) z_{a|b} + theta (z_{b|a} - 2 A_{b|a} w_b) swaps the two directions of
an edge, so on directed storage it reads every dual at its reverse position and cannot
update in place; in this basis it is elementwise (A = A_{a|b} = -A_{b|a}):

    u <- u + 2 theta A (w_b - w_a),      v <- (1 - 2 theta) v + 2 theta A (w_a + w_b)

and only the node models are read at other nodes' positions
(docs/algorithms.md#dual-storage-per-undirected-edge).

Messages are sent as the official codes send them: node j's message y_{j|i} = z_{j|i} - 2 A_{j|i} w_j
is fixed at j's own local step, and a swap delivers it. A node that has not stepped since the
edge's last swap (paused, say, but still answering) re-sends the message its partner already
holds, which changes nothing for theta = 1; so a direction is delivered only when its sender
has *news* (it stepped since that edge's last swap). ``news`` [*pair_shape, 2] (owner's
message at 0, the other end's at 1) records that (docs/algorithms.md#messages-and-news). With
plain bool node masks both ends of an exchanging edge have just stepped, and the exchange is
the two-direction formula above.

An :class:`EdgeDuals` is a registered pytree: its leaves are one array per parameter leaf,
[*layout.pair_shape, 2, P_leaf], then the bool ``news`` (u at 0, v at 1, the leaf's parameters flattened: XLA:CPU
moves a contiguous trailing axis several times faster than conv/dense kernel shapes); the
layout and the leaves' shapes are static. Its verbs take and return node-stacked trees
shaped like the params, so an update rule never sees the storage:

* :meth:`EdgeDuals.zeros` / :meth:`EdgeDuals.from_directed`: build;
* :meth:`EdgeDuals.signed_sum`: sum_j A_{i|j} z_{i|j} per node (what a node's primal needs);
* :meth:`EdgeDuals.exchange`: the masked exchange above;
* :meth:`EdgeDuals.directed`: z_{i|j} in the layout's directed shape, for tests, plots, notebooks;
* :meth:`EdgeDuals.map`: an elementwise map of the dual values (the basis is linear, so
  ``a.map(lambda x, y: (x + y) / 2, b)`` averages two duals).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax.layouts import EdgeLayout, expand
from ecl_jax.masks import Activity

__all__ = ["EdgeDuals", "is_duals"]


def _trailing_shapes(like: Any) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(w.shape[1:]) for w in jax.tree_util.tree_leaves(like))


@jax.tree_util.register_pytree_node_class
class EdgeDuals:
    """Duals z_{i|j} of every directed edge, pair-stored (see module docstring).

    pairs: a pytree shaped like the params whose leaves are [*pair_shape, 2, P_leaf];
    news: bool [*pair_shape, 2], whether each end (owner at 0) stepped since the edge's last swap;
    layout: the topology's :class:`~ecl_jax.layouts.EdgeLayout` (static);
    shapes: each parameter leaf's trailing shape (static).
    """

    __slots__ = ("pairs", "news", "layout", "shapes")

    def __init__(self, pairs: Any, news: Any, layout: EdgeLayout, shapes: tuple[tuple[int, ...], ...]):
        self.pairs = pairs
        self.news = news
        self.layout = layout
        self.shapes = shapes

    def tree_flatten(self):
        return (self.pairs, self.news), (self.layout, self.shapes)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)

    def __repr__(self) -> str:
        return f"EdgeDuals(layout={self.layout.name!r}, shapes={self.shapes})"

    # ---------------------------------------------------------------- build
    @classmethod
    def zeros(cls, topology: Any, like: Any) -> "EdgeDuals":
        """Zero duals for the node-stacked pytree ``like`` [N, ...] (same dtypes), no news (the
        codes' send buffers start at 0, which is what the receiver holds)."""
        lead = topology.layout.pair_shape
        pairs = jax.tree_util.tree_map(
            lambda w: jnp.zeros(lead + (2, math.prod(w.shape[1:])), w.dtype), like
        )
        return cls(pairs, _no_news(topology.layout), topology.layout, _trailing_shapes(like))

    @classmethod
    def from_directed(cls, topology: Any, z: Any) -> "EdgeDuals":
        """Duals from z_{i|j} in ``topology``'s directed layout ([*edge_state_shape, ...] per
        leaf; padding ignored), no news."""
        layout = topology.layout
        e = len(layout.edge_shape)

        def pack(x):
            return layout.edges_to_pairs(x.reshape(x.shape[:e] + (-1,)))

        shapes = tuple(tuple(x.shape[e:]) for x in jax.tree_util.tree_leaves(z))
        return cls(jax.tree_util.tree_map(pack, z), _no_news(layout), layout, shapes)

    # ------------------------------------------------------------- helpers
    def _map_leaves(self, fn: Callable, lead: tuple[int, ...]) -> Any:
        """fn(pair leaf) -> [*lead, P_leaf] per leaf, reshaped to [*lead, *leaf shape]."""
        leaves, treedef = jax.tree_util.tree_flatten(self.pairs)
        out = [fn(x).reshape(lead + shape) for x, shape in zip(leaves, self.shapes)]
        return jax.tree_util.tree_unflatten(treedef, out)

    # ---------------------------------------------------------------- verbs
    def signed_sum(self) -> Any:
        """sum_{j in N(i)} A_{i|j} z_{i|j} for every node: a tree [N, ...] shaped like the params."""
        layout = self.layout
        sign = jnp.asarray(layout.edge_array("sign"), jnp.float32)
        return self._map_leaves(lambda x: layout.sum_edges(layout.pairs_to_edges(x), sign),
                                lead=(layout.n_nodes,))

    def exchange(self, w: Any, active: jax.Array, theta: float = 1.0, node_active: Any = None) -> "EdgeDuals":
        """z_{i|j} <- (1 - theta) z_{i|j} + theta (z_{j|i} - 2 A_{j|i} w_j) on the edges where
        ``active`` [E] (per undirected edge, e.g. :func:`ecl_jax.graph_ops.exchanging_edges`)
        holds and j has news; ``w`` [N, ...] the node models; ``node_active`` the step's bool [N]
        mask or :class:`~ecl_jax.masks.Activity` (None: every node stepped). theta = 1 is PDMM,
        1/2 ADMM. With an Activity, a node that did not step since the edge's last swap sends
        nothing new (module docstring)."""
        layout = self.layout
        k = len(layout.pair_shape)
        on = layout.pair_mask(active)
        sign = layout.pair_sign()
        leaves, treedef = jax.tree_util.tree_flatten(self.pairs)
        ws = treedef.flatten_up_to(w)
        news = self.news  # lockstep: an edge exchanges only when both ends stepped, news unused
        if isinstance(node_active, Activity):  # a direction only where its sender has news
            c_a, c_b = layout.pair_endpoints(jnp.asarray(node_active.computes, bool))
            fresh = self.news | jnp.stack([c_a, c_b], axis=-1)  # [*pair_shape, 2]
            news = fresh & ~on[..., None]
            to_a, to_b = on & fresh[..., 1], on & fresh[..., 0]
            new = [_one_way_update(x, wi.reshape(wi.shape[:1] + (-1,)), layout, k, sign, theta, to_a, to_b)
                   for x, wi in zip(leaves, ws)]
        else:  # every exchanging edge's two ends just stepped: both directions
            new = [_two_way_update(x, wi.reshape(wi.shape[:1] + (-1,)), layout, k, sign, theta, on)
                   for x, wi in zip(leaves, ws)]
        return EdgeDuals(jax.tree_util.tree_unflatten(treedef, new), news, layout, self.shapes)

    def map(self, fn: Callable, *others: "EdgeDuals") -> "EdgeDuals":
        """``fn`` applied leaf by leaf to the dual values of ``self`` and ``others`` (same layout);
        elementwise ``fn`` is exact in the pair basis, which is linear. News are kept."""
        pairs = jax.tree_util.tree_map(fn, self.pairs, *(o.pairs for o in others))
        return EdgeDuals(pairs, self.news, self.layout, self.shapes)

    def directed(self) -> Any:
        """z_{i|j} as a tree of [*layout.edge_shape, ...] (0 on padding slots); the topology's
        ``to_directed`` then gives canonical (src, dst) order
        (docs/algorithms.md#per-node-and-per-edge-variables)."""
        layout = self.layout
        return self._map_leaves(layout.pairs_to_edges, lead=layout.edge_shape)


def _no_news(layout: EdgeLayout) -> jax.Array:
    return jnp.zeros(layout.pair_shape + (2,), bool)


def _endpoints(x: jax.Array, w_flat: jax.Array, layout: EdgeLayout, k: int, sign: np.ndarray, theta: float):
    w_a, w_b = (jnp.expand_dims(e, k) for e in layout.pair_endpoints(w_flat))
    a2 = 2.0 * theta * expand(jnp.asarray(sign), x).astype(x.dtype)  # 2 theta A_{a|b}
    return w_a, w_b, a2


def _two_way_update(x, w_flat, layout, k, sign, theta, on):
    """u <- u + 2 theta A (w_b - w_a), v <- (1 - 2 theta) v + 2 theta A (w_a + w_b) where ``on``."""
    w_a, w_b, a2 = _endpoints(x, w_flat, layout, k, sign, theta)
    is_sum = (jnp.arange(2) == 0).reshape((2,) + (1,) * (x.ndim - k - 1))  # u at 0, v at 1
    new = jnp.where(is_sum, x + a2 * (w_b - w_a), (1.0 - 2.0 * theta) * x + a2 * (w_a + w_b))
    return jnp.where(expand(on, x), new, x)  # elementwise in x: one in-place loop


def _one_way_update(x, w_flat, layout, k, sign, theta, to_a, to_b):
    """z_{a|b} += theta (-v + 2 A w_b) where ``to_a``, z_{b|a} += theta (v - 2 A w_a) where ``to_b``:
    u <- u + d_a + d_b, v <- v + d_a - d_b; where both hold, the two-way formula (the same
    numbers, so a runtime where every node steps equals lockstep bit for bit)."""
    w_a, w_b, a2 = _endpoints(x, w_flat, layout, k, sign, theta)
    u, v = jnp.take(x, 0, axis=k), jnp.take(x, 1, axis=k)
    a2_, w_a_, w_b_ = (jnp.take(e, 0, axis=k) for e in (a2, w_a, w_b))
    d_a = jnp.where(expand(to_a, u), a2_ * w_b_ - theta * v, 0.0)
    d_b = jnp.where(expand(to_b, u), theta * v - a2_ * w_a_, 0.0)
    one_way = jnp.stack([u + d_a + d_b, v + d_a - d_b], axis=k)
    return jnp.where(expand(to_a & to_b, x), _two_way_update(x, w_flat, layout, k, sign, theta, to_a), one_way)


def is_duals(x: Any) -> bool:
    """Whether ``x`` is an :class:`EdgeDuals` (for ``tree_map(..., is_leaf=is_duals)``)."""
    return isinstance(x, EdgeDuals)
