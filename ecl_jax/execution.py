"""How a chunk of steps executes: the :class:`ExecutionPlan` and the per-node gradients
(docs/design.md#engine-execution-plan).

Two choices, both pure functions of the settings, the backend, N and the model:

* the loop: one compiled ``lax.scan`` per chunk, or a compiled step called from Python
  (XLA:CPU runs convolutions inside loop bodies many times slower, jax-ml/jax#12868);
* the per-node gradients: one vmapped program, or N unrolled ones in the same program (a
  vmapped convolution is a grouped one, several times slower on XLA:CPU).

Whether the model has convolutions is read from the equations of one node's loss on
abstract inputs (:func:`has_convolutions`), never from its printed text. An
:class:`Executor` holds an engine's compiled functions and runs, lowers or times a chunk
by a plan; with ``runs`` it runs R runs at once, every compiled function vmapped over the
carry's leading run axis (the data shared), and :func:`check_runs_fit` refuses a batch that
will not fit before anything is compiled.
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

from ecl_jax.errors import MemoryLimitError

__all__ = ["ExecutionPlan", "Executor", "make_plan", "check_settings", "has_convolutions", "node_gradients",
           "steps_done", "run_invariant", "check_run_axis", "one_run", "minibatch_bytes", "run_bytes",
           "available_bytes", "check_runs_fit", "tree_bytes", "UNROLL_MAX_NODES", "LOOPS", "NODE_GRADS"]

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


def _spec_key(tree: Any) -> tuple:
    """Hashable (structure, shapes, dtypes) of a pytree of arrays."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((tuple(a.shape), a.dtype) if hasattr(a, "dtype") else (type(a), a) for a in leaves)


def _abstract(a: Any) -> jax.ShapeDtypeStruct:
    """The shape and dtype of an array (or Python scalar), without reading its buffers."""
    return jax.ShapeDtypeStruct(jnp.shape(a), a.dtype if hasattr(a, "dtype") else jnp.result_type(a))


