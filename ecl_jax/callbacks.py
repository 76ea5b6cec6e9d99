"""Callbacks for :meth:`ecl_jax.engine.Engine.run` (docs/design.md#runner-callbacks).

Each is a small callable ``cb(carry, metrics)`` run after every chunk, with the metrics
already on the host. The runner passes, per algorithm and in this order::

    [DivergenceCheck, Recorder, Progress, Checkpointer, StopOnInterrupt, StopAfter]

The order matters: the divergence check raises before a diverged chunk is recorded or
checkpointed, so the last checkpoint on disk is always a good one, and
:class:`StopOnInterrupt` (a Ctrl-C Python dropped) and the test hook :class:`StopAfter`
interrupt only after the checkpoint of their chunk is written.
"""

from __future__ import annotations

import math
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax.algorithms.base import Algorithm
from ecl_jax.checkpoint import save_checkpoint
from ecl_jax.errors import INTERRUPTED
from ecl_jax.execution import steps_done
from ecl_jax.records import history_row
from ecl_jax.registry import algorithm_settings

__all__ = ["DivergenceError", "DivergenceCheck", "Recorder", "Progress", "Checkpointer", "StopAfter",
           "StopOnInterrupt", "INTERRUPTED"]


class DivergenceError(RuntimeError):
    """NaN/inf in a run; the message names the step, algorithm and hyperparameters."""


def _duration(seconds: float) -> str:
    """Seconds as M:SS, or H:MM:SS from one hour on ("--:--" when unknown)."""
    if not math.isfinite(seconds):
        return "--:--"
    m, sec = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _step_of(carry) -> int:
    """The step of a :class:`~ecl_jax.engine.Carry` (or a step number given directly)."""
    return steps_done(carry) if hasattr(carry, "step") else int(carry)


class Progress:
    """One line per chunk: steps/s, ETA, last metrics (stderr; silent with quiet).

    ``progress(carry, metrics)``; ``carry`` may also be the step number itself.
    """

    def __init__(self, algo: str, total: int, quiet: bool):
        self.algo, self.total, self.quiet = algo, total, quiet
        self.start, self.t0, self.s0 = time.time(), time.time(), None

    def __call__(self, carry, metrics: dict) -> None:
        if self.quiet:
            return
        step = _step_of(carry)
        now = time.time()
        if self.s0 is None:  # first chunk includes compilation: no rate yet
            self.s0, self.t0 = step, now
            speed = f"first chunk {_duration(now - self.start)} incl. compilation"
        else:
            rate = (step - self.s0) / max(now - self.t0, 1e-9)
            eta = (self.total - step) / rate if rate > 0 else float("nan")
            speed = f"{rate:.3g} steps/s ETA {_duration(eta)}"
        acc = metrics.get("test_acc_node")
        acc_s = f" test_acc {np.mean(acc):.4f}" if acc is not None else ""
        loss = metrics.get("test_loss_node")
        loss_s = f" test_loss {np.mean(loss):.4f}" if loss is not None else ""
        print(
            f"[{self.algo}] step {step}/{self.total} ({100 * step / max(self.total, 1):.0f}%) "
            f"{speed}{acc_s}{loss_s} consensus {float(np.mean(metrics['consensus_distance'])):.3g}",
            file=sys.stderr,
            flush=True,
        )


class Recorder:
    """Appends a history row (:func:`ecl_jax.records.history_row`) per chunk to ``history``;
    with ``runs`` (a batch of runs: every metric has a leading run axis) one row per run, each
    with that run's tags (its ``seed``; in a sweep its ``run`` label and swept values).

    ``mean_count``: the mean samples per node (the epoch's length), or a list of one per run
    (each run on its own split); ``message_bytes``: the bytes of one message (the bytes
    columns; :meth:`~ecl_jax.engine.Engine.message_bytes`). ``wall`` is the run's wall time
    so far: ``wall0`` (from a checkpoint) plus the time
    since this recorder was made.
    """

    def __init__(self, algo: str, config: Any, mean_count: float, history: list[dict] | None = None,
                 wall0: float = 0.0, runs: list[dict] | None = None, message_bytes: int | None = None):
        self.algo, self.config, self.mean_count, self.runs = algo, config, mean_count, runs
        self.message_bytes = message_bytes
        self.history = [] if history is None else history
        self.wall0 = self.wall = wall0
        self.start = time.time()

    def __call__(self, carry, metrics: dict) -> None:
        self.wall = self.wall0 + time.time() - self.start
        if self.runs is None:
            self.history.append(history_row(metrics, self.algo, self.config, self.mean_count, self.wall,
                                            message_bytes=self.message_bytes))
            return
        metrics = {k: np.asarray(v) for k, v in metrics.items()}
        for r, tags in enumerate(self.runs):
            one = {k: v[r] for k, v in metrics.items()}
            count = self.mean_count[r] if isinstance(self.mean_count, (list, tuple)) else self.mean_count
            self.history.append(history_row(one, self.algo, self.config, count, self.wall, tags=tags,
                                            message_bytes=self.message_bytes))


