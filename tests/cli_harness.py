"""The command-line harness the hostile-input tests share: a working folder full of other
people's files, ``ecl-jax`` called in this process (or as a real subprocess), a snapshot of
every file to show that a refused command changed nothing, the one-line-error check."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pathlib
import subprocess
import sys

import pytest

from ecl_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]

TINY = """
from ecl_jax.config import RunConfig
CONFIG = RunConfig(name="tiny", dataset="mnist5k", n_train=400, n_test=100, model="logistic", n_nodes=4,
                   partition="k_classes", partition_k=3, topology="ring", edge_schedule="bernoulli:K=2",
                   algorithms=("gossip",), lr=0.05, batch_size=8, steps=20, eval_every=10)
"""


def _snapshot(root: pathlib.Path, skip: pathlib.Path | None = None) -> dict:
    """path -> content hash of every file under root (except under ``skip``)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def _cli(cwd: pathlib.Path, *args: str, env: dict | None = None, real: bool = False) -> subprocess.CompletedProcess:
    """``ecl-jax *args`` run in ``cwd`` with ``env`` added (``ECL_JAX_DATA_DIR`` unset
    otherwise): in this process through ``cli.main``, or with ``real`` as a subprocess."""
    full_env = dict(os.environ)
    full_env.pop("ECL_JAX_DATA_DIR", None)
    full_env.update(env or {})
    if real:
        return subprocess.run(
            [sys.executable, "-m", "ecl_jax", *args], cwd=cwd, capture_output=True, text=True, env=full_env, timeout=600
        )
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        for k in set(os.environ) - set(full_env):
            mp.delenv(k)
        for k, v in full_env.items():
            mp.setenv(k, v)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(args))
            except SystemExit as stop:  # argparse's own errors
                code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def _one_line_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-3000:])
    assert "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("error: "), res.stderr
    for n in needles:
        assert n in res.stderr, (n, res.stderr)