def _drop_axis(a: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:
    """An abstract array without its leading axis (one node's, or one run's, slice)."""
    return jax.ShapeDtypeStruct(a.shape[1:], a.dtype)


def _over_runs(fn: Callable, data_per_run: bool = False) -> Callable:
    """``fn(carry, data, *shared, **static)`` vmapped over the carry's leading run axis; the
    data too with ``data_per_run`` (each run its own split), else shared like the other
    arguments (the step bound, eval data) and the static ones."""
    def over_runs(carry, data, *shared, **static):
        return jax.vmap(lambda c, d: fn(c, d, *shared, **static), in_axes=(0, 0 if data_per_run else None))(carry, data)
    return over_runs


@jax.custom_batching.custom_vmap
def run_invariant(x: jax.Array) -> jax.Array:
    """``x``, a value every run of a batch holds alike (the step counter) or whose value does
    not matter (a predicate both of whose branches compute the same); under the ``vmap`` over
    runs its first entry, unbatched, so a ``lax.cond`` on it stays a conditional instead of a
    select that computes both branches. Give it the predicate (a bool, which carries no
    tangent), not a float: it has no differentiation rule of its own."""
    return x


@run_invariant.def_vmap
def _run_invariant_rule(axis_size: int, in_batched: list[bool], x: jax.Array):
    return (x[0] if in_batched[0] else x), False


def steps_done(carry: Any) -> int:
    """The steps a carry has taken (``carry.step``: a scalar, or [R] in a batch of runs, all at
    the same step)."""
    return int(np.max(np.asarray(carry.step)))


class Executor:
    """Runs chunks by a plan: an engine's compiled chunk, step and metrics functions (jitted
    once, on construction), how often the chunk or step was traced (the engine's ``_impl``
    functions count it) and the convolution test memoised per input shapes.

    ``chunk_fn(carry, data, total, eval_data, plan) -> (carry, metrics)`` is ``eval_every``
    steps as one ``lax.scan``; ``step_fn(carry, data, total, plan) -> carry`` one step;
    ``metrics_fn(carry, data, eval_data) -> dict``. With ``donate`` the chunk and the step
    consume the carry they are given. With ``runs`` R, each is ``vmap``-ped over the carry's
    leading run axis (with ``data_per_run`` over the data's too; every other argument
    shared), so R runs are one program and every metric gains a run axis [R, ...].
    """

    def __init__(self, chunk_fn: Callable, step_fn: Callable, metrics_fn: Callable, *, eval_every: int,
                 donate: bool, runs: int | None = None, data_per_run: bool = False):
        donated = (0,) if donate else ()
        self.eval_every = eval_every
        self.runs = runs
        self.traces = 0
        self._convolutions: dict = {}
        over = (lambda fn: _over_runs(fn, data_per_run)) if runs is not None else (lambda fn: fn)
        self.chunk = jax.jit(over(chunk_fn), static_argnames=("plan",), donate_argnums=donated)
        self.step = jax.jit(over(step_fn), static_argnames=("plan",), donate_argnums=donated)
        self.metrics = jax.jit(over(metrics_fn))

    def node0(self, node_params: Callable, state: Any) -> Any:
        """Node 0's abstract params (``node_params(state)``, of run 0 with ``runs``); shapes only."""
        state = jax.tree_util.tree_map(_abstract, state) if self.runs is None else one_run(state)
        return jax.tree_util.tree_map(_drop_axis, jax.eval_shape(node_params, state))

    def has_convolutions(self, loss_fn: Callable, node_params: Callable, state: Any, x: Any, y: Any,
                         rows: int) -> bool:
        """:func:`has_convolutions` of ``loss_fn`` on node 0's abstract params
        (``node_params(state)``, of run 0 with ``runs``) and ``rows`` abstract rows of
        ``x``/``y`` [N, M, ...]; only shapes and dtypes are read (the arrays may be donated),
        memoised on them."""
        key = _spec_key((state, x, y))
        if key not in self._convolutions:
            node0 = self.node0(node_params, state)
            rows_of = lambda a: jax.ShapeDtypeStruct((rows,) + tuple(a.shape[2:]), jnp.result_type(a))
            self._convolutions[key] = has_convolutions(loss_fn, node0, rows_of(x), rows_of(y))
        return self._convolutions[key]

    def lower(self, plan: ExecutionPlan, carry: Any, data: Any, total: jax.Array, eval_data: Any) -> jax.stages.Lowered:
        """The program :meth:`run` compiles: the whole chunk (scan plan) or the single step (python plan)."""
        if plan.loop == "scan":
            return self.chunk.lower(carry, data, total, eval_data, plan=plan)
        return self.step.lower(carry, data, total, plan=plan)

    def run(self, plan: ExecutionPlan, carry: Any, data: Any, total: jax.Array, eval_data: Any) -> tuple[Any, dict]:
        """``eval_every`` steps (stopping at ``total``) and the metrics: one compiled chunk, or
        the compiled step called from Python, then the compiled metrics."""
        if plan.loop == "scan":
            return self.chunk(carry, data, total, eval_data, plan=plan)
        # The step bound is checked on the host (one sync per chunk), not with a lax.cond
        # inside the compiled step: XLA:CPU runs a convolution inside a cond branch as
        # slowly as inside a loop body (BENCHMARKS.md, "What changed in the code").
        remaining = int(total) - steps_done(carry)
        for _ in range(min(self.eval_every, max(remaining, 0))):
            carry = self.step(carry, data, total, plan=plan)
        return carry, self.metrics(carry, data, eval_data)

    def time(self, plan: ExecutionPlan, carry: Any, data: Any, total: jax.Array, eval_data: Any,
             steps: int) -> float:
        """Seconds one chunk takes, timed on a copy of ``carry`` after compiling what :meth:`run`
        runs (a later run compiles nothing more): one whole chunk with a scan plan; with a
        python plan one warm-up step, ``steps`` timed steps scaled to ``eval_every`` and one
        metrics call."""
        copy = lambda c: jax.tree_util.tree_map(jnp.copy, c)
        if plan.loop == "scan":
            chunk = self.lower(plan, carry, data, total, eval_data).compile()
            t0 = time.perf_counter()
            jax.block_until_ready(chunk(copy(carry), data, total, eval_data))
            return time.perf_counter() - t0
        c = jax.block_until_ready(self.step(copy(carry), data, total, plan=plan))  # compiles, warms up
        t0 = time.perf_counter()
        for _ in range(steps):
            c = self.step(c, data, total, plan=plan)
        jax.block_until_ready(c)
        per_step = (time.perf_counter() - t0) / steps
        jax.block_until_ready(self.metrics(c, data, eval_data))  # compiles
        t0 = time.perf_counter()
        jax.block_until_ready(self.metrics(c, data, eval_data))
        return per_step * self.eval_every + time.perf_counter() - t0


def tree_bytes(tree: Any) -> int:
    """The bytes of a pytree's arrays (concrete or abstract)."""
    return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in jax.tree_util.tree_leaves(tree))


