"""Who takes part in a step: one object for the edge schedule, the node schedule, the
free-running runtime and failures (docs/design.md#participation).

Every step t of a run draws its randomness from the run key alone::

    keys = step_keys(key, t)          # StepKeys(edge, node, batch, dropout)
    clocks, who = participation.draw(clocks, keys, t)
    who.edge_active [E], who.node_active ([N] or Activity), who.own_step (t, or [N] on free clocks)

In lockstep (``runtime=None``) the edge schedule draws ``edge_active`` from ``keys.edge``
and the node schedule ``node_active`` from ``keys.node``; every node's own step is t.
Under a :class:`~ecl_jax.runtime.FreeRunning` runtime each step is one tick: the clocks
advance with ``keys.node`` (:meth:`~ecl_jax.runtime.FreeRunning.tick`), the edge schedule
reads each node's own step counter (:func:`~ecl_jax.masks.edges_on_clocks`), and the node
mask is an :class:`~ecl_jax.masks.Activity` (computes, answers). The engine, the analysis
scripts and the tests all draw masks through :meth:`Participation.draw` with
:func:`step_keys`, so a mask drawn anywhere equals the engine's draw for draw.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from ecl_jax.masks import Activity, AllNodes, AlwaysEdges, edges_on_clocks
from ecl_jax.runtime import FreeRunning
from ecl_jax.topology import Topology

__all__ = ["StepKeys", "step_keys", "Participants", "Participation", "check_masks"]


class StepKeys(NamedTuple):
    """The four keys of one step, split from ``fold_in(key, step)`` in this order: edge mask,
    node mask (or the runtime's tick), minibatch indices, dropout."""

    edge: jax.Array
    node: jax.Array
    batch: jax.Array
    dropout: jax.Array


def step_keys(key: jax.Array, step: Any) -> StepKeys:
    """The keys of step ``step`` (traced or not) of a run with key ``key``: a function of
    (key, step) only, so a resumed run draws what an uninterrupted one draws."""
    return StepKeys(*jax.random.split(jax.random.fold_in(key, step), 4))


class Participants(NamedTuple):
    """Who takes part in one step: ``edge_active`` [E] bool (the edges the schedule opens),
    ``node_active`` bool [N] or :class:`~ecl_jax.masks.Activity` (who computes and who
    answers), ``own_step`` each node's own step index (the step itself in lockstep, [N] on
    free clocks: the minibatch sampler's epoch position)."""

    edge_active: jax.Array
    node_active: Any
    own_step: jax.Array


def check_masks(topology: Topology, edge_active: jax.Array, node_active: Any) -> None:
    """Shape/dtype asserts for a step's masks (``node_active``: a bool [N] mask or an
    :class:`~ecl_jax.masks.Activity` of two). Static: costs nothing inside ``jit``."""
    nodes = list(node_active) if isinstance(node_active, Activity) else [node_active]
    chex.assert_shape(edge_active, (topology.n_edges,))
    chex.assert_shape(nodes, (topology.n_nodes,))
    chex.assert_type([edge_active] + nodes, bool)


@dataclasses.dataclass(frozen=True)
class Participation:
    """Edge schedule, node schedule and runtime of a run on ``topology``, validated together.

    edge_schedule: ``(key, step, topology) -> bool [E]`` (:mod:`ecl_jax.masks`).
    node_schedule: ``(key, step, n_nodes) -> bool [N] or Activity``; must stay
      :class:`~ecl_jax.masks.AllNodes` under a runtime (the clocks decide who computes).
    runtime: None (lockstep) or a :class:`~ecl_jax.runtime.FreeRunning` runtime.
    """

    topology: Topology
    edge_schedule: Callable = AlwaysEdges()
    node_schedule: Callable = AllNodes()
    runtime: FreeRunning | None = None

    def __post_init__(self):
        if self.runtime is not None:
            if not callable(getattr(self.runtime, "tick", None)) or not callable(getattr(self.runtime, "init", None)):
                raise ValueError(f"runtime must be None (lockstep) or a FreeRunning runtime, got {self.runtime!r}")
            if not isinstance(self.node_schedule, AllNodes):
                raise ValueError(f"a free-running runtime decides who computes from the node clocks; node_schedule "
                                 f"must stay AllNodes(), got {self.node_schedule!r} (use the runtime's "
                                 f"failure_prob, speed or pauses instead)")
            self.runtime.speeds(self.topology.n_nodes)  # per-node speeds must match N

    def init(self, key: jax.Array) -> Any:
        """The clocks at step 0 (:class:`~ecl_jax.runtime.Clocks`), ``()`` in lockstep."""
        return () if self.runtime is None else self.runtime.init(self.topology.n_nodes, key)

    def draw(self, clocks: Any, keys: StepKeys, step: jax.Array) -> tuple[Any, Participants]:
        """(clocks after the step, :class:`Participants` of step ``step``) from the step's
        keys (:func:`step_keys`); the masks are checked at this boundary."""
        topo = self.topology
        if self.runtime is None:
            who = Participants(self.edge_schedule(keys.edge, step, topo),
                               self.node_schedule(keys.node, step, topo.n_nodes), jnp.asarray(step))
        else:  # one tick of the free-running clocks
            clocks, tick = self.runtime.tick(clocks, keys.node)
            edges = edges_on_clocks(self.edge_schedule, keys.edge, step, tick.own_step, tick.computes, topo)
            who = Participants(edges, Activity(tick.computes, tick.answers), tick.own_step)
        check_masks(topo, who.edge_active, who.node_active)
        return clocks, who

    def along(self, key: jax.Array, steps: int, start: int = 0, clocks: Any = None):
        """The participants of steps ``start .. start + steps - 1`` of a run with key ``key``,
        stacked over steps (one compiled scan), and the clocks after them: what the engine
        draws, draw for draw. ``clocks`` defaults to :meth:`init` (``key``)."""
        clocks = self.init(key) if clocks is None else clocks

        def body(c, t):
            return self.draw(c, step_keys(key, t), t)

        return jax.lax.scan(body, clocks, jnp.arange(start, start + steps, dtype=jnp.int32))
