"""Classical decentralised baselines (docs/algorithms.md#baselines).

Every baseline takes an optax ``GradientTransformation`` as the local optimiser
(``optimizer``; default plain SGD with ``lr``), vmapped over the node axis.

* :func:`gossip` - D-PSGD (Lian et al. 2017): local step, then
  w_i <- w_i + sum_{j active} W_ij (w_j - w_i), Metropolis-Hastings
  W_ij = 1/(1 + max(|N(i)|, |N(j)|)) on the active edges (doubly stochastic).
* :func:`pairwise_gossip` - the KDD20 code: local step, then one neighbour after
  another (increasing index) w_i <- (w_i + w_j^recv)/2 with the last received models,
  i.e. w_i/2^d + sum_s w_{j_s}^recv / 2^(d - s); received models refresh on active edges.
* :func:`dsgd` - the ICML21 code: local step, then
  w_i <- (w_i + sum_j w_j^recv)/(|N(i)| + 1) with stale received models.
* :func:`gradient_tracking` - DSGT: y_t = W y_{t-1} + g_t - g_{t-1} (y_0 = g_0),
  w_{t+1} = W (w_t + u(y_t)) with u the optimiser's update and W the MH weights.
* :func:`local_sgd` - no communication (the floor).
* :func:`centralized` - one model trained on the union: the mean over nodes of their
  minibatch gradients (= the gradient of the concatenated batch) drives one optax update.

The per-node reading of each step (one node, one neighbour at a time, in NumPy float64) is
in ``tests/naive_reference.py`` (``NaiveGossip``, ``NaivePairwiseGossip``, ``NaiveDSGD``,
``NaiveGradientTracking``, ``NaiveLocal``, ``NaiveCentralized``), which the tests hold
these steps to.

Received models start as the neighbours' initial models (all equal when the nodes
start from one model, as in both papers' code). Inactive nodes keep their whole state
and edges touching them do not exchange.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ecl_jax import graph_ops as gops
from ecl_jax.communication import SILENT, Messages
from ecl_jax.algorithms.base import (
    Algorithm,
    check_node_stacked,
    constant_dtype,
    for_each_node,
    node_mean,
    tree_constant_dtype,
)
from ecl_jax.topology import Topology
from ecl_jax.validation import is_array_value, is_number

__all__ = [
    "BaselineConfig",
    "OptState",
    "ReceivedState",
    "TrackingState",
    "CentralState",
    "metropolis_hastings",
    "gossip",
    "pairwise_gossip",
    "dsgd",
    "gradient_tracking",
    "local_sgd",
    "centralized",
]


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """Static settings of an SGD-type baseline: the local optax optimiser."""

    name: str
    optimizer: optax.GradientTransformation
    lr: float | None = None


MODEL = Messages(lambda w: w)
"""A model per exchange and direction (gossip, pairwise gossip, DSGD)."""


def _make_optimizer(lr: float | None, optimizer: optax.GradientTransformation | None) -> optax.GradientTransformation:
    if optimizer is not None:
        if not isinstance(optimizer, optax.GradientTransformation):
            raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
        return optimizer
    if lr is None:
        raise ValueError("give a learning rate lr or an optax optimizer")
    if not (callable(lr) or is_array_value(lr) or (is_number(lr) and lr > 0)):
        raise ValueError(f"lr must be a positive finite number or a schedule, got {lr!r}")
    return optax.sgd(lr)


class OptState(NamedTuple):
    """Node models and their (node-stacked) optimiser state."""

    params: Any
    opt_state: Any


class ReceivedState(NamedTuple):
    """Node models, optimiser state and the last received neighbour models (edge layout)."""

    params: Any
    opt_state: Any
    received: Any


class TrackingState(NamedTuple):
    """DSGT: models, optimiser state, mixed tracker W y_{t-1}, previous gradient."""

    params: Any
    opt_state: Any
    mixed_tracker: Any
    prev_grads: Any


class CentralState(NamedTuple):
    """One model [1, ...] (shown to every node) and its optimiser state."""

    params: Any
    opt_state: Any
    n_nodes: int


jax.tree_util.register_pytree_node(
    CentralState,
    lambda s: ((s.params, s.opt_state), s.n_nodes),
    lambda n, c: CentralState(c[0], c[1], n),
)


def _sgd_step(tx):
    """One node's optimiser step ``(w, g, opt) -> (w', opt')`` (for :func:`for_each_node`)."""

    def local(w, g, opt):
        updates, opt = tx.update(g, opt, w)
        return optax.apply_updates(w, updates), opt

    return local


def _init_opt(tx, params):
    return jax.vmap(tx.init)(params)


MIXINGS = ("union", "step")
"""Whose degrees the MH weights use: ``"union"`` the graph's (the default: random edge
activation keeps the weights), ``"step"`` those of the step's exchanging edges (the realised
graph of a graph that changes, W_t = MH(G_t); docs/algorithms.md#graphs-that-change)."""


