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
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax.algorithms.base import Algorithm, constant_dtype
from ecl_jax.errors import DataError
from ecl_jax.masks import AllNodes, AlwaysEdges
from ecl_jax.topology import Topology

__all__ = ["NodeData", "Carry", "Engine", "stack_node_data", "consensus_distance", "mean_params", "mixed_precision"]

LossFn = Callable[..., jax.Array]


class NodeData(NamedTuple):
    """Node-stacked training data: x [N, M, ...], y [N, M, ...], count [N] (valid rows;
    rows at and beyond ``count[i]`` are padding and never sampled).

    Building one checks nothing (it is a pytree: ``jax.tree_util`` rebuilds it with
    tracers, ``ShapeDtypeStruct`` or any other leaves). :meth:`checked` /
    :meth:`validate` check concrete arrays; :meth:`Engine.run`,
    :func:`stack_node_data` and :func:`ecl_jax.partition.node_data` call it.
    """

    x: jax.Array
    y: jax.Array
    count: jax.Array

    @classmethod
    def checked(cls, x, y, count) -> NodeData:
        """``NodeData(x, y, count).validate()``."""
        return cls(x, y, count).validate()

    def validate(self) -> NodeData:
        """Check the stacking and the counts of concrete arrays; return ``self``.

        The leading (node) axes of x, y and count must agree, x and y must hold the same
        number M of rows per node, and every ``count[i]`` must be an integer in 1..M.
        Nothing is checked when a leaf is a tracer (inside ``jit`` / ``vmap``); the count
        values only when they are concrete. Raises :class:`~ecl_jax.errors.DataError` (a
        ``ValueError``) naming the node and the value.
        """
        if any(isinstance(a, jax.core.Tracer) for a in self):
            return self
        shapes = {k: tuple(a.shape) if hasattr(a, "shape") else np.shape(a) for k, a in zip(self._fields, self)}
        for k, rank in (("x", "[N, M, ...]"), ("y", "[N, M, ...]"), ("count", "[N]")):
            bad_rank = len(shapes[k]) != 1 if k == "count" else len(shapes[k]) < 2
            if bad_rank:
                raise DataError(f"NodeData.{k} must be node-stacked {rank}, got shape {shapes[k]}")
        n = {k: s[0] for k, s in shapes.items()}
        if len(set(n.values())) != 1:
            raise DataError(f"NodeData: the leading (node) axes disagree: x has N={n['x']}, y has N={n['y']}, "
                            f"count has N={n['count']}; all three must be stacked over the same N nodes")
        m = shapes["x"][1]
        if shapes["y"][1] != m:
            raise DataError(f"NodeData: x has M={m} rows per node but y has {shapes['y'][1]}; "
                            f"x [N, M, ...] and y [N, M, ...] must be padded to the same M")
        count = self.count
        concrete = not isinstance(count, jax.ShapeDtypeStruct) and getattr(count, "is_fully_addressable", True)
        values = np.asarray(count) if concrete else None
        dtype = np.dtype(values.dtype if values is not None else count.dtype)
        if dtype == np.bool_ or not np.issubdtype(dtype, np.integer):
            raise DataError(f"NodeData.count must hold integers (the number of valid rows of each node), "
                            f"got dtype {dtype}")
        if values is not None:
            bad = np.flatnonzero((values < 1) | (values > m))
            if bad.size:
                i = int(bad[0])
                raise DataError(f"NodeData.count[{i}] = {int(values[i])}: node {i} must have 1..{m} valid rows "
                                f"(count[i] = number of real, unpadded rows among the M={m} padded rows)")
        return self


class Carry(NamedTuple):
    """Everything a run needs to continue: algorithm state, next step, base key."""

    state: Any
    step: jax.Array
    key: jax.Array


def stack_node_data(xs, ys) -> NodeData:
    """Pad per-node arrays (lists of [n_i, ...]) to a common length and stack them."""
    if len(xs) != len(ys) or not xs:
        raise ValueError(f"need one x and one y array per node, got {len(xs)} and {len(ys)}")
    counts = np.array([len(x) for x in xs], np.int32)
    if (counts == 0).any():
        raise ValueError(f"node {int(np.flatnonzero(counts == 0)[0])} has no data")
    for i, (x, y) in enumerate(zip(xs, ys)):
        if len(x) != len(y):
            raise ValueError(f"node {i}: {len(x)} inputs but {len(y)} labels")
    m = int(counts.max())

    def pad(a):
        a = np.asarray(a)
        out = np.zeros((m,) + a.shape[1:], a.dtype)
        out[: len(a)] = a
        return out

    return NodeData.checked(np.stack([pad(x) for x in xs]), np.stack([pad(y) for y in ys]), counts)


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


