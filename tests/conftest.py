"""Shared test set-up: JAX's persistent compilation cache, and xdist scheduling by group.

XLA compiling programs is most of the suite's time (without a cache, 125 s of the 192 s
that tests/test_engine.py and tests/test_runtime.py take is ``backend_compile``), and
many of them are programs that other tests (or other processes: the CLI subprocesses,
the two xdist workers, the notebook kernels) compile too. Every
process the tests start inherits the cache through the environment, so an identical
program is compiled once per machine, not once per process or engine (docs/design.md#tests).

* The cache lives outside the repository: ``$ECL_JAX_TEST_CACHE``, else
  ``$XDG_CACHE_HOME/ecl_jax/jax-test-cache``, else ``~/.cache/ecl_jax/jax-test-cache``;
  ``ECL_JAX_TEST_CACHE=off`` runs without it (a user's own ``JAX_COMPILATION_CACHE_DIR``
  is respected as it is).
* Every program is cached, however quick its compile (the default threshold of 1 s
  would skip most of the suite's small programs).
* The cache is not bounded by JAX (a bound makes JAX list the whole folder and lock it on
  every read and write, which made a cold suite run slower than no cache at all); this
  file prunes the oldest entries when the folder passes ``PRUNE_ABOVE_BYTES``.
* An entry that the other worker is still writing reads as corrupt: JAX compiles the
  program again and warns. The warning is filtered (also in subprocesses), so the CLI
  tests' stderr stays what the CLI printed.

Tried and left out: compiling with LLVM's optimisation off
(``--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true``) made
compile-bound files up to 40 % quicker (tests/test_engine.py 63 -> 40 s), but the tests
that train ran much slower (the real-data pause check 61 -> 190 s, the README's commands
203 -> 276 s), so a cold suite took longer in all, and results differed from a user's
runs in float32 rounding (1e-6 relative after 12 MLP steps).
"""

from __future__ import annotations

import os
import pathlib

import pytest

_IGNORE_PARTIAL_READ = "ignore:Error reading persistent compilation cache entry"
PRUNE_ABOVE_BYTES = 4 * 1024**3  # a whole cold suite writes about 0.1 GiB
PRUNE_TO_BYTES = 2 * 1024**3


def _cache_dir() -> str | None:
    chosen = os.environ.get("ECL_JAX_TEST_CACHE")
    if chosen is not None:
        return None if chosen.lower() in ("", "0", "off", "no", "false") else chosen
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ecl_jax", "jax-test-cache")


def _prune(folder: pathlib.Path) -> None:
    """Delete the least recently written JAX cache entries (``*-cache``, ``*-atime``) of
    ``folder`` once it holds more than PRUNE_ABOVE_BYTES, down to PRUNE_TO_BYTES; nothing else."""
    entries = []
    for p in folder.glob("*-cache"):
        try:
            st = p.stat()
        except OSError:
            continue
        entries.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in entries)
    if total <= PRUNE_ABOVE_BYTES:
        return
    for _, size, p in sorted(entries):
        if total <= PRUNE_TO_BYTES:
            break
        for f in (p, p.with_name(p.name[: -len("-cache")] + "-atime")):
            f.unlink(missing_ok=True)
        total -= size


def _enable_compilation_cache() -> None:
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    path = _cache_dir()
    if path is None:
        return
    pathlib.Path(path).mkdir(parents=True, exist_ok=True)
    _prune(pathlib.Path(path))
    settings = {
        "JAX_COMPILATION_CACHE_DIR": path,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
        # an entry the other worker is still writing reads as corrupt: JAX then compiles
        # anew and warns; keep that warning out of the stderr the CLI tests check
        "PYTHONWARNINGS": ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), _IGNORE_PARTIAL_READ])),
    }
    os.environ.update(settings)  # inherited by every subprocess and notebook kernel
    import jax  # this process: jax may have been imported by a plugin before this file

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


_enable_compilation_cache()


def pytest_configure(config) -> None:
    """Under xdist (``-n 2``), schedule with ``loadgroup`` unless ``--dist`` was given: a
    module marked ``pytest.mark.xdist_group`` then runs on one worker, so its module
    fixtures (a float64 subprocess, a set of training runs) are built once, not once per
    worker; every other test is balanced as under ``load``."""
    given = any(a == "--dist" or a.startswith("--dist=") or a == "-d" for a in config.invocation_params.args)
    if given:
        return
    if hasattr(config, "workerinput"):  # a worker parses the command line anew: it names its tests by group
        config.option.loadgroup = True
    elif getattr(config.option, "dist", "no") == "load":  # the controller: schedules by group
        config.option.dist = "loadgroup"


@pytest.fixture()
def home(tmp_path):
    """A working folder holding the experiment file `tiny.py`, notes, another tool's folder and data
    (the files a refused command must leave alone; see tests/cli_harness.py)."""
    from cli_harness import TINY

    (tmp_path / "tiny.py").write_text(TINY)
    (tmp_path / "notes.txt").write_text("a week of notes\n")
    (tmp_path / "runs" / "not_ours").mkdir(parents=True)
    (tmp_path / "runs" / "not_ours" / "results.csv").write_text("1,2,3\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.bin").write_bytes(b"\x00" * 100)
    return tmp_path
