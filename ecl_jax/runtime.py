"""Free-running node clocks: the asynchronous runtime, compiled into per-tick masks
(docs/algorithms.md#free-running-runtime).

In *lockstep* (the engine's default, ``runtime=None``) node i's k-th local step is step k
for every node. Under a :class:`FreeRunning` runtime each engine step is one *tick* of
simulated time, and every node runs on a clock of its own:

* one local step of node i lasts d = (1 + jitter u) / speed_i ticks, u ~ U[-1, 1] drawn
  each step (``speed_i`` in (0, 1]: the tick is the fastest node's mean step time; a
  straggler is a node of low speed);
* after every ``pause_every`` own steps the node pauses ``pause`` ticks (jittered the
  same way), e.g. to evaluate; while paused or between steps it makes no local step but
  still answers its neighbours' swaps;
* a node fails in a tick with probability ``failure_prob``: it neither computes nor
  answers, and its clock stands still.

The clock state :class:`Clocks` (ticks until each node's current step completes, and how
many steps it has completed) lives in the engine's carry, so a resumed run continues the
same clocks. Each tick yields a :class:`ClockTick`: which nodes complete a local step
(``computes``), which answer (``answers``), and each node's own step counter. Edge
schedules read the counters (:func:`ecl_jax.masks.edges_on_clocks`): the KDD20 round robin
and the ICML21 slots count a node's *own* steps, so exchange times drift apart with the
clocks. With speed 1, no jitter, no pauses and no failures every node completes a step
every tick and the run is exactly the lockstep run.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax.validation import check_int, is_number

__all__ = ["Clocks", "ClockTick", "FreeRunning", "runtime_from_string", "RUNTIME_KEYS"]

_CLOCK_SALT = 0x636C6B  # folds the run key into the clocks' initial-phase key


class Clocks(NamedTuple):
    """Per-node clock state: ``wait`` [N] float32 (ticks from the start of this tick until
    the node's current local step completes; it completes in this tick when wait < 1) and
    ``steps`` [N] int32 (local steps completed so far)."""

    wait: jax.Array
    steps: jax.Array


class ClockTick(NamedTuple):
    """One tick of every clock: ``computes`` [N] (completes a local step now), ``answers``
    [N] (is up: takes part in swaps), ``own_step`` [N] (0-based index of the node's step
    that completes now; for a node not computing, of its next step)."""

    computes: jax.Array
    answers: jax.Array
    own_step: jax.Array


def _fraction(name: str, v, *, lo_open: bool, hi: float, hi_open: bool) -> float:
    ok = is_number(v)
    ok = ok and (v > 0 if lo_open else v >= 0) and (v < hi if hi_open else v <= hi)
    if not ok:
        lo_s = "(0" if lo_open else "[0"
        hi_s = f"{hi:g})" if hi_open else f"{hi:g}]"
        raise ValueError(f"{name} must be a number in {lo_s}, {hi_s}, got {v!r}")
    return float(v)


@dataclasses.dataclass(frozen=True)
class FreeRunning:
    """Every node on its own clock (module docstring); pass as ``Engine(runtime=...)``.

    speed: local steps per tick, one number for all nodes or one per node, each in (0, 1].
    jitter: relative spread of every step's (and pause's) duration, in [0, 1).
    pause_every, pause: after every ``pause_every`` own steps (0 = never) the node pauses
      ``pause`` ticks, answering swaps but not computing.
    phase: "aligned" (every node's first step completes in tick 0) or "random" (node i's
      first step completes at a uniform time in [0, 1/speed_i), from the run key).
    failure_prob: probability that a node is down in a tick (does neither).
    """

    speed: float | tuple[float, ...] = 1.0
    jitter: float = 0.0
    pause_every: int = 0
    pause: float = 0.0
    phase: str = "aligned"
    failure_prob: float = 0.0

    def __post_init__(self):
        speeds = (self.speed,) if np.ndim(self.speed) == 0 else tuple(np.asarray(self.speed).tolist())
        if not speeds:
            raise ValueError("speed must be a number or a non-empty sequence, got an empty sequence")
        for s in speeds:
            _fraction("speed", s, lo_open=True, hi=1.0, hi_open=False)
        if np.ndim(self.speed) != 0:
            object.__setattr__(self, "speed", tuple(float(s) for s in speeds))
        _fraction("jitter", self.jitter, lo_open=False, hi=1.0, hi_open=True)
        check_int("pause_every", self.pause_every, minimum=0, note="0 = no pauses")
        if not (isinstance(self.pause, (int, float)) and not isinstance(self.pause, bool)
                and np.isfinite(self.pause) and self.pause >= 0):
            raise ValueError(f"pause must be a number of ticks >= 0, got {self.pause!r}")
        if self.pause > 0 and self.pause_every == 0:
            raise ValueError(f"pause={self.pause} needs pause_every > 0 (own steps between pauses)")
        if self.phase not in ("aligned", "random"):
            raise ValueError(f"phase must be 'aligned' or 'random', got {self.phase!r}")
        _fraction("failure_prob", self.failure_prob, lo_open=False, hi=1.0, hi_open=True)

    def speeds(self, n_nodes: int) -> np.ndarray:
        """speed_i for every node, float32 [N] (ValueError when a per-node tuple has another length)."""
        if np.ndim(self.speed) == 0:
            return np.full((n_nodes,), self.speed, np.float32)
        if len(self.speed) != n_nodes:
            raise ValueError(f"speed has {len(self.speed)} entries, expected one per node ({n_nodes})")
        return np.asarray(self.speed, np.float32)

    @property
    def is_lockstep(self) -> bool:
        """Whether every node completes a step every tick (equal to the lockstep run)."""
        return (np.all(np.asarray(self.speed) == 1.0) and self.pause_every == 0
                and self.failure_prob == 0.0)

    def init(self, n_nodes: int, key: jax.Array) -> Clocks:
        """Clocks at tick 0: no step done; the first completes at tick 0 ("aligned") or at a
        uniform time in [0, 1/speed_i) ("random", drawn from ``key``)."""
        speed = jnp.asarray(self.speeds(n_nodes))
        if self.phase == "random":
            wait = jax.random.uniform(jax.random.fold_in(key, _CLOCK_SALT), (n_nodes,)) / speed
        else:
            wait = jnp.zeros((n_nodes,), jnp.float32)
        return Clocks(wait.astype(jnp.float32), jnp.zeros((n_nodes,), jnp.int32))

    def tick(self, clocks: Clocks, key: jax.Array) -> tuple[Clocks, ClockTick]:
        """Advance every clock by one tick; return the new clocks and what happened in the tick.

        up_i ~ Bernoulli(1 - failure_prob); computes_i = up_i and wait_i < 1;
        wait_i <- wait_i - up_i + computes_i (d_i + pause_i), with d_i = (1 + jitter u) / speed_i
        and pause_i = pause (1 + jitter u') when the completed step count is a multiple of
        ``pause_every``.
        """
        n = clocks.wait.shape[0]
        speed = jnp.asarray(self.speeds(n))
        k_step, k_pause, k_fail = jax.random.split(key, 3)
        up = (~jax.random.bernoulli(k_fail, self.failure_prob, (n,)) if self.failure_prob > 0
              else jnp.ones((n,), bool))
        fires = up & (clocks.wait < 1.0)
        steps = clocks.steps + fires.astype(jnp.int32)
        duration = self._jittered(k_step, 1.0 / speed)
        if self.pause_every > 0 and self.pause > 0:
            due = fires & (steps % self.pause_every == 0)
            duration = duration + jnp.where(due, self._jittered(k_pause, jnp.full((n,), self.pause, jnp.float32)), 0.0)
        wait = clocks.wait - up.astype(jnp.float32) + jnp.where(fires, duration, 0.0)
        return Clocks(wait, steps), ClockTick(fires, up, clocks.steps)

    def _jittered(self, key: jax.Array, mean: jax.Array) -> jax.Array:
        if self.jitter == 0.0:
            return mean
        return mean * (1.0 + self.jitter * jax.random.uniform(key, mean.shape, minval=-1.0, maxval=1.0))


RUNTIME_KEYS = ("speed", "jitter", "pause_every", "pause", "phase", "fail", "stragglers", "straggler_speed")
"""The keys of a ``"free:..."`` runtime string (:func:`runtime_from_string`)."""


_INT32_MAX = 2**31 - 1


def _runtime_number(key: str, text: str):
    """A runtime option's value, checked against what the compiled step holds: the whole-number
    keys fit int32, the others are finite in float32 and not rounded to 0 there."""
    if key in ("pause_every", "stragglers"):
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"runtime option {key} must be a whole number, got {text!r}") from None
        if not 0 <= value <= _INT32_MAX:
            raise ValueError(f"runtime option {key}={value} is outside 0..{_INT32_MAX:,} (the compiled step counts "
                             "steps in int32)")
        return value
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"runtime option {key} must be a number, got {text!r}") from None
    with np.errstate(over="ignore", under="ignore"):
        f32 = np.float32(value)
    if not np.isfinite(f32) and np.isfinite(value):
        raise ValueError(f"runtime option {key}={text} is beyond float32 (at most 3.4e38), which the compiled "
                         "step computes in")
    if value != 0 and f32 == 0:
        raise ValueError(f"runtime option {key}={text} is 0 in float32, which the compiled step computes in "
                         "(give at least 1e-38)")
    return value


def runtime_from_string(spec: str, n_nodes: int) -> FreeRunning | None:
    """Parse a runtime: ``"lockstep"`` (None: every node on the engine's clock) or
    ``"free:speed=1,jitter=0.1,pause_every=128,pause=474,phase=random,fail=0.01"``; add
    ``stragglers=2,straggler_speed=0.25`` to slow the last 2 nodes to speed 0.25. Every key
    is optional (defaults of :class:`FreeRunning`). ValueError names a bad key or value."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if name == "lockstep":
        if rest.strip():
            raise ValueError(f"runtime 'lockstep' takes no options, got {spec!r}")
        return None
    if name != "free":
        raise ValueError(f"unknown runtime {name!r}; valid: 'lockstep', 'free:KEY=VALUE,...' "
                         f"with keys {', '.join(RUNTIME_KEYS)}")
    kw: dict = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        k, eq, v = part.partition("=")
        k, v = k.strip(), v.strip()
        if not eq or k not in RUNTIME_KEYS:
            raise ValueError(f"bad runtime option {part!r} in {spec!r}; valid keys: {', '.join(RUNTIME_KEYS)}")
        if k in kw:
            raise ValueError(f"runtime option {k} is given twice in {spec!r}; give it once")
        kw[k] = v if k == "phase" else _runtime_number(k, v)
    speed = kw.pop("speed", 1.0)
    n_slow = kw.pop("stragglers", 0)
    slow = kw.pop("straggler_speed", None)
    if n_slow == 0 and slow is not None:
        raise ValueError(f"straggler_speed={slow:g} with stragglers=0 slows no node; give stragglers=COUNT "
                         f"(1..{n_nodes}) or leave straggler_speed out, got {spec!r}")
    if n_slow and slow is None:
        raise ValueError(f"stragglers={n_slow} needs straggler_speed=SPEED (in (0, 1]) for those nodes, got {spec!r}")
    if n_slow:
        check_int("stragglers", n_slow, minimum=1, maximum=n_nodes)
        speed = (speed,) * (n_nodes - n_slow) + (slow,) * n_slow
    if "fail" in kw:
        kw["failure_prob"] = kw.pop("fail")
    return FreeRunning(speed=speed, **kw)
