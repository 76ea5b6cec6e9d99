"""The algorithm interface: an ``init``/``step`` pair of pure functions (optax style).

    state = algorithm.init(params, topology)               # params: node-stacked pytree [N, ...]
    state = algorithm.step(state, grads, topology, edge_active, node_active)
    params = algorithm.node_params(state)                   # node models [N, ...]

``grads`` are the per-node stochastic gradients at ``node_params(state)``;
``edge_active`` [E] is a boolean mask; ``node_active`` a boolean [N] mask or a
:class:`~ecl_jax.masks.Activity` (computes / answers; see :mod:`ecl_jax.masks`).
Hyperparameters are fixed when the algorithm is built (static, validated there);
only arrays flow through ``step``. A new rule is one ``step`` function plus an
``init``, written with :func:`for_each_node` (one node's local update) and
:class:`~ecl_jax.duals.EdgeDuals` (per-edge duals) as the built-in rules are; wrap them
with :class:`Algorithm` (see ``notebooks/02_new_update_rule``, docs/design.md).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol

import chex
import jax
import jax.numpy as jnp

from ecl_jax.communication import Messages
from ecl_jax.execution import run_invariant
from ecl_jax.layouts import expand
from ecl_jax.masks import computes
from ecl_jax.participation import check_masks
from ecl_jax.topology import Topology

Params = Any
State = Any

__all__ = ["Algorithm", "InitFn", "StepFn", "NodeParamsFn", "keep_inactive", "for_each_node", "node_mean", "materialized", "check_node_stacked", "check_masks", "constant_dtype", "tree_constant_dtype"]


class InitFn(Protocol):
    """``init(params, topology) -> state``: the state of every node from node-stacked params [N, ...]."""

    def __call__(self, params: Params, topology: Topology) -> State: ...


class StepFn(Protocol):
    """``step(state, grads, topology, edge_active, node_active) -> state``: one step of every node.

    ``grads`` [N, ...] are the per-node gradients at ``node_params(state)``; ``edge_active``
    bool [E] the edges the schedule opens; ``node_active`` bool [N] or an
    :class:`~ecl_jax.masks.Activity`. A rule passes the masks on to the primitives
    (:func:`for_each_node`, :func:`~ecl_jax.graph_ops.exchanging_edges`,
    :meth:`~ecl_jax.duals.EdgeDuals.exchange`), which check and apply them.
    """

    def __call__(self, state: State, grads: Params, topology: Topology, edge_active: jax.Array,
                 node_active: Any) -> State: ...


class NodeParamsFn(Protocol):
    """``node_params(state) -> params [N, ...]``: the models the nodes evaluate."""

    def __call__(self, state: State) -> Params: ...


class Algorithm(NamedTuple):
    """A decentralised training rule as pure functions (typed by :class:`InitFn`,
    :class:`StepFn` and :class:`NodeParamsFn`, as optax types its pair).

    Attributes:
      name: short identifier used in logs and plots.
      init: ``(params [N, ...], topology) -> state``.
      step: ``(state, grads, topology, edge_active [E], node_active [N] or Activity) -> state``.
      node_params: ``state -> params [N, ...]`` (the models the nodes evaluate).
      config: the static hyperparameters (a frozen dataclass), for logs.
      messages: what one exchange sends (:class:`~ecl_jax.communication.Messages`), so the
        engine counts messages and bytes; None: the rule does not say and nothing is counted.
    """

    name: str
    init: InitFn
    step: StepFn
    node_params: NodeParamsFn
    config: Any = None
    messages: Messages | None = None


def constant_dtype(dtype: Any) -> jnp.dtype:
    """The dtype the step constants of a leaf of ``dtype`` are computed in (lr, eta_i,
    mixing and loss weights): the params' own dtype, at least float32.

    Float64 params get float64 constants (a float64 run is float64 end to end), float32
    params float32 ones; bfloat16/float16 params get float32 constants, rounded once to
    the leaf's dtype where they meet it. A non-float dtype gives float32.
    """
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        return jnp.dtype(jnp.float32)
    return jnp.promote_types(dtype, jnp.float32)


def tree_constant_dtype(tree: Any) -> jnp.dtype:
    """:func:`constant_dtype` of the widest leaf of ``tree`` (float32 for an empty tree)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return constant_dtype(jnp.result_type(*leaves)) if leaves else jnp.dtype(jnp.float32)


def keep_inactive(new: Any, old: Any, node_active: jax.Array) -> Any:
    """Per node: ``new`` where the node computes, ``old`` where it skipped the step
    (``node_active``: a bool [N] mask or a :class:`~ecl_jax.masks.Activity`).

    Works on any pytree whose leaves have the node axis first.
    """
    node_active = computes(node_active)
    return jax.tree_util.tree_map(lambda n, o: jnp.where(expand(node_active, n), n, o), new, old)