def check_run_axis(runs: int, params: Any, key: Any) -> None:
    """ValueError unless every leaf of ``params`` and ``key`` has the leading run axis of size
    ``runs`` (params [R, N, ...]; one PRNG key per run: [R] typed or [R, 2] raw keys)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != runs:
            raise ValueError(f"runs={runs}: params need a leading run axis of size {runs} ([runs, N, ...]), "
                             f"but params{jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}")
    key = jnp.asarray(key)
    single = 0 if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else 1  # a raw key is [2] uint32
    if key.ndim != single + 1 or key.shape[0] != runs:
        raise ValueError(f"runs={runs}: give one PRNG key per run (e.g. jax.random.split(key, {runs})), "
                         f"got key shape {tuple(key.shape)}")


def one_run(tree: Any) -> Any:
    """The abstract shapes of one run of a batch (every leaf without its leading run axis)."""
    return jax.tree_util.tree_map(lambda a: _drop_axis(_abstract(a)), tree)


def minibatch_bytes(data: Any, batch_size: int | None) -> int:
    """Bytes of one minibatch of node data x [N, M, ...], y [N, M, ...]: ``batch_size`` rows
    per node (None: all M)."""
    rows = batch_size or data.x.shape[1]
    return sum(int(np.prod(a.shape)) // a.shape[1] * rows * np.dtype(a.dtype).itemsize for a in (data.x, data.y))


def run_bytes(carry: Any, params: Any, batch_bytes: int) -> int:
    """Estimated bytes one run holds while a chunk runs: its carry twice (the chunk's input and
    output), one gradient per parameter (``params``: the node models [N, ...]) and one
    minibatch (``batch_bytes``). Shapes only (abstract arrays do); activations are not counted,
    so it is a lower bound (docs/design.md#many-runs-in-one-program)."""
    return 2 * tree_bytes(carry) + tree_bytes(params) + int(batch_bytes)


def available_bytes() -> int | None:
    """Free memory of the default device: ``bytes_limit - bytes_in_use`` where the backend
    reports them (GPU, TPU), else the host's ``MemAvailable`` (/proc/meminfo); None if unknown."""
    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_runs_fit(runs: int, per_run: int) -> None:
    """:class:`~ecl_jax.errors.MemoryLimitError` when ``runs`` runs of ``per_run`` bytes each
    (:func:`run_bytes`) exceed :func:`available_bytes`, naming the largest batch that fits."""
    free = available_bytes()
    if free is None or runs * per_run <= free:
        return
    fits = free // max(per_run, 1)
    gib = lambda b: f"{b / 2**30:,.2f} GiB"
    advice = (f"at most {fits} runs fit: run fewer at once (e.g. runs={fits}) and the rest after"
              if fits >= 1 else "not even one run fits: use fewer nodes, a smaller model or a smaller batch")
    raise MemoryLimitError(f"{runs} runs need about {gib(runs * per_run)} ({gib(per_run)} each: the carry twice, "
                           f"one gradient and one minibatch per run) but {gib(free)} are free on "
                           f"{jax.devices()[0].platform}; {advice}")
