"""Minibatch sampling of every node in one step (docs/algorithms.md#minibatch-sampling).

A :class:`Sampler` gives each node's minibatch rows for its own step s:

* ``batch_size=None``: all of node i's m_i valid rows, loss weights 1/m_i (deterministic
  gradients);
* ``epoch_samples=None``: B rows drawn uniformly with replacement from the step's batch
  key, weights 1/B;
* ``epoch_samples=L`` (a multiple of B): node i walks through a fresh random permutation
  of 0..L-1 every L/B of its own steps (an *epoch*, :class:`EpochOrder` in the carry),
  positions (s mod L/B) B .. + B, taken modulo m_i: without replacement within an epoch
  when L <= m_i (the ICML21 code's sampler, L = 12,800).

Permutations depend only on (run key, node, epoch), draws only on the step's key, so a
resumed run samples what an uninterrupted one samples.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ecl_jax.node_data import NodeData
from ecl_jax.validation import check_int

__all__ = ["EpochOrder", "Sampler", "next_epoch_order", "epoch_rows", "epoch_key"]

_EPOCH_SALT = 0x65706F


class EpochOrder(NamedTuple):
    """Each node's sampling order for its current epoch: ``perm`` [N, L] int32, a permutation
    of 0..L-1, and ``epoch`` [N] int32, the epoch it was drawn for."""

    perm: jax.Array
    epoch: jax.Array


def epoch_key(key: jax.Array) -> jax.Array:
    """The run's key for epoch permutations (folded twice: never a step's key fold_in(key, t))."""
    return jax.random.fold_in(jax.random.fold_in(key, _EPOCH_SALT), _EPOCH_SALT)


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


def _take(a: jax.Array, rows: jax.Array) -> jax.Array:
    return jax.vmap(lambda x, i: x[i])(a, rows)


@dataclasses.dataclass(frozen=True)
class Sampler:
    """How every node draws its minibatch (module docstring); static, validated here.

    batch_size: rows per node per step; None = all valid rows every step.
    epoch_samples: None (uniform draws) or L, a multiple of ``batch_size`` (epoch order).
    """

    batch_size: int | None = 32
    epoch_samples: int | None = None

    def __post_init__(self):
        batch = check_int("batch_size", self.batch_size, minimum=1, allow_none=True, note="full batch")
        epoch = check_int("epoch_samples", self.epoch_samples, minimum=1, allow_none=True, note="uniform draws")
        if epoch is not None and (batch is None or epoch % batch):
            raise ValueError(f"epoch_samples={epoch} must be a multiple of batch_size={batch} "
                             f"(one epoch = epoch_samples / batch_size steps); use None for uniform draws")
        object.__setattr__(self, "batch_size", batch)  # normalised (a NumPy integer becomes an int)
        object.__setattr__(self, "epoch_samples", epoch)

    def init(self, n_nodes: int, key: jax.Array) -> Any:
        """The carry's sampling state: epoch 0's :class:`EpochOrder` with ``epoch_samples``, else ``()``."""
        if self.epoch_samples is None:
            return ()
        zeros = jnp.zeros((n_nodes,), jnp.int32)
        return EpochOrder(_draw_perms(epoch_key(key), zeros, self.epoch_samples), zeros)

    def advance(self, order: Any, key: jax.Array, own_step: Any) -> Any:
        """The order for own step ``own_step``: a node entering a new epoch gets a fresh
        permutation (``key`` is the run key); ``()`` without ``epoch_samples``."""
        if self.epoch_samples is None:
            return order
        return next_epoch_order(order, epoch_key(key), own_step, self.epoch_samples // self.batch_size)

    def sample(self, data: NodeData, key: jax.Array, dtype: Any = jnp.float32, order: Any = (),
               own_step: Any = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Per-node minibatch (x [N, B, ...], y [N, B, ...], loss weights [N, B] in ``dtype``:
        1/m_i on node i's valid rows with ``batch_size=None``, else 1/B). ``key``: the step's
        batch key; ``order``/``own_step``: the epoch order and each node's own step."""
        n, m = data.x.shape[:2]
        if self.batch_size is None:
            valid = jnp.arange(m)[None, :] < data.count[:, None]
            # Padding rows are replaced by row 0 (weight 0), so a loss that is not finite
            # on padding cannot turn the gradient into NaN (0 * inf).
            rows = jnp.where(valid, jnp.arange(m)[None, :], 0)
            w = valid.astype(dtype) / data.count[:, None].astype(dtype)
            return _take(data.x, rows), _take(data.y, rows), w
        if self.epoch_samples is None:
            u = jax.random.uniform(key, (n, self.batch_size))
            rows = jnp.minimum((u * data.count[:, None]).astype(jnp.int32), data.count[:, None] - 1)
        else:
            if not isinstance(order, EpochOrder):
                raise ValueError("sampling with epoch_samples needs the carry's EpochOrder (order=carry.order)")
            rows = epoch_rows(order, own_step, data.count, self.batch_size)
        w = jnp.full((n, self.batch_size), 1.0 / self.batch_size, dtype)
        return _take(data.x, rows), _take(data.y, rows), w
