"""What a run measures at every metric point (docs/design.md#metrics).

* ``node_loss`` [N]: each node's loss on its own data, f_i(w_i) = (1/m_i) sum_r loss(w_i, x_ir, y_ir);
* ``mean_model_loss``: the loss of the mean model w_bar = (1/N) sum_i w_i on all valid rows;
* ``consensus_distance``: (1/N) sum_i ||w_i - w_bar||^2 over all parameter leaves;
* whatever ``eval_fn(node_params, eval_data)`` adds (e.g. test accuracy per node).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from ecl_jax.node_data import NodeData

__all__ = ["mean_params", "consensus_distance", "model_metrics"]


def mean_params(params: Any) -> Any:
    """Average model w_bar = (1/N) sum_i w_i."""
    return jax.tree_util.tree_map(lambda w: w.mean(0), params)


def consensus_distance(params: Any) -> jax.Array:
    """(1/N) sum_i ||w_i - w_bar||^2 over all parameter leaves."""
    leaves = jax.tree_util.tree_leaves(params)
    return sum(((w - w.mean(0, keepdims=True)) ** 2).reshape(w.shape[0], -1).sum(1).mean() for w in leaves)


def model_metrics(loss_fn: Callable, params: Any, data: NodeData, *, train_metrics: bool = True) -> dict:
    """The training metrics of the node models ``params`` [N, ...] (module docstring; the
    losses only with ``train_metrics``). Padding rows (past ``data.count``) count nowhere;
    the engine adds the step, the free clocks' local steps and ``eval_fn``'s metrics."""
    out = {}
    if train_metrics:
        m = data.x.shape[1]
        valid = (jnp.arange(m)[None, :] < data.count[:, None]).astype(jnp.float32)
        per_node = jax.vmap(lambda p, x, y: loss_fn(p, x, y, None))(params, data.x, data.y)
        wbar = mean_params(params)
        mean_losses = jax.vmap(lambda x, y: loss_fn(wbar, x, y, None))(data.x, data.y)
        out["node_loss"] = jnp.where(valid > 0, per_node, 0.0).sum(1) / data.count
        out["mean_model_loss"] = jnp.where(valid > 0, mean_losses, 0.0).sum() / valid.sum()
    out["consensus_distance"] = consensus_distance(params)
    return out