def _check_mixing(mixing: str) -> str:
    if mixing not in MIXINGS:
        raise ValueError(f"mixing must be 'union' (the graph's degrees) or 'step' (the degrees of the step's "
                         f"exchanging edges), got {mixing!r}")
    return mixing


def metropolis_hastings(topology: Topology, active: jax.Array, dtype: Any = jnp.float32,
                        mixing: str = "union") -> jax.Array:
    """Layout-shaped MH weights W_ij = 1/(1 + max(d_i, d_j)) on active directed edges, 0
    elsewhere, computed in ``dtype`` (the algorithms pass the params' constant dtype); d the
    graph's degrees, or with ``mixing="step"`` the number of active edges at each node."""
    if mixing == "step":
        deg = gops.sum_edges(topology, active.astype(dtype))
    else:
        deg = jnp.asarray(topology.degree, dtype)
    d_src = gops.broadcast_to_edges(topology, deg)
    d_dst = gops.neighbor_values(topology, deg)
    return jnp.where(active, 1.0 / (1.0 + jnp.maximum(d_src, d_dst)), 0.0)


def _mh_weights(topology: Topology, active: jax.Array, mixing: str = "union"):
    """``dtype -> (W, row sums of W)``: the MH weights over the ``active`` directed edges
    (layout-shaped mask) in that dtype, each dtype built once."""
    cache = {}

    def weights(dtype):
        if dtype not in cache:
            w = metropolis_hastings(topology, active, dtype, mixing)
            cache[dtype] = (w, gops.sum_edges(topology, w))
        return cache[dtype]

    return weights


def _mix(topology: Topology, tree, weights):
    """w_i + sum_j W_ij (w_j - w_i) for every leaf, W and its row sums in the leaf's
    constant dtype (``weights`` from :func:`_mh_weights`)."""

    def mix(w):
        wts, wsum = weights(constant_dtype(w.dtype))
        nbr = gops.neighbor_values(topology, w)
        total = gops.sum_edges(topology, nbr, wts)
        return w + total - gops.expand(wsum, w).astype(w.dtype) * w

    return jax.tree_util.tree_map(mix, tree)


def gossip(lr: float | None = None, *, optimizer: optax.GradientTransformation | None = None, name: str = "gossip",
           mixing: str = "union") -> Algorithm:
    """D-PSGD with Metropolis-Hastings weights over the active edges (``mixing``: :data:`MIXINGS`)."""
    tx = _make_optimizer(lr, optimizer)
    mixing = _check_mixing(mixing)

    def init(params, topology):
        check_node_stacked(params, topology)
        return OptState(params, _init_opt(tx, params))

    def step(state, grads, topology, edge_active, node_active):
        half, opt = for_each_node(_sgd_step(tx), state.params, grads, state.opt_state,
                                  node_active=node_active, keep=(state.params, state.opt_state))
        active = gops.edge_mask(topology, edge_active, node_active)
        return OptState(_mix(topology, half, _mh_weights(topology, active, mixing)), opt)

    return Algorithm(name, init, step, lambda s: s.params, BaselineConfig(name, tx, lr), MODEL)


def _received_algorithm(name, tx, lr, combine):
    """Local step, then w_i <- combine(w_i, received) (stale neighbour copies); copies refresh
    on the edges that exchange. ``combine(topology, dtype)`` gives (c_i [N], weights on the
    edges): w_i <- c_i w_i + sum_j weight_{i|j} w_j^recv."""

    def init(params, topology):
        check_node_stacked(params, topology)
        return ReceivedState(params, _init_opt(tx, params), gops.tree_neighbor_values(topology, params))

    def step(state, grads, topology, edge_active, node_active):
        own, weights = combine(topology, tree_constant_dtype(state.params))
        local = _sgd_step(tx)

        def update(w, g, opt, c, r):  # node i: local step, then c_i w_i + sum_j weight_{i|j} w_j^recv
            w, opt = local(w, g, opt)
            return jax.tree_util.tree_map(lambda a, b: c.astype(a.dtype) * a + b, w, r), opt

        mixed_received = lambda: jax.tree_util.tree_map(lambda r: gops.sum_edges(topology, r, weights), state.received)
        new, opt = for_each_node(update, state.params, grads, state.opt_state, own, mixed_received,
                                 node_active=node_active, keep=(state.params, state.opt_state))
        exchanging = gops.exchanging_edges(topology, edge_active, node_active)
        return ReceivedState(new, opt, gops.refresh_received(topology, state.received, new, exchanging))

    return Algorithm(name, init, step, lambda s: s.params, BaselineConfig(name, tx, lr), MODEL)