@dataclasses.dataclass(frozen=True, eq=False)
class Engine:
    """Runs an :class:`~ecl_jax.algorithms.Algorithm` on a topology.

    loss_fn: ``loss_fn(params, x, y, rng) -> per-example losses [B]`` for one node's
      (unstacked) params; ``rng`` is a PRNG key during training and None in evaluation.
    batch_size: samples per node per step, drawn uniformly with replacement from the
      node's data; None = full local data every step (deterministic gradients).
    eval_fn: optional ``eval_fn(node_params, eval_data) -> dict of arrays`` called at
      every metric point (e.g. test accuracy per node); ``eval_data`` is passed to
      :meth:`run`.
    loop: "scan" (default for dense models: the chunk is one ``lax.scan``), "python"
      (a compiled step called ``eval_every`` times), or "auto" (see :meth:`loop_mode`).
    node_grads: how the per-node gradients are computed: "vmap" (one batched program),
      "unrolled" (one gradient per node in the same program, no batching: vmapped
      convolutions become grouped convolutions, 4x slower than separate ones on XLA:CPU
      for the KDD20 CNN at N = 64, measured), or "auto" (unrolled in python loop mode,
      i.e. convolutions on CPU, for N <= 128 where the compile time stays moderate).
    donate: :meth:`run_chunk` consumes the carry it is given (its buffers are reused for
      the new carry, so a chunk holds one copy of the state instead of two; keep using
      the returned carry). False keeps the old carry valid. :meth:`init` copies the
      params, so the caller's arrays are never consumed.
    """

    algorithm: Algorithm
    topology: Topology
    loss_fn: LossFn
    batch_size: int | None = 32
    edge_schedule: Callable = AlwaysEdges()
    node_schedule: Callable = AllNodes()
    eval_every: int = 100
    eval_fn: Callable | None = None
    train_metrics: bool = True
    loop: str = "auto"
    node_grads: str = "auto"
    donate: bool = True

    def __post_init__(self):
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None (full batch), got {self.batch_size!r}")
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 1:
            raise ValueError(f"eval_every must be a positive integer, got {self.eval_every!r}")
        if self.loop not in ("auto", "scan", "python"):
            raise ValueError(f"loop must be 'auto', 'scan' or 'python', got {self.loop!r}")
        if self.node_grads not in ("auto", "vmap", "unrolled"):
            raise ValueError(f"node_grads must be 'auto', 'vmap' or 'unrolled', got {self.node_grads!r}")
        object.__setattr__(self, "_traces", [0])
        object.__setattr__(self, "_mode", [None if self.loop == "auto" else self.loop])
        if not isinstance(self.donate, bool):
            raise ValueError(f"donate must be True or False, got {self.donate!r}")
        donate = (0,) if self.donate else ()
        object.__setattr__(self, "_chunk", jax.jit(self._chunk_impl, donate_argnums=donate))
        object.__setattr__(self, "_step_jit", jax.jit(self._guarded_step_impl, donate_argnums=donate))
        object.__setattr__(self, "_metrics_jit", jax.jit(self.metrics))

    # ----------------------------------------------------------- public API
    @property
    def trace_count(self) -> int:
        """How many times the chunk function was traced (= compiled) so far."""
        return self._traces[0]

    def init(self, params, key: jax.Array) -> Carry:
        """Initial carry from node-stacked params and a PRNG key.

        With ``donate`` every leaf is a fresh buffer (no alias of ``params`` or of
        another leaf), so the carry can be donated to :meth:`run_chunk`.
        """
        state = self.algorithm.init(params, self.topology)
        carry = Carry(state, jnp.zeros((), jnp.int32), key)
        return jax.tree_util.tree_map(jnp.copy, carry) if self.donate else carry

    def check_data(self, data: NodeData) -> NodeData:
        data = NodeData(*(jnp.asarray(a) for a in data))
        n = self.topology.n_nodes
        for name, a in zip(("x", "y", "count"), data):
            if a.shape[0] != n:
                raise ValueError(f"data.{name} has leading size {a.shape[0]}, expected N={n} nodes")
        chex.assert_rank(data.count, 1)
        if data.x.shape[1] != data.y.shape[1]:
            raise ValueError(f"data.x has {data.x.shape[1]} rows per node but data.y has {data.y.shape[1]}")
        return data.validate()

    def run_chunk(self, carry: Carry, data: NodeData, total_steps: int | jax.Array, eval_data=None):
        """Advance ``eval_every`` steps (stopping at ``total_steps``); return (carry, metrics)."""
        total = jnp.asarray(total_steps, jnp.int32)
        if self.loop_mode(carry, data) == "scan":
            return self._chunk(carry, data, total, eval_data)
        # The step bound is checked on the host (one sync per chunk), not with a lax.cond
        # inside the compiled step: XLA:CPU runs a convolution inside a cond branch as
        # slowly as inside a loop body (18 s vs 1 s per KDD20-CNN step at N = 8, measured).
        remaining = int(total) - int(carry.step)
        for _ in range(min(self.eval_every, max(remaining, 0))):
            carry = self._step_jit(carry, data, total)
        return carry, self._metrics_jit(carry, data, eval_data)

    def loop_mode(self, carry: Carry, data: NodeData) -> str:
        """"scan" (one compiled chunk) or "python" (a compiled step called in a loop).

        ``loop="auto"`` picks "python" only on CPU when the step contains a convolution:
        XLA:CPU runs convolutions inside loop bodies many times slower than outside
        (jax-ml/jax#12868; 25 s vs 1 s for 20 steps of the KDD20 CNN measured here).
        """
        if self._mode[0] is None:
            mode = "scan"
            if jax.default_backend() == "cpu":
                jaxpr = jax.make_jaxpr(self._one_step)(carry, data)
                if "conv_general_dilated" in str(jaxpr):
                    mode = "python"
            self._mode[0] = mode
        return self._mode[0]

    def run(
        self,
        params,
        data: NodeData,
        steps: int,
        key: jax.Array,
        *,
        eval_data=None,
        carry: Carry | None = None,
        callback: Callable[[Carry, dict], None] | None = None,
    ) -> tuple[Carry, dict]:
        """Run until ``steps`` total steps (continuing ``carry`` if given).

        Returns the final carry and a dict of metric arrays stacked over metric points
        (``step`` included). ``callback(carry, metrics)`` runs after every chunk (for
        progress, checkpoints); metrics arrive on the host once per chunk.
        """
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
        data = self.check_data(data)
        if carry is None:
            carry = self.init(params, key)
        history: list[dict] = []
        while int(carry.step) < steps:
            carry, metrics = self.run_chunk(carry, data, steps, eval_data)
            metrics = jax.device_get(metrics)
            history.append(metrics)
            if callback is not None:
                callback(carry, metrics)
        stacked = {k: np.stack([h[k] for h in history]) for k in history[0]} if history else {}
        return carry, stacked

    # ------------------------------------------------------------ internals
    def sample_batch(self, data: NodeData, key: jax.Array, dtype: Any = jnp.float32):
        """Per-node minibatch (x [N, B, ...], y [N, B, ...], weights [N, B]).

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
        u = jax.random.uniform(key, (n, self.batch_size))
        idx = jnp.minimum((u * data.count[:, None]).astype(jnp.int32), data.count[:, None] - 1)
        take = jax.vmap(lambda a, i: a[i])
        w = jnp.full((n, self.batch_size), 1.0 / self.batch_size, dtype)
        return take(data.x, idx), take(data.y, idx), w

    def _node_loss(self, params, x, y, w, rng):
        # w comes in the params' constant dtype; the cast only matters for losses of another
        # dtype (mixed_precision's float32 losses of float64 params, say).
        losses = self.loss_fn(params, x, y, rng)
        return jnp.sum(losses * w.astype(losses.dtype))

    def _one_step(self, carry: Carry, data: NodeData) -> Carry:
        topo = self.topology
        k = jax.random.fold_in(carry.key, carry.step)
        k_edge, k_node, k_batch, k_drop = jax.random.split(k, 4)
        edge_active = self.edge_schedule(k_edge, carry.step, topo)
        node_active = self.node_schedule(k_node, carry.step, topo.n_nodes)
        params = self.algorithm.node_params(carry.state)
        x, y, w = self.sample_batch(data, k_batch, self._weight_dtype(params))
        rngs = jax.random.split(k_drop, topo.n_nodes)
        grads = self._node_gradients(params, x, y, w, rngs)
        state = self.algorithm.step(carry.state, grads, topo, edge_active, node_active)
        return Carry(state, carry.step + 1, carry.key)

    @staticmethod
    def _weight_dtype(params) -> Any:
        """Dtype of the loss weights: the params' constant dtype (the widest over the leaves)."""
        leaves = jax.tree_util.tree_leaves(params)
        return constant_dtype(jnp.result_type(*leaves)) if leaves else jnp.dtype(jnp.float32)

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
        if self.eval_fn is not None:
            out.update(self.eval_fn(params, eval_data))
        return out

    def _node_gradients(self, params, x, y, w, rngs):
        """Per-node gradients [N, ...] (see ``node_grads``)."""
        n = self.topology.n_nodes
        grad = jax.grad(self._node_loss)
        unroll = self.node_grads == "unrolled" or (
            self.node_grads == "auto" and self._mode[0] == "python" and n <= 128
        )
        if not unroll:
            return jax.vmap(grad)(params, x, y, w, rngs)
        take = lambda i: jax.tree_util.tree_map(lambda a: a[i], (params, x, y, w, rngs))
        per_node = [grad(*take(i)) for i in range(n)]
        return jax.tree_util.tree_map(lambda *g: jnp.stack(g), *per_node)

    def _guarded_step_impl(self, carry: Carry, data: NodeData, total_steps: jax.Array) -> Carry:
        """One step (python loop mode; :meth:`run_chunk` stops at ``total_steps`` on the host)."""
        self._traces[0] += 1
        return self._one_step(carry, data)

    def _chunk_impl(self, carry: Carry, data: NodeData, total_steps: jax.Array, eval_data):
        self._traces[0] += 1

        def body(c, _):
            c = jax.lax.cond(c.step < total_steps, lambda cc: self._one_step(cc, data), lambda cc: cc, c)
            return c, None

        carry, _ = jax.lax.scan(body, carry, None, length=self.eval_every)
        return carry, self.metrics(carry, data, eval_data)
