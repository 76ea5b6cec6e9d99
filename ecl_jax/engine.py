"""The training engine: T steps of any algorithm as one compiled ``lax.scan``.

Data flow of one step (docs/design.md#engine-one-step):

    key_t = fold_in(key, t) -> edge mask [E], node mask [N], minibatch indices, dropout keys
    x [N, B, ...], y [N, B]  (gathered on device from the node-stacked data)
    grads = vmap(grad(loss))(node_params, x, y)
    state = algorithm.step(state, grads, topology, edge_active, node_active)

Every ``eval_every`` steps the chunk returns metrics: each node's loss on its own
data f_i(w_i), the loss of the mean model on all data, the consensus distance
(1/N) sum_i ||w_i - w_bar||^2, and whatever ``eval_fn`` adds. A run calls the same
compiled chunk function repeatedly (the last chunk masks the steps past T), so it
compiles once whatever T. Randomness depends only on (key, step), so a run resumed
from a saved :class:`Carry` is bit-identical to an uninterrupted one.

How a chunk executes (one ``lax.scan`` or a Python loop over a compiled step; vmapped
or unrolled node gradients) is an :class:`ExecutionPlan`, stated by :meth:`Engine.plan`
and passed to the compiled functions as a static argument
(docs/design.md#engine-execution-plan). :class:`~ecl_jax.node_data.NodeData` and
:func:`~ecl_jax.node_data.stack_node_data` live in :mod:`ecl_jax.node_data` and are
re-exported here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax.algorithms.base import Algorithm, tree_constant_dtype
from ecl_jax.masks import Activity, AllNodes, AlwaysEdges, edges_on_clocks
from ecl_jax.node_data import NodeData, check_finite, stack_node_data
from ecl_jax.runtime import FreeRunning
from ecl_jax.topology import Topology
from ecl_jax.validation import check_int

__all__ = [
    "NodeData", "Carry", "Engine", "ExecutionPlan", "make_plan", "stack_node_data", "consensus_distance",
    "mean_params", "mixed_precision", "EpochOrder", "next_epoch_order", "epoch_rows",
]

LossFn = Callable[..., jax.Array]


class Carry(NamedTuple):
    """Everything a run needs to continue: algorithm state, next step, base key, the node
    clocks of a free-running runtime (:class:`~ecl_jax.runtime.Clocks`; ``()`` in lockstep)
    and the nodes' epoch permutations (:class:`EpochOrder` with ``epoch_samples``, else ``()``)."""

    state: Any
    step: jax.Array
    key: jax.Array
    clocks: Any = ()
    order: Any = ()


class EpochOrder(NamedTuple):
    """Each node's sampling order for its current epoch: ``perm`` [N, L] int32, a permutation
    of 0..L-1, and ``epoch`` [N] int32, the epoch it was drawn for."""

    perm: jax.Array
    epoch: jax.Array


def _draw_perms(key: jax.Array, epoch: jax.Array, length: int) -> jax.Array:
    """[N, L]: node i's permutation of 0..L-1 for its epoch ``epoch[i]`` (a function of key, i, epoch)."""
    def one(node, e):
        return jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, node), e), length)

    return jax.vmap(one)(jnp.arange(epoch.shape[0]), epoch).astype(jnp.int32)


def next_epoch_order(order: EpochOrder, key: jax.Array, own_step: Any, steps_per_epoch: int) -> EpochOrder:
    """``order`` with a fresh permutation (from ``key``, the node and the epoch only) for every
    node whose own step ``own_step`` (scalar or [N]) is in a later epoch than its permutation;
    the draws run only in a step where some node needs one."""
    n, length = order.perm.shape
    epoch = jnp.broadcast_to(jnp.asarray(own_step, jnp.int32), (n,)) // steps_per_epoch
    stale = epoch != order.epoch

    def redraw(o):
        fresh = _draw_perms(key, epoch, length)
        return EpochOrder(jnp.where(stale[:, None], fresh, o.perm), jnp.where(stale, epoch, o.epoch))

    return jax.lax.cond(stale.any(), redraw, lambda o: o, order)