def materialized(fn: Callable[..., Any], *args: Any, token: jax.Array) -> Any:
    """``fn(*args)``, computed once into buffers of its own (a fusion boundary).

    XLA:CPU fuses a cheap elementwise producer into *every* consumer and drops
    ``lax.optimization_barrier`` before fusion. When a step's new primal feeds both the
    new parameters and a dual exchange that reads it at shifted positions, the primal is
    then recomputed inside each consumer and the loop-carried parameters and duals are
    copied every iteration. A conditional is a boundary XLA does not fuse across, so on
    the CPU backend ``fn`` runs as ``lax.cond(token >= 0, fn, fn, ...)``; ``token`` is a
    traced scalar the compiler cannot fold (the step counter, a gradient entry); both
    branches compute ``fn``, so its value never matters. Rules call it through
    :func:`for_each_node`; what it saves on the CPU is in BENCHMARKS.md ("What changed in
    the code"). Other backends get ``fn(*args)`` (a conditional on a GPU costs a predicate
    transfer to the host).
    """
    if jax.default_backend() != "cpu":
        return fn(*args)
    # Both branches compute fn, so the result is right whatever the predicate says.
    # run_invariant: under a batch of runs a batched predicate would make the conditional a
    # select computing both branches (twice the work) and fusing across them (no boundary)
    return jax.lax.cond(run_invariant(jnp.asarray(token) >= 0), fn, fn, *args)


def _computing(node_active: Any, n_nodes: int | None) -> jax.Array:
    """The bool [N] mask of the nodes that compute (``node_active``: bool [N] or an
    :class:`~ecl_jax.masks.Activity`), asserted to be bool of length ``n_nodes`` (None: any)."""
    active = computes(node_active)
    chex.assert_shape(active, (n_nodes,))
    chex.assert_type(active, bool)
    return active


def for_each_node(fn: Callable[..., Any], *args: Any, node_active: jax.Array | None = None, keep: Any = None) -> Any:
    """``vmap(fn)(*args)``: ``fn`` is ONE node's local update, written for unstacked arguments
    (its model, its gradient, its eta_i, ...); every leaf of ``args`` has the node axis first.

    With ``node_active`` [N] (or an :class:`~ecl_jax.masks.Activity`: its ``computes``, checked
    here to be bool [N]) and ``keep`` (a tree shaped like the result, e.g. the current params),
    a node where ``node_active`` is False returns its ``keep`` leaves instead.

    The result is computed once into buffers of its own (:func:`materialized`): the exchange
    that reads it at other nodes' positions then neither recomputes it nor stops the duals
    from updating in place. Use it for the local update of every rule. An argument may be a
    function of no arguments returning a node-stacked tree (``duals.signed_sum``): it is
    evaluated inside that boundary, so its result feeds the update without being stored.
    """

    lazy = {i: a for i, a in enumerate(args) if callable(a)}
    arrays = [a for a in args if not callable(a)]

    def local(active, keep, *arrays):
        given = iter(arrays)
        new = jax.vmap(fn)(*(lazy[i]() if i in lazy else next(given) for i in range(len(args))))
        return new if keep is None else keep_inactive(new, keep, active)

    leaves = jax.tree_util.tree_leaves(arrays)
    token = leaves[0].reshape(-1)[0]
    if node_active is None:
        active = jnp.ones((), bool)
    else:  # the node mask is checked here, at the rule's boundary
        active = _computing(node_active, leaves[0].shape[0])
    return materialized(local, active, keep, *arrays, token=token)


def node_mean(tree: Any, node_active: Any) -> tuple[Any, jax.Array]:
    """((1/|C|) sum_{i in C} x_i with a node axis of size 1 kept, |C|) for every leaf of ``tree``
    [N, ...], C the nodes that compute (``node_active``: bool [N] or an
    :class:`~ecl_jax.masks.Activity`, checked here); 0 where no node computes."""
    leaves = jax.tree_util.tree_leaves(tree)
    active = _computing(node_active, leaves[0].shape[0] if leaves else None)
    count = active.sum()  # integer: exact, cast to each leaf's dtype
    mean = jax.tree_util.tree_map(
        lambda g: jnp.where(expand(active, g), g, 0).sum(0, keepdims=True) / jnp.maximum(count, 1).astype(g.dtype), tree)
    return mean, count


def check_node_stacked(params: Params, topology: Topology, what: str = "params") -> None:
    """Every leaf must have the node axis N first."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != topology.n_nodes:
            raise ValueError(
                f"{what} leaf {jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}; "
                f"every leaf needs the node axis first, of size N={topology.n_nodes}"
            )
