"""The training engine: T steps of any algorithm as one compiled ``lax.scan``.

``Engine`` is the loop; each job of a step lives in the module named after it
(docs/design.md#engine-one-step):

    keys        = step_keys(carry.key, t)                        participation.py
    clocks, who = participation.draw(carry.clocks, keys, t)      (edge mask [E], node mask [N], own steps)
    order       = sampler.advance(carry.order, key, who.own_step) sampling.py
    x, y, w     = sampler.sample(data, keys.batch, ...)           (x [N, B, ...], y [N, B])
    grads       = node_gradients(loss_fn, params, x, y, w, ...)   execution.py
    state       = algorithm.step(state, grads, topology, who.edge_active, who.node_active)
    traffic     = communication.count(traffic, algorithm.messages, ...)   communication.py (messages per edge)

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

import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax import communication
from ecl_jax.algorithms.base import Algorithm, tree_constant_dtype
from ecl_jax.algorithms.hyperparams import set_hyperparams
from ecl_jax.errors import DataError
from ecl_jax.execution import (UNROLL_MAX_NODES, ExecutionPlan, Executor, check_run_axis, check_runs_fit,
                               check_settings, make_plan, minibatch_bytes, node_gradients, one_run, run_bytes,
                               run_invariant, steps_done, tree_bytes)
from ecl_jax.masks import AllNodes, AlwaysEdges
from ecl_jax.metrics import consensus_distance, mean_params, model_metrics
from ecl_jax.models import mixed_precision
from ecl_jax.node_data import NodeData, check_finite, stack_node_data
from ecl_jax.participation import Participation, step_keys
from ecl_jax.runtime import FreeRunning
from ecl_jax.sampling import EpochOrder, Sampler, epoch_rows, next_epoch_order
from ecl_jax.topology import Topology
from ecl_jax.validation import check_int, is_int

__all__ = [
    "NodeData", "Carry", "Engine", "ExecutionPlan", "make_plan", "stack_node_data", "consensus_distance",
    "mean_params", "mixed_precision", "EpochOrder", "next_epoch_order", "epoch_rows", "UNROLL_MAX_NODES",
]

LossFn = Callable[..., jax.Array]


def _per_run(name: str, value, runs: int) -> jax.Array:
    """A swept hyperparameter's values, one per run ([R])."""
    value = jnp.asarray(value)
    if value.shape != (runs,):
        raise ValueError(f"hyperparams[{name!r}] must hold one value per run, shape ({runs},); got shape {value.shape}")
    return value


