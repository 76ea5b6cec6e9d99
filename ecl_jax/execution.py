"""How a chunk of steps executes: the :class:`ExecutionPlan` and the per-node gradients
(docs/design.md#engine-execution-plan).

Two choices, both pure functions of the settings, the backend, N and the model:

* the loop: one compiled ``lax.scan`` per chunk, or a compiled step called from Python
  (XLA:CPU runs convolutions inside loop bodies many times slower, jax-ml/jax#12868);
* the per-node gradients: one vmapped program, or N unrolled ones in the same program (a
  vmapped convolution is a grouped one, several times slower on XLA:CPU).

Whether the model has convolutions is read from the equations of one node's loss on
abstract inputs (:func:`has_convolutions`), never from its printed text.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.extend as jex
import jax.numpy as jnp

__all__ = ["ExecutionPlan", "make_plan", "check_settings", "has_convolutions", "node_gradients",
           "UNROLL_MAX_NODES", "LOOPS", "NODE_GRADS"]

UNROLL_MAX_NODES = 128
"""The largest N for which ``node_grads="auto"`` unrolls the per-node gradients."""

LOOPS = ("auto", "scan", "python")
NODE_GRADS = ("auto", "vmap", "unrolled")


class ExecutionPlan(NamedTuple):
    """How :meth:`~ecl_jax.engine.Engine.run_chunk` executes a chunk.

    loop: "scan" (the chunk is one compiled ``lax.scan``) or "python" (a compiled step
      called ``eval_every`` times from Python).
    node_grads: "vmap" (one batched gradient program) or "unrolled" (one gradient per
      node in the same program).
    reason: why, in words (which setting was explicit, or what "auto" found).
    """

    loop: str
    node_grads: str
    reason: str

    def __str__(self) -> str:
        grads = "vmapped" if self.node_grads == "vmap" else "unrolled"
        return f"{self.loop} loop, {grads} node gradients ({self.reason})"


def check_settings(loop: str, node_grads: str) -> None:
    """ValueError naming a ``loop`` or ``node_grads`` setting that is not one of :data:`LOOPS`
    / :data:`NODE_GRADS`."""
    if loop not in LOOPS:
        raise ValueError(f"loop must be 'auto', 'scan' or 'python', got {loop!r}")
    if node_grads not in NODE_GRADS:
        raise ValueError(f"node_grads must be 'auto', 'vmap' or 'unrolled', got {node_grads!r}")


def make_plan(loop: str, node_grads: str, *, backend: str, n_nodes: int,
              has_convolutions: bool | None) -> ExecutionPlan:
    """The execution plan for the settings ``loop`` / ``node_grads`` ("auto" or explicit).

    A pure function: an explicit setting is always kept. ``loop="auto"`` picks "python"
    only on the CPU backend when one node's loss contains a convolution
    (``has_convolutions``; not read otherwise). ``node_grads="auto"`` unrolls in a python
    loop for N <= :data:`UNROLL_MAX_NODES`. Figures: BENCHMARKS.md.
    """
    check_settings(loop, node_grads)
    if loop != "auto":
        chosen, why = loop, f"loop={loop!r} set explicitly"
    elif backend != "cpu":
        chosen, why = "scan", f"backend {backend}: only XLA:CPU slows convolutions inside loop bodies"
    elif has_convolutions:
        chosen, why = "python", ("the model has convolutions and XLA:CPU runs convolutions inside loop bodies "
                                 "many times slower (jax-ml/jax#12868)")
    else:
        chosen, why = "scan", "dense model, no convolutions"
    reasons = [why]
    if node_grads != "auto":
        grads = node_grads
        reasons.append(f"node_grads={node_grads!r} set explicitly")
    elif chosen == "python" and n_nodes <= UNROLL_MAX_NODES:
        grads = "unrolled"
        reasons.append(f"python loop with N = {n_nodes} <= {UNROLL_MAX_NODES}: one gradient per node "
                       "(a vmapped convolution is a slower grouped one)")
    elif chosen == "python":
        grads = "vmap"
        reasons.append(f"N = {n_nodes} > {UNROLL_MAX_NODES}: unrolled node gradients would compile too slowly")
    else:
        grads = "vmap"
    return ExecutionPlan(chosen, grads, "; ".join(reasons))


def _uses(jaxpr: Any, primitive: str) -> bool:
    """Whether ``jaxpr`` or any jaxpr nested in its equations (jit, cond, scan, custom_vjp
    bodies) has an equation of ``primitive``."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == primitive:
            return True
        if any(_uses(sub.jaxpr if hasattr(sub, "jaxpr") else sub, primitive)
               for sub in jex.core.jaxprs_in_params(eqn.params)):
            return True
    return False


def has_convolutions(loss_fn: Callable, params: Any, x: Any, y: Any) -> bool:
    """Whether ``loss_fn(params, x, y, None)`` contains a convolution, traced on the abstract
    inputs (shapes and dtypes only, e.g. ``jax.ShapeDtypeStruct``); nothing is computed."""
    closed = jax.make_jaxpr(loss_fn)(params, x, y, None)
    return _uses(closed.jaxpr, "conv_general_dilated")


def node_gradients(loss_fn: Callable, params: Any, x: jax.Array, y: jax.Array, w: jax.Array,
                   rngs: jax.Array, node_grads: str) -> Any:
    """Per-node gradients [N, ...] of sum_b w_ib loss_fn(w_i, x_i, y_i, rng_i)_b: one vmapped
    program (``node_grads="vmap"``) or one gradient per node in the same program ("unrolled").

    ``w`` comes in the params' constant dtype; it is cast to the losses' dtype (which only
    matters for losses of another dtype, such as mixed precision's float32 losses)."""
    def node_loss(p, xb, yb, wb, rng):
        losses = loss_fn(p, xb, yb, rng)
        return jnp.sum(losses * wb.astype(losses.dtype))

    grad = jax.grad(node_loss)
    if node_grads == "vmap":
        return jax.vmap(grad)(params, x, y, w, rngs)
    n = w.shape[0]
    take = lambda i: jax.tree_util.tree_map(lambda a: a[i], (params, x, y, w, rngs))
    per_node = [grad(*take(i)) for i in range(n)]
    return jax.tree_util.tree_map(lambda *g: jnp.stack(g), *per_node)
