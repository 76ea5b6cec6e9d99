"""Speed settings that are on by default (docs/performance.md#cpu-speed-settings).

Three measured causes made the KDD20 CNN slow on XLA:CPU, each fixed here and each with
its own switch (an environment variable read at start-up; ``0``/``off`` turns it off):

* ``ECL_JAX_EIGEN_CONV`` -- add ``--xla_cpu_experimental_ynn_fusion_type=`` to
  ``XLA_FLAGS`` (convolutions through Eigen instead of jaxlib 0.10's default YNNPACK
  path, several times faster on the KDD20 CNN). XLA reads ``XLA_FLAGS`` when its first
  backend starts, so :func:`apply_xla_flags` runs when ``ecl_jax`` is imported; after
  that it only warns, once. It is added only where this jaxlib knows the flag (an
  unknown flag aborts XLA) and where ``XLA_FLAGS`` does not already set it.
* ``ECL_JAX_REDUCE_POOL`` -- max-pooling as a reshape (or strided slices) and a max
  (:func:`ecl_jax.models.max_pool`) instead of XLA's reduce-window, whose gradient
  (select-and-scatter) is slow on CPU. Read when a model is traced.
* ``ECL_JAX_TCMALLOC`` -- the command line re-executes itself once with tcmalloc in
  ``LD_PRELOAD`` when the library is installed (glibc's malloc page-faults fresh buffers
  on every step), or prints a one-line hint with the install command when it is not.

``ECL_JAX_TUNING=0`` turns all three off.
"""

from __future__ import annotations

import functools
import mmap
import os
import sys
import warnings

EIGEN_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
_FLAG_NAME = EIGEN_CONV_FLAG[2:-1]
_OFF = ("0", "off", "false", "no")
SETTINGS = ("eigen_conv", "reduce_pool", "tcmalloc")
TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
TCMALLOC_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                 "/usr/local/lib")
TCMALLOC_HINT = ("note: tcmalloc is not installed; training steps allocate faster with it "
                 "(Debian/Ubuntu: sudo apt-get install libtcmalloc-minimal4; ECL_JAX_TCMALLOC=0 hides this)")
_REEXEC_MARK = "ECL_JAX_TCMALLOC_REEXEC"


def enabled(setting: str, environ: dict | None = None) -> bool:
    """Whether ``setting`` (one of :data:`SETTINGS`) is on: its variable
    ``ECL_JAX_<SETTING>`` and ``ECL_JAX_TUNING`` both unset or not ``0``/``off``."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown speed setting {setting!r}; valid: {', '.join(SETTINGS)}")
    env = os.environ if environ is None else environ
    for var in ("ECL_JAX_TUNING", f"ECL_JAX_{setting.upper()}"):
        if env.get(var, "").strip().lower() in _OFF:
            return False
    return True


@functools.lru_cache(maxsize=None)
def jaxlib_knows_eigen_conv_flag() -> bool:
    """Whether the installed jaxlib has the flag (its name is in ``libjax_common.so``): XLA
    aborts the process on a flag it does not know, so it is never set blind."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("jaxlib")
        if spec is None or not spec.submodule_search_locations:
            return False
        for folder in spec.submodule_search_locations:
            path = os.path.join(folder, "libjax_common.so")
            if os.path.exists(path):
                with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    return mm.find(_FLAG_NAME.encode()) >= 0
    except (OSError, ValueError, ImportError):
        return False
    return False


def _backends_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # a JAX without the probe: assume the worst
        return True


def apply_xla_flags() -> bool:
    """Add :data:`EIGEN_CONV_FLAG` to ``XLA_FLAGS`` where it is on, known and not set yet.

    Returns whether the flag is in effect for this process. If JAX's backends already
    started (JAX used before ``import ecl_jax``), warns once with the line to add instead."""
    flags = os.environ.get("XLA_FLAGS", "")
    if _FLAG_NAME in flags:
        return EIGEN_CONV_FLAG in flags.split()
    if not enabled("eigen_conv") or not jaxlib_knows_eigen_conv_flag():
        return False
    if _backends_started():
        warnings.warn(
            "ecl_jax: JAX was already running when ecl_jax was imported, so convolutions use "
            "jaxlib's slower default CPU path; import ecl_jax before the first JAX computation, "
            f"or start Python with XLA_FLAGS='{EIGEN_CONV_FLAG}' (docs/performance.md#cpu-speed-settings)",
            stacklevel=3)
        return False
    os.environ["XLA_FLAGS"] = (flags + " " + EIGEN_CONV_FLAG).strip()
    return True


def find_tcmalloc() -> str | None:
    """The path of an installed tcmalloc shared library, or None."""
    for folder in TCMALLOC_DIRS:
        for name in TCMALLOC_NAMES:
            path = os.path.join(folder, name)
            if os.path.exists(path):
                return path
    return None


def _tcmalloc_loaded() -> bool:
    try:
        with open("/proc/self/maps") as f:
            return "tcmalloc" in f.read()
    except OSError:
        return False


_allocator_missing = False


def reexec_with_tcmalloc(argv: list[str], module: str = "ecl_jax") -> None:
    """Replace this process by ``python -m module argv`` with tcmalloc preloaded, where it is
    on, on Linux, installed and not loaded yet (once: a marker variable stops a loop).
    Returns only when it did not re-execute; where tcmalloc is not installed it notes so
    for :func:`allocator_hint`."""
    global _allocator_missing
    if not sys.platform.startswith("linux") or not enabled("tcmalloc") or os.environ.get(_REEXEC_MARK):
        return
    if _tcmalloc_loaded():
        return
    lib = find_tcmalloc()
    if lib is None:
        _allocator_missing = True
        return
    env = preload_env()
    env[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)
    except OSError:  # cannot re-execute: run on with glibc's malloc
        return


def allocator_hint() -> str | None:
    """:data:`TCMALLOC_HINT` where :func:`reexec_with_tcmalloc` found no tcmalloc, else None."""
    return TCMALLOC_HINT if _allocator_missing else None


def preload_env(environ: dict | None = None) -> dict:
    """A copy of ``environ`` (default ``os.environ``) for a child process: tcmalloc in
    ``LD_PRELOAD`` where the setting is on and the library installed (the bench's workers)."""
    env = dict(os.environ if environ is None else environ)
    lib = find_tcmalloc()
    if lib and enabled("tcmalloc", env) and lib not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = " ".join(x for x in (env.get("LD_PRELOAD", ""), lib) if x)
    return env


def summary() -> dict:
    """What is in effect in this process (the bench records it with every engine row)."""
    return dict(
        eigen_conv=EIGEN_CONV_FLAG in os.environ.get("XLA_FLAGS", "").split(),
        reduce_pool=enabled("reduce_pool"),
        tcmalloc=_tcmalloc_loaded(),
    )
