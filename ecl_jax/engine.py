"""The training engine: T steps of any algorithm as one compiled ``lax.scan``.

``Engine`` is the loop; each job of a step lives in the module named after it
(docs/design.md#engine-one-step):

    keys        = step_keys(carry.key, t)                        participation.py
    clocks, who = participation.draw(carry.clocks, keys, t)      (edge mask [E], node mask [N], own steps)
    order       = sampler.advance(carry.order, key, who.own_step) sampling.py
    x, y, w     = sampler.sample(data, keys.batch, ...)           (x [N, B, ...], y [N, B])
    grads       = node_gradients(loss_fn, params, x, y, w, ...)   execution.py
    state       = algorithm.step(state, grads, topology, who.edge_active, who.node_active)

Every ``eval_every`` steps the chunk returns the metrics (metrics.py). A run calls the
same compiled chunk function repeatedly (the last chunk masks the steps past T), so it
compiles once whatever T. Randomness depends only on (key, step), so a run resumed
from a saved :class:`Carry` is bit-identical to an uninterrupted one. How a chunk
executes is an :class:`~ecl_jax.execution.ExecutionPlan` (:meth:`Engine.plan`), a
static argument of the compiled functions (docs/design.md#engine-execution-plan).
The names of those modules that users import (``NodeData``, ``EpochOrder``,
``make_plan``, ``consensus_distance``, ...) are re-exported here.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax.algorithms.base import Algorithm, tree_constant_dtype
from ecl_jax.execution import UNROLL_MAX_NODES, ExecutionPlan, check_settings, has_convolutions, make_plan, node_gradients
from ecl_jax.masks import AllNodes, AlwaysEdges
from ecl_jax.metrics import consensus_distance, mean_params, model_metrics
from ecl_jax.models import mixed_precision
from ecl_jax.node_data import NodeData, check_finite, stack_node_data
from ecl_jax.participation import Participation, step_keys
from ecl_jax.runtime import FreeRunning
from ecl_jax.sampling import EpochOrder, Sampler, epoch_rows, next_epoch_order
from ecl_jax.topology import Topology
from ecl_jax.validation import check_int

__all__ = [
    "NodeData", "Carry", "Engine", "ExecutionPlan", "make_plan", "stack_node_data", "consensus_distance",
    "mean_params", "mixed_precision", "EpochOrder", "next_epoch_order", "epoch_rows", "UNROLL_MAX_NODES",
]

LossFn = Callable[..., jax.Array]


class Carry(NamedTuple):
    """Everything a run needs to continue: algorithm state, next step, base key, the node
    clocks of a free-running runtime (:class:`~ecl_jax.runtime.Clocks`; ``()`` in lockstep)
    and the nodes' epoch permutations (:class:`~ecl_jax.sampling.EpochOrder` with
    ``epoch_samples``, else ``()``)."""

    state: Any
    step: jax.Array
    key: jax.Array
    clocks: Any = ()
    order: Any = ()


def _spec_key(tree) -> tuple:
    """Hashable (structure, shapes, dtypes) of a pytree of arrays."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((tuple(a.shape), a.dtype) if hasattr(a, "dtype") else (type(a), a) for a in leaves)


def _abstract(a) -> jax.ShapeDtypeStruct:
    """The shape and dtype of an array (or Python scalar), without reading its buffers."""
    return jax.ShapeDtypeStruct(jnp.shape(a), a.dtype if hasattr(a, "dtype") else jnp.result_type(a))


class _Compiled:
    """An engine's compiled chunk, step and metrics functions (built once per engine, on first
    use), how often the chunk or step was traced, and the convolution test per input shapes."""

    def __init__(self, engine: "Engine"):
        donate = (0,) if engine.donate else ()
        self.traces = 0
        self.convolutions: dict = {}
        self.chunk = jax.jit(engine._chunk_impl, static_argnames=("plan",), donate_argnums=donate)
        self.step = jax.jit(engine._step_impl, static_argnames=("plan",), donate_argnums=donate)
        self.metrics = jax.jit(engine.metrics)