class Checkpointer:
    """Saves the carry, the recorder's history and wall time every ``every`` chunks and at
    ``total_steps``, with the run ``fingerprint`` (:func:`ecl_jax.checkpoint.save_checkpoint`).

    ``saved_step`` is the step of the last checkpoint on disk (None: none yet); pass it
    when resuming from an existing checkpoint.
    """

    def __init__(self, path: pathlib.Path, recorder: Recorder, *, every: int, total_steps: int,
                 fingerprint: dict | None = None, saved_step: int | None = None):
        self.path, self.recorder, self.every, self.total_steps = path, recorder, every, total_steps
        self.fingerprint, self.saved_step, self.chunks = fingerprint, saved_step, 0

    def __call__(self, carry, metrics: dict) -> None:
        self.chunks += 1
        step = _step_of(carry)
        if step >= self.total_steps or self.chunks % self.every == 0:
            save_checkpoint(self.path, carry, self.recorder.history, self.recorder.wall, self.fingerprint)
            self.saved_step = step


class DivergenceCheck:
    """Raises :class:`DivergenceError` when a metric or a node model is NaN/inf.

    The message names the algorithm, the step, its settings, and whether the
    ``checkpointer``'s last good checkpoint is kept or none exists yet; with ``runs`` (a
    batch: a leading run axis on the state and every metric; a label per run, "seed 3",
    "eta=0.5 seed 3") also which runs.
    """

    def __init__(self, algorithm: Algorithm, checkpointer: Checkpointer | None = None,
                 runs: list[str] | None = None):
        self.algorithm, self.checkpointer, self.runs = algorithm, checkpointer, runs

    def __call__(self, carry, metrics: dict) -> None:
        batched = self.runs is not None
        node_params = jax.vmap(self.algorithm.node_params) if batched else self.algorithm.node_params
        runs = len(self.runs) if batched else 1
        finite = lambda xp, v: xp.isfinite(v).reshape(runs, -1).all(1)  # per run: every value finite
        ok = np.ones(runs, bool)
        for v in (np.asarray(v) for k, v in metrics.items() if k != "step"):  # on the host already
            ok &= finite(np, v)
        for x in jax.tree_util.tree_leaves(node_params(carry.state)):  # on the device: [runs] bools come back
            ok &= np.asarray(finite(jnp, x))
        if not ok.all():
            saved = None if self.checkpointer is None else self.checkpointer.saved_step
            kept = ("no checkpoint exists yet for it (the divergence came before the first one was written)"
                    if saved is None else f"its last good checkpoint (step {saved}) is kept")
            which = "" if not batched else f" in {', '.join(label for label, g in zip(self.runs, ok) if not g)}"
            raise DivergenceError(
                f"{self.algorithm.name} diverged (NaN/inf){which} by step {_step_of(carry)} with settings "
                f"{algorithm_settings(self.algorithm)}; {kept}. Lower lr (raise mu) or raise eta."
            )


class StopAfter:
    """Test hook: raises KeyboardInterrupt after ``chunks`` chunks, counted across every
    run it is passed to, unless that chunk finished the run (``total_steps``).

    Put it last, after the :class:`Checkpointer`, so the interrupted run has its checkpoint.
    """

    def __init__(self, chunks: int, total_steps: int):
        self.limit, self.total_steps, self.chunks = chunks, total_steps, 0

    def __call__(self, carry, metrics: dict) -> None:
        self.chunks += 1
        if self.chunks >= self.limit and _step_of(carry) < self.total_steps:
            raise KeyboardInterrupt(f"stopped after {self.chunks} chunks (test)")


class StopOnInterrupt:
    """Raises KeyboardInterrupt after a chunk once :data:`INTERRUPTED` is set.

    Python drops an exception raised inside a garbage-collection callback (JAX runs one),
    so a Ctrl-C that lands there would be lost and the run would go on; the handler also
    sets the flag, and this callback, put after the :class:`Checkpointer`, stops the run at
    the end of the chunk with its checkpoint written.
    """

    def __call__(self, carry, metrics: dict) -> None:
        if INTERRUPTED.is_set():
            raise KeyboardInterrupt("Ctrl-C")