def pairwise_gossip(lr: float | None = 0.05, *, optimizer=None, name: str = "pairwise-gossip") -> Algorithm:
    """KDD20 code's asynchronous gossip: sequential halving with stale received models."""
    tx = _make_optimizer(lr, optimizer)

    def combine(topology, dt):  # w_i / 2^d + sum_s w_{j_s}^recv / 2^(d - s)
        deg = jnp.asarray(topology.degree, dt)
        pos = gops.edge_weights(topology, "position", dt)
        weights = jnp.where(gops.edge_weights(topology, "valid") > 0, 2.0 ** (pos - gops.broadcast_to_edges(topology, deg)), 0.0)
        return 2.0 ** (-deg), weights

    return _received_algorithm(name, tx, lr, combine)


def dsgd(lr: float | None = None, *, optimizer=None, name: str = "dsgd") -> Algorithm:
    """ICML21 code's DSGD: uniform 1/(|N(i)|+1) averaging with stale received models."""
    tx = _make_optimizer(lr, optimizer)

    def combine(topology, dt):  # (w_i + sum_j w_j^recv) / (|N(i)| + 1)
        inv = 1.0 / (jnp.asarray(topology.degree, dt) + 1.0)
        return inv, gops.edge_weights(topology, "valid", dt) * gops.broadcast_to_edges(topology, inv)

    return _received_algorithm(name, tx, lr, combine)


def gradient_tracking(lr: float | None = None, *, optimizer=None, name: str = "gradient-tracking",
                      mixing: str = "union") -> Algorithm:
    """DSGT (Pu & Nedic 2021; Xin et al.): gradient tracking with MH weights on active edges
    (``mixing``: :data:`MIXINGS`)."""
    tx = _make_optimizer(lr, optimizer)
    mixing = _check_mixing(mixing)

    def init(params, topology):
        check_node_stacked(params, topology)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return TrackingState(params, _init_opt(tx, params), zeros, zeros)

    local = _sgd_step(tx)

    def step(state, grads, topology, edge_active, node_active):
        def update(q, g, g_prev, w, opt):  # node i: y_t = W y_{t-1} + g_t - g_{t-1}, then its local step with y_t
            y = jax.tree_util.tree_map(lambda a, b, c: a + b - c, q, g, g_prev)
            w, opt = local(w, y, opt)
            return w, y, opt, g

        half, tracker, opt, prev = for_each_node(
            update, state.mixed_tracker, grads, state.prev_grads, state.params, state.opt_state,
            node_active=node_active, keep=(state.params, state.mixed_tracker, state.opt_state, state.prev_grads))
        weights = _mh_weights(topology, gops.edge_mask(topology, edge_active, node_active), mixing)
        return TrackingState(_mix(topology, half, weights), opt, _mix(topology, tracker, weights), prev)

    # the mixing W (w + u(y)) and W y read both the neighbours' models and their trackers
    return Algorithm(name, init, step, lambda s: s.params, BaselineConfig(name, tx, lr), Messages(lambda w: (w, w)))


def local_sgd(lr: float | None = None, *, optimizer=None, name: str = "local") -> Algorithm:
    """Every node trains alone (no communication)."""
    tx = _make_optimizer(lr, optimizer)

    def init(params, topology):
        check_node_stacked(params, topology)
        return OptState(params, _init_opt(tx, params))

    def step(state, grads, topology, edge_active, node_active):
        new, opt = for_each_node(_sgd_step(tx), state.params, grads, state.opt_state,
                                 node_active=node_active, keep=(state.params, state.opt_state))
        return OptState(new, opt)

    return Algorithm(name, init, step, lambda s: s.params, BaselineConfig(name, tx, lr), SILENT)


def centralized(lr: float | None = None, *, optimizer=None, name: str = "centralized") -> Algorithm:
    """The centralised reference: one model, updated with the mean of the active nodes'
    minibatch gradients (the gradient on their concatenated batch). It starts from node
    0's initial model; edge masks are ignored."""
    tx = _make_optimizer(lr, optimizer)

    def init(params, topology):
        check_node_stacked(params, topology)
        one = jax.tree_util.tree_map(lambda w: w[:1], params)
        return CentralState(one, _init_opt(tx, one), topology.n_nodes)

    def step(state, grads, topology, edge_active, node_active):
        mean, count = node_mean(grads, node_active)  # (1/|C|) sum_{i in C} g_i, C the nodes that compute
        # the one model is a node axis of size 1: it steps when some node computed
        new, opt = for_each_node(_sgd_step(tx), state.params, mean, state.opt_state,
                                 node_active=(count > 0)[None], keep=(state.params, state.opt_state))
        return CentralState(new, opt, state.n_nodes)

    def node_params(state):
        return jax.tree_util.tree_map(lambda w: jnp.broadcast_to(w, (state.n_nodes,) + w.shape[1:]), state.params)

    return Algorithm(name, init, step, node_params, BaselineConfig(name, tx, lr), SILENT)  # no peer messages
