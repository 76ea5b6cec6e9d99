"""Errors a user can cause and fix: the CLI prints their message without a traceback.

Every class derives from :class:`UserError`; ``ecl-jax`` turns one into ``error: <message>``
and exit status 2 (``--debug`` shows the traceback). Each message names the bad value
and what would be valid, or the file and what to do about it.
"""

from __future__ import annotations

import threading

__all__ = ["UserError", "ConfigError", "DataError", "RunFolderError", "CheckpointError", "TopologyError",
           "MemoryLimitError", "INTERRUPTED"]

INTERRUPTED = threading.Event()
"""Set by the command line's SIGINT handler (``ecl_jax.cli``) on every Ctrl-C: the user
stopping a run is the one "error" without a message; :class:`ecl_jax.callbacks.StopOnInterrupt`
reads it. Here because this module imports nothing heavy (the handler is installed
before JAX is imported)."""


class UserError(Exception):
    """Base of the errors a user can cause (bad config, data, run folder, checkpoint)."""


class ConfigError(UserError, ValueError):
    """A bad configuration key or value; the message lists what is valid."""


class DataError(UserError, ValueError):
    """A data set file that is malformed, truncated or unsafe to read; names the file."""


class RunFolderError(UserError):
    """A run folder that ecl_jax must not touch (not ours, locked, another run's)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that is corrupted or belongs to another run; names the file and the fix."""


class TopologyError(UserError, ValueError):
    """An invalid communication graph or layout; the message names the offending node or edge."""


class MemoryLimitError(UserError, ValueError):
    """A batch of runs estimated not to fit in the device's memory; names the largest that fits."""
