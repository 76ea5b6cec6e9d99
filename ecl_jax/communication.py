"""Communication accounted: what each rule sends on an exchange, counted inside the compiled
loop (docs/algorithms.md#communication).

A rule says what it sends with :class:`Messages` (``Algorithm.messages``)::

    payload(params)   the arrays one node sends one neighbour in one exchange (of one node's
                      params, abstract shapes are enough): a model, a dual, a model and a tracker
    one_way           False: every exchanging edge is a swap, a message each way;
                      True: a direction carries a message only when its sender has stepped
                      since that edge's last exchange (ECL's duals under a free runtime,
                      :class:`~ecl_jax.duals.EdgeDuals`); in lockstep both ends just stepped

The engine keeps :class:`Traffic` in the carry: per undirected edge e = (a, b) (``topology.edges``)
the messages delivered each way, ``delivered[:, e] = (a -> b, b -> a)`` ([2, E]: a leading
axis that is never the node axis, so node sharding leaves it whole), one elementwise add per
step on the exchanging edges (:func:`~ecl_jax.graph_ops.exchanging_edges`, the edges the rules
exchange on). Per node, at each metric point (:func:`per_node`)::

    sent_i     = sum_{e = (i, b)} delivered[0, e] + sum_{e = (a, i)} delivered[1, e]
    received_i = sum_{e = (a, i)} delivered[0, e] + sum_{e = (i, b)} delivered[1, e]
    bytes      = messages x payload bytes (:func:`payload_bytes`, in the exchanged dtype)

so sent and received agree summed over nodes.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax import graph_ops as gops
from ecl_jax.masks import Activity
from ecl_jax.topology import Topology

__all__ = ["Messages", "SILENT", "Traffic", "init", "count", "per_node", "payload_bytes"]


class Messages(NamedTuple):
    """What a rule sends per exchange and direction (module docstring): ``payload`` maps one
    node's params to the arrays of one message (None: the rule sends nothing); ``one_way``:
    a direction sends only with news since the edge's last exchange."""

    payload: Callable[[Any], Any] | None
    one_way: bool = False


SILENT = Messages(None)
"""The messages of a rule that communicates nothing (local SGD, the centralised reference)."""


class Traffic(NamedTuple):
    """Messages delivered so far per direction and undirected edge, ``delivered`` int32 [2, E]
    (a -> b, b -> a); ``news`` bool [2, E] with one-way messages (the direction's sender
    stepped since the edge's last exchange), else ``()``."""

    delivered: jax.Array
    news: Any = ()


def init(topology: Topology, messages: Messages) -> Traffic:
    """No message delivered yet (and no news: the duals start equal on both ends)."""
    e = topology.n_edges
    return Traffic(jnp.zeros((2, e), jnp.int32), jnp.zeros((2, e), bool) if messages.one_way else ())


def count(traffic: Traffic, messages: Messages, topology: Topology, edge_active: jax.Array,
          node_active: Any) -> Traffic:
    """``traffic`` after one step's exchanges (module docstring): on every exchanging edge a
    message each way, or with ``one_way`` under a free runtime (``node_active`` an
    :class:`~ecl_jax.masks.Activity`) only from an end that stepped since the last exchange."""
    if messages.payload is None:
        return traffic
    on = gops.exchanging_edges(topology, edge_active, node_active)[None]  # [1, E]
    news = traffic.news
    if messages.one_way and isinstance(node_active, Activity):
        ends = np.asarray(topology.edges)
        c = jnp.asarray(node_active.computes, bool)
        fresh = news | jnp.stack([c[ends[:, 0]], c[ends[:, 1]]])  # [2, E]: a has news, b has news
        sent, news = on & fresh, fresh & ~on
    else:
        sent = jnp.broadcast_to(on, traffic.delivered.shape)
    return Traffic(traffic.delivered + sent.astype(jnp.int32), news)


def per_node(traffic: Traffic, topology: Topology) -> tuple[jax.Array, jax.Array]:
    """(messages sent [N], messages received [N]) by every node so far (module docstring)."""
    ends, n, d = np.asarray(topology.edges), topology.n_nodes, traffic.delivered
    into = lambda values, at: jax.ops.segment_sum(values, at, num_segments=n)
    sent = into(d[0], ends[:, 0]) + into(d[1], ends[:, 1])
    received = into(d[0], ends[:, 1]) + into(d[1], ends[:, 0])
    return sent, received


def payload_bytes(messages: Messages | None, node_params: Any) -> int | None:
    """Bytes of one message, in the dtypes of what is sent, from one node's (abstract) params
    ``node_params``; 0 for a rule that sends nothing, None for one that does not say."""
    if messages is None:
        return None
    if messages.payload is None:
        return 0
    arrays = jax.eval_shape(messages.payload, node_params)
    return int(sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in jax.tree_util.tree_leaves(arrays)))