def epoch_rows(order: EpochOrder, own_step: Any, count: jax.Array, batch_size: int) -> jax.Array:
    """[N, B] data rows of each node's own step s: positions (s mod S) B .. + B of its
    epoch permutation (S = L / B), modulo its data count ``count`` [N]."""
    n, length = order.perm.shape
    pos = jnp.broadcast_to(jnp.asarray(own_step, jnp.int32), (n,)) % (length // batch_size) * batch_size
    cols = pos[:, None] + jnp.arange(batch_size, dtype=jnp.int32)[None, :]
    return jnp.take_along_axis(order.perm, cols, axis=1) % count[:, None].astype(jnp.int32)


UNROLL_MAX_NODES = 128
"""The largest N for which ``node_grads="auto"`` unrolls the per-node gradients."""


class ExecutionPlan(NamedTuple):
    """How :meth:`Engine.run_chunk` executes a chunk (docs/design.md#engine-execution-plan).

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


def make_plan(loop: str, node_grads: str, *, backend: str, n_nodes: int,
              has_convolutions: bool | None) -> ExecutionPlan:
    """The execution plan for the settings ``loop`` / ``node_grads`` ("auto" or explicit).

    A pure function: an explicit setting is always kept. ``loop="auto"`` picks "python"
    only on the CPU backend when one node's loss contains a convolution
    (``has_convolutions``; not read otherwise): XLA:CPU runs convolutions inside loop
    bodies many times slower (jax-ml/jax#12868). ``node_grads="auto"`` unrolls in a python
    loop for N <= :data:`UNROLL_MAX_NODES` (a vmapped convolution is a grouped one, several
    times slower on XLA:CPU). Figures: BENCHMARKS.md; see docs/design.md#engine-execution-plan.
    """
    if loop not in ("auto", "scan", "python"):
        raise ValueError(f"loop must be 'auto', 'scan' or 'python', got {loop!r}")
    if node_grads not in ("auto", "vmap", "unrolled"):
        raise ValueError(f"node_grads must be 'auto', 'vmap' or 'unrolled', got {node_grads!r}")
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


def _spec_key(tree) -> tuple:
    """Hashable (structure, shapes, dtypes) of a pytree of arrays."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((tuple(a.shape), a.dtype) if hasattr(a, "dtype") else (type(a), a) for a in leaves)


def _abstract(a) -> jax.ShapeDtypeStruct:
    """The shape and dtype of an array (or Python scalar), without reading its buffers."""
    return jax.ShapeDtypeStruct(jnp.shape(a), a.dtype if hasattr(a, "dtype") else jnp.result_type(a))


def mean_params(params):
    """Average model w_bar = (1/N) sum_i w_i."""
    return jax.tree_util.tree_map(lambda w: w.mean(0), params)


def mixed_precision(loss_fn: LossFn, compute_dtype: Any = jnp.bfloat16) -> LossFn:
    """Mixed precision: run ``loss_fn`` with float params and inputs cast to
    ``compute_dtype`` (bfloat16 by default); losses come back as float32.

    Params, gradients (the cast's transpose returns them in the params' dtype) and all
    algorithm state stay float32, so only the forward/backward pass is low precision::

        Engine(algorithm, topology, mixed_precision(loss_fn), ...)
    """
    dt = jnp.dtype(compute_dtype)
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"compute_dtype must be a floating dtype such as bfloat16, got {compute_dtype!r}")

    def cast(a):
        return a.astype(dt) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a

    def wrapped(params, x, y, rng=None):
        losses = loss_fn(jax.tree_util.tree_map(cast, params), cast(x), y, rng)
        return losses.astype(jnp.float32)

    return wrapped


def consensus_distance(params) -> jax.Array:
    """(1/N) sum_i ||w_i - w_bar||^2 over all parameter leaves."""
    leaves = jax.tree_util.tree_leaves(params)
    return sum(((w - w.mean(0, keepdims=True)) ** 2).reshape(w.shape[0], -1).sum(1).mean() for w in leaves)


_EPOCH_SALT = 0x65706F


def _epoch_key(key: jax.Array) -> jax.Array:
    """The run's key for epoch permutations (folded twice: never a step's key fold_in(key, t))."""
    return jax.random.fold_in(jax.random.fold_in(key, _EPOCH_SALT), _EPOCH_SALT)


@dataclasses.dataclass(frozen=True, eq=False)
class Engine:
    """Runs an :class:`~ecl_jax.algorithms.Algorithm` on a topology.

    loss_fn: ``loss_fn(params, x, y, rng) -> per-example losses [B]`` for one node's
      (unstacked) params; ``rng`` is a PRNG key during training and None in evaluation.
    batch_size: samples per node per step, drawn uniformly with replacement from the
      node's data; None = full local data every step (deterministic gradients).
    epoch_samples: None (the uniform draws above) or L, a multiple of ``batch_size``: each
      node walks through a fresh random permutation of the indices 0..L-1 every L / B of its
      own steps (an *epoch*), taking them modulo its data count: without replacement
      within an epoch when L <= count (the ICML21 code's sampler, L = 12,800;
      docs/algorithms.md#minibatch-sampling).
    eval_fn: optional ``eval_fn(node_params, eval_data) -> dict of arrays`` called at
      every metric point (e.g. test accuracy per node); ``eval_data`` is passed to
      :meth:`run`.
    loop: "scan" (the chunk is one ``lax.scan``), "python" (a compiled step called
      ``eval_every`` times), or "auto" (see :meth:`plan`).
    node_grads: how the per-node gradients are computed: "vmap" (one batched program),
      "unrolled" (one gradient per node in the same program, no batching: vmapped
      convolutions become grouped convolutions, slower than separate ones on XLA:CPU;
      BENCHMARKS.md), or "auto" (unrolled in python loop mode,
      i.e. convolutions on CPU, for N <= 128 where the compile time stays moderate).
    runtime: None (lockstep: every node makes step t at step t, ``node_schedule`` says who
      computes) or a :class:`~ecl_jax.runtime.FreeRunning` runtime: each engine step is one
      tick, every node runs on its own clock, and ``edge_schedule`` counts each node's own
      steps (:func:`~ecl_jax.masks.edges_on_clocks`); ``node_schedule`` must stay
      :class:`~ecl_jax.masks.AllNodes` (docs/algorithms.md#free-running-runtime).
    donate: :meth:`run_chunk` consumes the carry it is given (its buffers are reused for
      the new carry, so a chunk holds one copy of the state instead of two; keep using
      the returned carry). False keeps the old carry valid. :meth:`init` copies the
      params, so the caller's arrays are never consumed.

    The choice between loop and gradient forms is an :class:`ExecutionPlan`
    (:meth:`plan`), passed to the compiled functions as a static argument
    (docs/design.md#engine-execution-plan).
    """

    algorithm: Algorithm
    topology: Topology
    loss_fn: LossFn
    batch_size: int | None = 32
    epoch_samples: int | None = None
    edge_schedule: Callable = AlwaysEdges()
    node_schedule: Callable = AllNodes()
    eval_every: int = 100
    eval_fn: Callable | None = None
    train_metrics: bool = True
    loop: str = "auto"
    node_grads: str = "auto"
    runtime: FreeRunning | None = None
    donate: bool = True

    def __post_init__(self):
        batch = check_int("batch_size", self.batch_size, minimum=1, allow_none=True, note="full batch")
        object.__setattr__(self, "batch_size", batch)
        epoch = check_int("epoch_samples", self.epoch_samples, minimum=1, allow_none=True, note="uniform draws")
        if epoch is not None and (batch is None or epoch % batch):
            raise ValueError(f"epoch_samples={epoch} must be a multiple of batch_size={batch} "
                             f"(one epoch = epoch_samples / batch_size steps); use None for uniform draws")
        object.__setattr__(self, "epoch_samples", epoch)
        object.__setattr__(self, "eval_every", check_int("eval_every", self.eval_every, minimum=1))
        if self.loop not in ("auto", "scan", "python"):
            raise ValueError(f"loop must be 'auto', 'scan' or 'python', got {self.loop!r}")
        if self.node_grads not in ("auto", "vmap", "unrolled"):
            raise ValueError(f"node_grads must be 'auto', 'vmap' or 'unrolled', got {self.node_grads!r}")
        if self.runtime is not None:
            if not callable(getattr(self.runtime, "tick", None)) or not callable(getattr(self.runtime, "init", None)):
                raise ValueError(f"runtime must be None (lockstep) or a FreeRunning runtime, got {self.runtime!r}")
            if not isinstance(self.node_schedule, AllNodes):
                raise ValueError(f"a free-running runtime decides who computes from the node clocks; node_schedule "
                                 f"must stay AllNodes(), got {self.node_schedule!r} (use the runtime's "
                                 f"failure_prob, speed or pauses instead)")
            self.runtime.speeds(self.topology.n_nodes)  # per-node speeds must match N
        if not isinstance(self.donate, bool):
            raise ValueError(f"donate must be True or False, got {self.donate!r}")
        object.__setattr__(self, "_traces", [0])
        object.__setattr__(self, "_conv_memo", {})  # memo of _loss_has_convolutions by shapes and dtypes
        donate = (0,) if self.donate else ()
        object.__setattr__(self, "_chunk_jit", jax.jit(self._chunk_impl, static_argnames=("plan",),
                                                       donate_argnums=donate))
        object.__setattr__(self, "_step_jit", jax.jit(self._step_impl, static_argnames=("plan",),
                                                      donate_argnums=donate))
        object.__setattr__(self, "_metrics_jit", jax.jit(self.metrics))

    # ----------------------------------------------------------- public API
    @property
    def trace_count(self) -> int:
        """How many times the chunk (or, in a python loop, step) function was traced (= compiled) so far."""
        return self._traces[0]

    def init(self, params, key: jax.Array) -> Carry:
        """Initial carry from node-stacked params and a PRNG key.

        With ``donate`` every leaf is a fresh buffer (no alias of ``params`` or of
        another leaf), so the carry can be donated to :meth:`run_chunk`.
        """
        state = self.algorithm.init(params, self.topology)
        n = self.topology.n_nodes
        clocks = () if self.runtime is None else self.runtime.init(n, key)
        order = ()
        if self.epoch_samples is not None:  # epoch 0's permutations
            zeros = jnp.zeros((n,), jnp.int32)
            order = EpochOrder(_draw_perms(_epoch_key(key), zeros, self.epoch_samples), zeros)
        carry = Carry(state, jnp.zeros((), jnp.int32), key, clocks, order)
        return jax.tree_util.tree_map(jnp.copy, carry) if self.donate else carry

    def check_data(self, data: NodeData) -> NodeData:
        """``data`` as device arrays, checked against the topology's N (:meth:`NodeData.validate`)."""
        data = NodeData(*(jnp.asarray(a) for a in data))
        n = self.topology.n_nodes
        for name, a in zip(("x", "y", "count"), data):
            if a.shape[0] != n:
                raise ValueError(f"data.{name} has leading size {a.shape[0]}, expected N={n} nodes")
        chex.assert_rank(data.count, 1)
        if data.x.shape[1] != data.y.shape[1]:
            raise ValueError(f"data.x has {data.x.shape[1]} rows per node but data.y has {data.y.shape[1]}")
        return data.validate()

    def plan(self, carry: Carry, data: NodeData) -> ExecutionPlan:
        """The :class:`ExecutionPlan` :meth:`run_chunk` uses for this carry and data.

        A pure function (:func:`make_plan`) of the engine's ``loop`` and ``node_grads``
        settings, the backend, N and, for ``loop="auto"`` on CPU only, whether one node's
        loss contains a convolution: ``jax.make_jaxpr`` of ``loss_fn`` on abstract inputs
        (node 0's params from ``algorithm.node_params(carry.state)``, a batch of x / y
        rows, rng None). Only shapes and dtypes of ``carry`` and ``data`` are read (the
        arrays may be donated already); the convolution test is memoised on them.
        """
        backend = jax.default_backend()
        conv = self._loss_has_convolutions(carry, data) if self.loop == "auto" and backend == "cpu" else None
        return make_plan(self.loop, self.node_grads, backend=backend, n_nodes=self.topology.n_nodes,
                         has_convolutions=conv)

    def lower(self, carry: Carry, data: NodeData, total_steps: int | jax.Array,
              eval_data=None) -> jax.stages.Lowered:
        """Lower, without running, the program :meth:`run_chunk` compiles for this carry and data.

        With a scan plan that is the whole chunk (``eval_every`` steps and the metrics);
        with a python plan, the single step it calls in a loop. ``.compile().as_text()``
        gives the optimised HLO (tests, experiments/bench.py). Lowering traces like a
        first call, so it counts in :attr:`trace_count` unless the call was traced already.
        """
        plan = self.plan(carry, data)
        total = jnp.asarray(total_steps, jnp.int32)
        if plan.loop == "scan":
            return self._chunk_jit.lower(carry, data, total, eval_data, plan=plan)
        return self._step_jit.lower(carry, data, total, plan=plan)

    def time_chunk(self, carry: Carry, data: NodeData, total_steps: int | jax.Array, eval_data=None, *,
                   steps: int = 2) -> float:
        """Seconds one chunk (``eval_every`` steps and the metrics) takes, measured without changing the run.

        Compiles what :meth:`run_chunk` runs (a later run finds it compiled: no second
        compile), then times it on a copy of ``carry``: with a scan plan one whole chunk;
        with a python plan one warm-up step, ``steps`` timed steps scaled to ``eval_every``,
        and one metrics call. Costs one chunk (scan) or ``steps + 1`` steps (python) of
        compute and a second copy of the carry while it runs. The runner uses it to say,
        before a long run starts, how long it will take (docs/outputs.md#long-runs).
        """
        import time

        steps = check_int("steps", steps, minimum=1)
        plan = self.plan(carry, data)
        total = jnp.asarray(total_steps, jnp.int32)
        copy = lambda c: jax.tree_util.tree_map(jnp.copy, c)
        if plan.loop == "scan":
            chunk = self._chunk_jit.lower(carry, data, total, eval_data, plan=plan).compile()
            t0 = time.perf_counter()
            jax.block_until_ready(chunk(copy(carry), data, total, eval_data))
            return time.perf_counter() - t0
        c = jax.block_until_ready(self._step_jit(copy(carry), data, total, plan=plan))  # compiles, warms up
        t0 = time.perf_counter()
        for _ in range(steps):
            c = self._step_jit(c, data, total, plan=plan)
        jax.block_until_ready(c)
        per_step = (time.perf_counter() - t0) / steps
        jax.block_until_ready(self._metrics_jit(c, data, eval_data))  # compiles
        t0 = time.perf_counter()
        jax.block_until_ready(self._metrics_jit(c, data, eval_data))
        return per_step * self.eval_every + time.perf_counter() - t0

    def run_chunk(self, carry: Carry, data: NodeData, total_steps: int | jax.Array, eval_data=None, *,
                  plan: ExecutionPlan | None = None):
        """Advance ``eval_every`` steps (stopping at ``total_steps``); return (carry, metrics).

        Executes ``plan`` (default :meth:`plan` (carry, data); :meth:`run` computes it once
        per run): one compiled ``lax.scan``, or a compiled step called from Python followed
        by the compiled metrics.
        """
        total = jnp.asarray(total_steps, jnp.int32)
        if plan is None:
            plan = self.plan(carry, data)
        if plan.loop == "scan":
            return self._chunk_jit(carry, data, total, eval_data, plan=plan)
        # The step bound is checked on the host (one sync per chunk), not with a lax.cond
        # inside the compiled step: XLA:CPU runs a convolution inside a cond branch as
        # slowly as inside a loop body (BENCHMARKS.md, "What changed in the code").
        remaining = int(total) - int(carry.step)
        for _ in range(min(self.eval_every, max(remaining, 0))):
            carry = self._step_jit(carry, data, total, plan=plan)
        return carry, self._metrics_jit(carry, data, eval_data)

    def run(
        self,
        params,
        data: NodeData,
        steps: int,
        key: jax.Array,
        *,
        eval_data=None,
        carry: Carry | None = None,
        callbacks: Sequence[Callable[[Carry, dict], Any]] = (),
    ) -> tuple[Carry, dict]:
        """Run until ``steps`` total steps (continuing ``carry`` if given, else from ``init(params, key)``).

        Returns the final carry and a dict of metric arrays stacked over metric points
        (``step`` included). After every chunk the metrics are moved to the host and each
        ``cb(carry, metrics)`` of ``callbacks`` runs, in order (progress, checkpoints:
        :mod:`ecl_jax.callbacks`); a callback stops the run by raising, and the
        exception propagates. See docs/design.md#engine-chunks-and-the-loop.
        """
        steps = check_int("steps", steps, minimum=0)
        if callable(callbacks) or not all(callable(cb) for cb in callbacks):
            raise TypeError(f"callbacks must be a sequence of callables cb(carry, metrics), got {callbacks!r}")
        callbacks = tuple(callbacks)
        data = self.check_data(data)
        check_finite("eval_data", eval_data)
        if carry is None:
            carry = self.init(params, key)
        history: list[dict] = []
        plan = self.plan(carry, data) if int(carry.step) < steps else None  # shapes are fixed during a run
        while int(carry.step) < steps:
            carry, metrics = self.run_chunk(carry, data, steps, eval_data, plan=plan)
            metrics = jax.device_get(metrics)
            history.append(metrics)
            for cb in callbacks:
                cb(carry, metrics)
        stacked = {k: np.stack([h[k] for h in history]) for k in history[0]} if history else {}
        return carry, stacked

    # ------------------------------------------------------------ internals
    def sample_batch(self, data: NodeData, key: jax.Array, dtype: Any = jnp.float32,
                     order: EpochOrder | None = None, own_step: Any = 0):
        """Per-node minibatch (x [N, B, ...], y [N, B, ...], weights [N, B]). With
        ``epoch_samples`` the rows come from ``order`` at each node's ``own_step`` (scalar
        or [N]; :func:`epoch_rows`), else from uniform draws with ``key``.

        The weights (1/m_i on node i's valid rows with ``batch_size=None``, else 1/B) are
        computed in ``dtype``; a step passes the params' constant dtype (float64 in a
        float64 run, see :func:`~ecl_jax.algorithms.base.constant_dtype`).
        """
        n, m = data.x.shape[:2]
        if self.batch_size is None:
            valid = jnp.arange(m)[None, :] < data.count[:, None]
            # Padding rows are replaced by row 0 (weight 0), so a loss that is not finite
            # on padding cannot turn the gradient into NaN (0 * inf).
            rows = jnp.where(valid, jnp.arange(m)[None, :], 0)
            take = jax.vmap(lambda a, i: a[i])
            w = valid.astype(dtype) / data.count[:, None].astype(dtype)
            return take(data.x, rows), take(data.y, rows), w
        if self.epoch_samples is None:
            u = jax.random.uniform(key, (n, self.batch_size))
            idx = jnp.minimum((u * data.count[:, None]).astype(jnp.int32), data.count[:, None] - 1)
        else:
            if order is None:
                raise ValueError("sample_batch with epoch_samples needs the carry's EpochOrder (order=carry.order)")
            idx = epoch_rows(order, own_step, data.count, self.batch_size)
        take = jax.vmap(lambda a, i: a[i])
        w = jnp.full((n, self.batch_size), 1.0 / self.batch_size, dtype)
        return take(data.x, idx), take(data.y, idx), w

    def _loss_has_convolutions(self, carry: Carry, data: NodeData) -> bool:
        """Whether ``loss_fn`` on one node's abstract inputs contains a convolution (memoised)."""
        key = _spec_key((carry.state, data.x, data.y))
        if key not in self._conv_memo:
            state = jax.tree_util.tree_map(_abstract, carry.state)
            params = jax.eval_shape(self.algorithm.node_params, state)
            node0 = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), params)
            rows = self.batch_size or data.x.shape[1]
            x = jax.ShapeDtypeStruct((rows,) + tuple(data.x.shape[2:]), jnp.result_type(data.x))
            y = jax.ShapeDtypeStruct((rows,) + tuple(data.y.shape[2:]), jnp.result_type(data.y))
            jaxpr = jax.make_jaxpr(self.loss_fn)(node0, x, y, None)
            self._conv_memo[key] = "conv_general_dilated" in str(jaxpr)  # nested jaxprs print inline
        return self._conv_memo[key]

    def _node_loss(self, params, x, y, w, rng):
        # w comes in the params' constant dtype; the cast only matters for losses of another
        # dtype (mixed_precision's float32 losses of float64 params, say).
        losses = self.loss_fn(params, x, y, rng)
        return jnp.sum(losses * w.astype(losses.dtype))

    def _one_step(self, carry: Carry, data: NodeData, plan: ExecutionPlan) -> Carry:
        topo = self.topology
        k = jax.random.fold_in(carry.key, carry.step)
        k_edge, k_node, k_batch, k_drop = jax.random.split(k, 4)
        clocks = carry.clocks
        own_step = carry.step
        if self.runtime is None:
            edge_active = self.edge_schedule(k_edge, carry.step, topo)
            node_active = self.node_schedule(k_node, carry.step, topo.n_nodes)
        else:  # one tick of the free-running clocks
            clocks, tick = self.runtime.tick(carry.clocks, k_node)
            edge_active = edges_on_clocks(self.edge_schedule, k_edge, carry.step, tick.own_step, tick.computes, topo)
            node_active = Activity(tick.computes, tick.answers)
            own_step = tick.own_step
        order = carry.order
        if self.epoch_samples is not None:  # a node entering a new epoch gets a fresh permutation
            order = next_epoch_order(order, _epoch_key(carry.key), own_step, self.epoch_samples // self.batch_size)
        params = self.algorithm.node_params(carry.state)
        # loss weights in the params' dtype
        x, y, w = self.sample_batch(data, k_batch, tree_constant_dtype(params), order, own_step)
        rngs = jax.random.split(k_drop, topo.n_nodes)
        grads = self._node_gradients(params, x, y, w, rngs, plan.node_grads)
        state = self.algorithm.step(carry.state, grads, topo, edge_active, node_active)
        return Carry(state, carry.step + 1, carry.key, clocks, order)

    def metrics(self, carry: Carry, data: NodeData, eval_data=None) -> dict:
        """Metrics of the current models (see module docstring)."""
        params = self.algorithm.node_params(carry.state)
        out = {"step": carry.step}
        if self.train_metrics:
            m = data.x.shape[1]
            valid = (jnp.arange(m)[None, :] < data.count[:, None]).astype(jnp.float32)
            per_node = jax.vmap(lambda p, x, y: self.loss_fn(p, x, y, None))(params, data.x, data.y)
            node_loss = jnp.where(valid > 0, per_node, 0.0).sum(1) / data.count
            wbar = mean_params(params)
            mean_losses = jax.vmap(lambda x, y: self.loss_fn(wbar, x, y, None))(data.x, data.y)
            out["node_loss"] = node_loss
            out["mean_model_loss"] = jnp.where(valid > 0, mean_losses, 0.0).sum() / valid.sum()
        out["consensus_distance"] = consensus_distance(params)
        if self.runtime is not None:  # each node's own local steps so far (ticks are carry.step)
            out["local_steps"] = carry.clocks.steps
        if self.eval_fn is not None:
            out.update(self.eval_fn(params, eval_data))
        return out

    def _node_gradients(self, params, x, y, w, rngs, node_grads: str):
        """Per-node gradients [N, ...]: one vmapped program or N unrolled ones (the plan's ``node_grads``)."""
        grad = jax.grad(self._node_loss)
        if node_grads == "vmap":
            return jax.vmap(grad)(params, x, y, w, rngs)
        take = lambda i: jax.tree_util.tree_map(lambda a: a[i], (params, x, y, w, rngs))
        per_node = [grad(*take(i)) for i in range(self.topology.n_nodes)]
        return jax.tree_util.tree_map(lambda *g: jnp.stack(g), *per_node)

    def _step_impl(self, carry: Carry, data: NodeData, total_steps: jax.Array, plan: ExecutionPlan) -> Carry:
        """One step (python loop plan; :meth:`run_chunk` stops at ``total_steps`` on the host)."""
        self._traces[0] += 1
        return self._one_step(carry, data, plan)

    def _chunk_impl(self, carry: Carry, data: NodeData, total_steps: jax.Array, eval_data, plan: ExecutionPlan):
        """``eval_every`` steps as one ``lax.scan`` (steps past ``total_steps`` skipped), then the metrics."""
        self._traces[0] += 1

        def body(c, _):
            c = jax.lax.cond(c.step < total_steps, lambda cc: self._one_step(cc, data, plan), lambda cc: cc, c)
            return c, None

        carry, _ = jax.lax.scan(body, carry, None, length=self.eval_every)
        return carry, self.metrics(carry, data, eval_data)
