"""The algorithm interface: an ``init``/``step`` pair of pure functions (optax style).

    state = algorithm.init(params, topology)               # params: node-stacked pytree [N, ...]
    state = algorithm.step(state, grads, topology, edge_active, node_active)
    params = algorithm.node_params(state)                   # node models [N, ...]

``grads`` are the per-node stochastic gradients at ``node_params(state)``;
``edge_active`` [E] and ``node_active`` [N] are boolean masks (see :mod:`ecl_jax.masks`).
Hyperparameters are fixed when the algorithm is built (static, validated there);
only arrays flow through ``step``. A new rule is one ``step`` function plus an
``init``: wrap them with :class:`Algorithm` (see ``notebooks/02_new_update_rule``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from ecl_jax.graph_ops import expand
from ecl_jax.topology import Topology

Params = Any
State = Any

__all__ = ["Algorithm", "keep_inactive", "check_node_stacked", "check_masks"]


class Algorithm(NamedTuple):
    """A decentralised training rule as pure functions.

    Attributes:
      name: short identifier used in logs and plots.
      init: ``(params [N, ...], topology) -> state``.
      step: ``(state, grads, topology, edge_active [E], node_active [N]) -> state``.
      node_params: ``state -> params [N, ...]`` (the models the nodes evaluate).
      config: the static hyperparameters (a frozen dataclass), for logs.
    """

    name: str
    init: Callable[[Params, Topology], State]
    step: Callable[..., State]
    node_params: Callable[[State], Params]
    config: Any = None


def keep_inactive(new: Any, old: Any, node_active: jax.Array) -> Any:
    """Per node: ``new`` where the node is active, ``old`` where it skipped the step.

    Works on any pytree whose leaves have the node axis first.
    """
    return jax.tree_util.tree_map(lambda n, o: jnp.where(expand(node_active, n), n, o), new, old)


def check_node_stacked(params: Params, topology: Topology, what: str = "params") -> None:
    """Every leaf must have the node axis N first."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != topology.n_nodes:
            raise ValueError(
                f"{what} leaf {jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}; "
                f"every leaf needs the node axis first, of size N={topology.n_nodes}"
            )


def check_masks(topology: Topology, edge_active: jax.Array, node_active: jax.Array) -> None:
    """Shape/dtype asserts for the masks at the step boundary."""
    chex.assert_shape(edge_active, (topology.n_edges,))
    chex.assert_shape(node_active, (topology.n_nodes,))
    chex.assert_type([edge_active, node_active], bool)