@dataclasses.dataclass(frozen=True, eq=False)
class Engine:
    """Runs an :class:`~ecl_jax.algorithms.Algorithm` on a topology.

    loss_fn: ``loss_fn(params, x, y, rng) -> per-example losses [B]`` for one node's
      (unstacked) params; ``rng`` is a PRNG key during training and None in evaluation.
    batch_size, epoch_samples: each node's minibatch (:class:`~ecl_jax.sampling.Sampler`:
      B rows drawn uniformly with replacement; None = full local data every step; with
      ``epoch_samples`` L, a walk through a fresh permutation of 0..L-1 per epoch of L / B
      own steps, the ICML21 code's sampler; docs/algorithms.md#minibatch-sampling).
    edge_schedule, node_schedule, runtime: who takes part in each step
      (:class:`~ecl_jax.participation.Participation`): lockstep (``runtime=None``, the
      node schedule says who computes) or a :class:`~ecl_jax.runtime.FreeRunning` runtime
      (each step one tick, every node on its own clock, ``node_schedule`` stays
      :class:`~ecl_jax.masks.AllNodes`; docs/algorithms.md#free-running-runtime).
    eval_every, eval_fn, train_metrics: a metric point every ``eval_every`` steps
      (:mod:`ecl_jax.metrics`); ``eval_fn(node_params, eval_data) -> dict`` adds to it.
    loop, node_grads: "auto" or explicit (:func:`~ecl_jax.execution.make_plan`).
    donate: :meth:`run_chunk` consumes the carry it is given (its buffers are reused for
      the new carry, so a chunk holds one copy of the state; keep using the returned
      carry). False keeps the old carry valid. :meth:`init` copies the params, so the
      caller's arrays are never consumed.
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

    def __post_init__(self):  # every setting validated once, here; the cached properties keep the parts built
        object.__setattr__(self, "batch_size", self.sampler.batch_size)
        object.__setattr__(self, "epoch_samples", self.sampler.epoch_samples)
        object.__setattr__(self, "eval_every", check_int("eval_every", self.eval_every, minimum=1))
        check_settings(self.loop, self.node_grads)
        _ = self.participation  # built (so validated) now, not at the first step
        if not isinstance(self.donate, bool):
            raise ValueError(f"donate must be True or False, got {self.donate!r}")

    @functools.cached_property
    def sampler(self) -> Sampler:
        """How each node draws its minibatch (:mod:`ecl_jax.sampling`)."""
        return Sampler(self.batch_size, self.epoch_samples)

    @functools.cached_property
    def participation(self) -> Participation:
        """Who takes part in each step (:mod:`ecl_jax.participation`)."""
        return Participation(self.topology, self.edge_schedule, self.node_schedule, self.runtime)

    @functools.cached_property
    def _compiled(self) -> _Compiled:
        return _Compiled(self)

    # ----------------------------------------------------------- public API
    @property
    def trace_count(self) -> int:
        """How many times the chunk (or, in a python loop, step) function was traced (= compiled) so far."""
        return self._compiled.traces

    def init(self, params, key: jax.Array) -> Carry:
        """Initial carry from node-stacked params and a PRNG key.

        With ``donate`` every leaf is a fresh buffer (no alias of ``params`` or of
        another leaf), so the carry can be donated to :meth:`run_chunk`.
        """
        state = self.algorithm.init(params, self.topology)
        n = self.topology.n_nodes
        carry = Carry(state, jnp.zeros((), jnp.int32), key, self.participation.init(key), self.sampler.init(n, key))
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
        """The :class:`~ecl_jax.execution.ExecutionPlan` :meth:`run_chunk` uses for this carry and data.

        :func:`~ecl_jax.execution.make_plan` of the ``loop`` and ``node_grads`` settings,
        the backend, N and, for ``loop="auto"`` on CPU only, whether one node's loss
        contains a convolution (:func:`~ecl_jax.execution.has_convolutions` on node 0's
        abstract params and a batch of rows). Only shapes and dtypes of ``carry`` and
        ``data`` are read (the arrays may be donated already); the test is memoised on them.
        """
        backend = jax.default_backend()
        conv = self._has_convolutions(carry, data) if self.loop == "auto" and backend == "cpu" else None
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
            return self._compiled.chunk.lower(carry, data, total, eval_data, plan=plan)
        return self._compiled.step.lower(carry, data, total, plan=plan)

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
            chunk = self._compiled.chunk.lower(carry, data, total, eval_data, plan=plan).compile()
            t0 = time.perf_counter()
            jax.block_until_ready(chunk(copy(carry), data, total, eval_data))
            return time.perf_counter() - t0
        c = jax.block_until_ready(self._compiled.step(copy(carry), data, total, plan=plan))  # compiles, warms up
        t0 = time.perf_counter()
        for _ in range(steps):
            c = self._compiled.step(c, data, total, plan=plan)
        jax.block_until_ready(c)
        per_step = (time.perf_counter() - t0) / steps
        jax.block_until_ready(self._compiled.metrics(c, data, eval_data))  # compiles
        t0 = time.perf_counter()
        jax.block_until_ready(self._compiled.metrics(c, data, eval_data))
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
            return self._compiled.chunk(carry, data, total, eval_data, plan=plan)
        # The step bound is checked on the host (one sync per chunk), not with a lax.cond
        # inside the compiled step: XLA:CPU runs a convolution inside a cond branch as
        # slowly as inside a loop body (BENCHMARKS.md, "What changed in the code").
        remaining = int(total) - int(carry.step)
        for _ in range(min(self.eval_every, max(remaining, 0))):
            carry = self._compiled.step(carry, data, total, plan=plan)
        return carry, self._compiled.metrics(carry, data, eval_data)

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

    def sample_batch(self, data: NodeData, key: jax.Array, dtype: Any = jnp.float32,
                     order: EpochOrder | None = None, own_step: Any = 0):
        """The engine's minibatch of one step (:meth:`~ecl_jax.sampling.Sampler.sample`)."""
        return self.sampler.sample(data, key, dtype, () if order is None else order, own_step)

    def metrics(self, carry: Carry, data: NodeData, eval_data=None) -> dict:
        """The metrics of the current models (:mod:`ecl_jax.metrics`), the step, the free
        clocks' local steps and ``eval_fn``'s metrics."""
        params = self.algorithm.node_params(carry.state)
        out = {"step": carry.step, **model_metrics(self.loss_fn, params, data, train_metrics=self.train_metrics)}
        if self.runtime is not None:  # each node's own local steps so far (ticks are carry.step)
            out["local_steps"] = carry.clocks.steps
        if self.eval_fn is not None:
            out.update(self.eval_fn(params, eval_data))
        return out

    # ------------------------------------------------------------ internals
    def _has_convolutions(self, carry: Carry, data: NodeData) -> bool:
        """Whether ``loss_fn`` on one node's abstract inputs contains a convolution (memoised)."""
        memo = self._compiled.convolutions
        key = _spec_key((carry.state, data.x, data.y))
        if key not in memo:
            state = jax.tree_util.tree_map(_abstract, carry.state)
            params = jax.eval_shape(self.algorithm.node_params, state)
            node0 = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), params)
            rows = self.batch_size or data.x.shape[1]
            x = jax.ShapeDtypeStruct((rows,) + tuple(data.x.shape[2:]), jnp.result_type(data.x))
            y = jax.ShapeDtypeStruct((rows,) + tuple(data.y.shape[2:]), jnp.result_type(data.y))
            memo[key] = has_convolutions(self.loss_fn, node0, x, y)
        return memo[key]

    def _one_step(self, carry: Carry, data: NodeData, plan: ExecutionPlan) -> Carry:
        """One step: participants, minibatch, per-node gradients, the algorithm's step."""
        keys = step_keys(carry.key, carry.step)
        clocks, who = self.participation.draw(carry.clocks, keys, carry.step)
        order = self.sampler.advance(carry.order, carry.key, who.own_step)
        params = self.algorithm.node_params(carry.state)
        x, y, w = self.sampler.sample(data, keys.batch, tree_constant_dtype(params), order, who.own_step)
        rngs = jax.random.split(keys.dropout, self.topology.n_nodes)
        grads = node_gradients(self.loss_fn, params, x, y, w, rngs, plan.node_grads)
        state = self.algorithm.step(carry.state, grads, self.topology, who.edge_active, who.node_active)
        return Carry(state, carry.step + 1, carry.key, clocks, order)

    def _step_impl(self, carry: Carry, data: NodeData, total_steps: jax.Array, plan: ExecutionPlan) -> Carry:
        """One step (python loop plan; :meth:`run_chunk` stops at ``total_steps`` on the host)."""
        self._compiled.traces += 1
        return self._one_step(carry, data, plan)

    def _chunk_impl(self, carry: Carry, data: NodeData, total_steps: jax.Array, eval_data, plan: ExecutionPlan):
        """``eval_every`` steps as one ``lax.scan`` (steps past ``total_steps`` skipped), then the metrics."""
        self._compiled.traces += 1

        def body(c, _):
            c = jax.lax.cond(c.step < total_steps, lambda cc: self._one_step(cc, data, plan), lambda cc: cc, c)
            return c, None

        carry, _ = jax.lax.scan(body, carry, None, length=self.eval_every)
        return carry, self.metrics(carry, data, eval_data)