class Carry(NamedTuple):
    """Everything a run needs to continue: algorithm state, next step, base key, the node
    clocks of a free-running runtime (:class:`~ecl_jax.runtime.Clocks`; ``()`` in lockstep),
    the nodes' epoch permutations (:class:`~ecl_jax.sampling.EpochOrder` with
    ``epoch_samples``, else ``()``) and the messages delivered so far
    (:class:`~ecl_jax.communication.Traffic`; ``()`` for a rule without ``messages``)."""

    state: Any
    step: jax.Array
    key: jax.Array
    clocks: Any = ()
    order: Any = ()
    traffic: Any = ()


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
    runs: None (one run) or R: R runs as one program (seeds, docs/design.md#many-runs-in-one-program):
      params [R, N, ...] and keys [R]; every leaf of the carry and every metric gains a
      leading run axis, the data is shared, and run r equals the run of ``params[r]``
      and ``key[r]`` alone (to float tolerance).
    data_per_run: with ``runs``, the training data has a leading run axis too
      (x [R, N, M, ...], y [R, N, M], count [R, N]: each run its own split, one M for all).
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
    runs: int | None = None
    data_per_run: bool = False

    def __post_init__(self):  # every setting validated once, here; the cached properties keep the parts built
        object.__setattr__(self, "batch_size", self.sampler.batch_size)
        object.__setattr__(self, "epoch_samples", self.sampler.epoch_samples)
        object.__setattr__(self, "eval_every", check_int("eval_every", self.eval_every, minimum=1))
        check_settings(self.loop, self.node_grads)
        _ = self.participation  # built (so validated) now, not at the first step
        if not isinstance(self.donate, bool):
            raise ValueError(f"donate must be True or False, got {self.donate!r}")
        if self.runs is not None and not (is_int(self.runs) and self.runs >= 1):
            raise ValueError(f"runs must be None (one run) or an integer >= 1, got {self.runs!r}")
        if not isinstance(self.data_per_run, bool) or (self.data_per_run and self.runs is None):
            raise ValueError(f"data_per_run must be True (with runs: data [R, N, M, ...]) or False, got "
                             f"{self.data_per_run!r} with runs={self.runs!r}")

    @functools.cached_property
    def sampler(self) -> Sampler:
        """How each node draws its minibatch (:mod:`ecl_jax.sampling`)."""
        return Sampler(self.batch_size, self.epoch_samples)

    @functools.cached_property
    def participation(self) -> Participation:
        """Who takes part in each step (:mod:`ecl_jax.participation`)."""
        return Participation(self.topology, self.edge_schedule, self.node_schedule, self.runtime)

    @functools.cached_property
    def _executor(self) -> Executor:  # the compiled chunk, step and metrics, built on first use
        return Executor(self._chunk_impl, self._step_impl, self.metrics, eval_every=self.eval_every,
                        donate=self.donate, runs=self.runs, data_per_run=self.data_per_run)

    # ----------------------------------------------------------- public API
    @property
    def trace_count(self) -> int:
        """How many times the chunk (or, in a python loop, step) function was traced (= compiled) so far."""
        return self._executor.traces

    def init(self, params, key: jax.Array, hyperparams: dict | None = None) -> Carry:
        """Initial carry from node-stacked params and a PRNG key.

        With ``donate`` every leaf is a fresh buffer (no alias of ``params`` or of
        another leaf), so the carry can be donated to :meth:`run_chunk`. With ``runs``,
        params [R, N, ...] and keys [R] give R carries stacked on a leading run axis.
        ``hyperparams``: {name: value} for an algorithm built with
        :func:`~ecl_jax.algorithms.hyperparams.inject_hyperparams`, a scalar each (one run)
        or [R] (one value per run: a sweep, docs/design.md#sweeps).
        """
        if self.runs is None:
            carry = self._init_one(params, key, hyperparams)
        else:
            check_run_axis(self.runs, params, key)
            hyper = None if hyperparams is None else {k: _per_run(k, v, self.runs) for k, v in hyperparams.items()}
            carry = jax.vmap(self._init_one)(params, jnp.asarray(key), hyper)
        return jax.tree_util.tree_map(jnp.copy, carry) if self.donate else carry

    def _init_one(self, params, key: jax.Array, hyperparams: dict | None = None) -> Carry:
        state = self.algorithm.init(params, self.topology)
        if hyperparams is not None:
            state = set_hyperparams(state, hyperparams)
        n, messages = self.topology.n_nodes, self.algorithm.messages
        traffic = () if messages is None else communication.init(self.topology, messages)
        return Carry(state, jnp.zeros((), jnp.int32), key, self.participation.init(key), self.sampler.init(n, key),
                     traffic)

    def _check_memory(self, params, key: jax.Array, data: NodeData, carry: Carry | None = None) -> None:
        """With ``runs``: refuse, before anything is compiled, a batch estimated not to fit
        (:func:`~ecl_jax.execution.check_runs_fit`, naming the largest that fits)."""
        if self.runs is None:
            return
        if carry is None:
            check_run_axis(self.runs, params, key)
        one = one_run(carry) if carry is not None else jax.eval_shape(self._init_one, *one_run((params, key)))
        params = jax.eval_shape(self.algorithm.node_params, one.state)
        own = tree_bytes(one_run(data)) if self.data_per_run else 0  # each run's split
        check_runs_fit(self.runs, run_bytes(one, params, minibatch_bytes(self._one_split(data), self.batch_size)) + own)

    def _one_split(self, data: NodeData) -> NodeData:
        """Run 0's training data (the data itself unless ``data_per_run``); shapes only."""
        return one_run(data) if self.data_per_run else data

    def check_data(self, data: NodeData) -> NodeData:
        """``data`` as device arrays, checked against the topology's N (:meth:`NodeData.for_nodes`);
        with ``data_per_run`` every run's split, after the run axis (size R)."""
        if not self.data_per_run:
            return NodeData(*data).for_nodes(self.topology.n_nodes)
        data = NodeData(*(jnp.asarray(a) for a in data))
        for name, a in zip(NodeData._fields, data):
            if a.ndim < 1 or a.shape[0] != self.runs:
                raise DataError(f"data_per_run: data.{name} needs a leading run axis of size {self.runs} "
                                f"(x [R, N, M, ...], count [R, N]); got shape {a.shape}")
        for r in range(self.runs):
            NodeData(*(a[r] for a in data)).for_nodes(self.topology.n_nodes)
        return data

    def plan(self, carry: Carry, data: NodeData) -> ExecutionPlan:
        """The :class:`~ecl_jax.execution.ExecutionPlan` :meth:`run_chunk` uses for this carry and data.

        :func:`~ecl_jax.execution.make_plan` of the ``loop`` and ``node_grads`` settings,
        the backend, N and, for ``loop="auto"`` on CPU only, whether one node's loss
        contains a convolution (:func:`~ecl_jax.execution.has_convolutions` on node 0's
        abstract params and a batch of rows). Only shapes and dtypes of ``carry`` and
        ``data`` are read (the arrays may be donated already); the test is memoised on them.
        """
        backend = jax.default_backend()
        conv = None
        if self.loop == "auto" and backend == "cpu":
            data = self._one_split(data)
            conv = self._executor.has_convolutions(self.loss_fn, self.algorithm.node_params, carry.state,
                                                   data.x, data.y, self.batch_size or data.x.shape[1])
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
        total = jnp.asarray(total_steps, jnp.int32)
        return self._executor.lower(self.plan(carry, data), carry, data, total, eval_data)

    def time_chunk(self, carry: Carry, data: NodeData, total_steps: int | jax.Array, eval_data=None, *,
                   steps: int = 2) -> float:
        """Seconds one chunk (``eval_every`` steps and the metrics) takes, timed on a copy of
        ``carry`` (:meth:`~ecl_jax.execution.Executor.time`: a later run compiles nothing
        more). The runner's estimate before a long run (docs/outputs.md#long-runs)."""
        steps = check_int("steps", steps, minimum=1)
        total = jnp.asarray(total_steps, jnp.int32)
        return self._executor.time(self.plan(carry, data), carry, data, total, eval_data, steps)

    def run_chunk(self, carry: Carry, data: NodeData, total_steps: int | jax.Array, eval_data=None, *,
                  plan: ExecutionPlan | None = None):
        """Advance ``eval_every`` steps (stopping at ``total_steps``); return (carry, metrics), by
        ``plan`` (default :meth:`plan`; :meth:`run` computes it once per run)."""
        total = jnp.asarray(total_steps, jnp.int32)
        return self._executor.run(self.plan(carry, data) if plan is None else plan, carry, data, total, eval_data)

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
        hyperparams: dict | None = None,
    ) -> tuple[Carry, dict]:
        """Run until ``steps`` total steps (continuing ``carry`` if given, else from
        ``init(params, key, hyperparams)``).

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
        self._check_memory(params, key, data, carry)
        if carry is None:
            carry = self.init(params, key, hyperparams)
        history: list[dict] = []
        plan = self.plan(carry, data) if steps_done(carry) < steps else None  # shapes are fixed during a run
        while steps_done(carry) < steps:
            carry, metrics = self.run_chunk(carry, data, steps, eval_data, plan=plan)
            metrics = jax.device_get(metrics)
            history.append(metrics)
            for cb in callbacks:
                cb(carry, metrics)
        stacked = {k: np.stack([h[k] for h in history]) for k in history[0]} if history else {}
        return carry, stacked

    def message_bytes(self, carry: Carry) -> int | None:
        """Bytes of one message of the algorithm (:func:`~ecl_jax.communication.payload_bytes`
        of one node's params, in their dtypes); None when the rule does not say what it sends."""
        node0 = self._executor.node0(self.algorithm.node_params, carry.state)
        return communication.payload_bytes(self.algorithm.messages, node0)

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
        if self.algorithm.messages is not None:  # so far, per node (bytes: message_bytes)
            out["messages_sent"], out["messages_received"] = communication.per_node(carry.traffic, self.topology)
        if self.eval_fn is not None:
            out.update(self.eval_fn(params, eval_data))
        return out

    # ------------------------------------------------------------ internals
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
        traffic = carry.traffic
        if self.algorithm.messages is not None:
            traffic = communication.count(traffic, self.algorithm.messages, self.topology, who.edge_active,
                                          who.node_active)
        return Carry(state, carry.step + 1, carry.key, clocks, order, traffic)

    def _step_impl(self, carry: Carry, data: NodeData, total_steps: jax.Array, plan: ExecutionPlan) -> Carry:
        """One step (python loop plan; :meth:`run_chunk` stops at ``total_steps`` on the host)."""
        self._executor.traces += 1
        return self._one_step(carry, data, plan)

    def _chunk_impl(self, carry: Carry, data: NodeData, total_steps: jax.Array, eval_data, plan: ExecutionPlan):
        """``eval_every`` steps as one ``lax.scan`` (steps past ``total_steps`` skipped), then the metrics."""
        self._executor.traces += 1

        def body(c, _):
            c = jax.lax.cond(run_invariant(c.step < total_steps), lambda cc: self._one_step(cc, data, plan),
                             lambda cc: cc, c)  # every run of a batch is at the same step
            return c, None

        carry, _ = jax.lax.scan(body, carry, None, length=self.eval_every)
        return carry, self.metrics(carry, data, eval_data)
