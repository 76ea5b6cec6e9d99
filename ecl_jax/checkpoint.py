"""Checkpoints: the carry of one algorithm's run, its metric history, and who it belongs to.

A checkpoint ``checkpoints/<algorithm>.npz`` holds the carry's leaves (state, step, key),
the metric history, the wall time so far, the state format and a *fingerprint*: a JSON
record of everything that determines the trajectory (the resolved config's trajectory
fields, the algorithm's name, options and static hyperparameters, the data identity:
data set, source, a hash of the node split; the state format). A resume compares the
stored fingerprint with the new run's and refuses a mismatch naming each differing
field, so two runs are never mixed. Files are read with ``allow_pickle=False`` (no code
runs on load) and written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import pathlib
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax.errors import CheckpointError
from ecl_jax.run_folder import atomic_write_bytes

__all__ = [
    "CHECKPOINT_FORMAT",
    "NON_TRAJECTORY_FIELDS",
    "fingerprint",
    "fingerprint_diff",
    "save_checkpoint",
    "load_checkpoint",
    "read_meta",
]

CHECKPOINT_FORMAT = 4
"""Version of the checkpoint's state layout: 4 = as 3, and ECL's duals carry the per-end
``news`` flags (:class:`ecl_jax.duals.EdgeDuals`); 3 = per-edge state in the layout ``config.layout``
picks (:mod:`ecl_jax.layouts`; "auto" picks shift on rings and tori), ECL's duals as
:class:`ecl_jax.duals.EdgeDuals`; 2 = the slots layout by default on those graphs; 1 (no
stamp) = ECL duals per directed edge."""

NON_TRAJECTORY_FIELDS = frozenset(
    {"name", "out_dir", "published", "published_note", "description", "x_axis", "checkpoint_every", "steps", "algorithms", "options"}
)
"""Config fields that do not change an algorithm's trajectory or its recorded metrics:
where results go, plot annotations, how often to save, and the step budget (a finished
run may be extended). ``options`` is compared per algorithm (only its own entry)."""

_FIX = "delete that file to restart this algorithm, or re-run with --fresh to restart the run"


def fingerprint(config_dict: dict, algorithm: str, options: dict, settings: dict, data: dict) -> dict:
    """The record a checkpoint must match to be resumed (all values JSON-able)."""
    return {
        "state_format": CHECKPOINT_FORMAT,
        "algorithm": algorithm,
        "options": dict(sorted(options.items())),
        "settings": {k: settings[k] for k in sorted(settings)},
        "config": {k: v for k, v in sorted(config_dict.items()) if k not in NON_TRAJECTORY_FIELDS},
        "data": dict(data),
    }


def _flat(d: Any, prefix: str = "") -> dict:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: d}


ADDED_LATER = frozenset({"data.test"})
"""Fingerprint fields that older checkpoints do not carry: absent there, they are not
compared (such a checkpoint cannot be checked for them); present, they must match."""


def fingerprint_diff(stored: dict, current: dict) -> list[str]:
    """Human-readable differences ``field: stored -> current`` between two fingerprints."""
    a, b = _flat(stored), _flat(current)
    out = []
    for k in sorted(set(a) | set(b)):
        if k in ADDED_LATER and k not in a:
            continue
        va, vb = a.get(k, "(absent)"), b.get(k, "(absent)")
        if va != vb:
            what = " (the test set: its images or labels changed since this checkpoint was evaluated)" \
                if k == "data.test" else ""
            out.append(f"{k} is {va!r} in the checkpoint, {vb!r} now{what}")
    return out


def save_checkpoint(path: pathlib.Path, carry: Any, history: list[dict], wall: float,
                    fingerprint: dict | None = None) -> None:
    """Atomically write the carry's leaves, the metric history and the fingerprint."""
    import io

    leaves = jax.tree_util.tree_leaves(jax.device_get(carry))
    arrays = {f"leaf_{i}": np.asarray(a) for i, a in enumerate(leaves)}
    step = int(np.asarray(carry.step)) if hasattr(carry, "step") else -1
    buf = io.BytesIO()
    np.savez(
        buf,
        format=CHECKPOINT_FORMAT,
        n_leaves=len(leaves),
        wall=wall,
        step=step,
        history=json.dumps(history, default=_jsonable),
        fingerprint=json.dumps(fingerprint if fingerprint is not None else {}, default=_jsonable),
        **arrays,
    )
    atomic_write_bytes(path, buf.getvalue())


def _open(path: pathlib.Path):
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted ({type(err).__name__}: {err}); {_FIX}") from None


def read_meta(path: pathlib.Path) -> dict:
    """Step, history, wall time, format and fingerprint of a checkpoint, without its arrays."""
    path = pathlib.Path(path)
    try:
        with _open(path) as z:
            files = set(z.files)
            meta = {
                "format": int(z["format"]) if "format" in files else 1,
                "n_leaves": int(z["n_leaves"]),
                "wall": float(z["wall"]),
                "history": json.loads(str(z["history"])),
                "step": int(z["step"]) if "step" in files else None,
                "fingerprint": json.loads(str(z["fingerprint"])) if "fingerprint" in files else None,
            }
    except CheckpointError:
        raise
    except (KeyError, ValueError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted ({type(err).__name__}: {err}); {_FIX}") from None
    if meta["step"] is None and meta["history"]:
        meta["step"] = int(meta["history"][-1].get("step", 0))
    return meta


def check_fingerprint(path: pathlib.Path, meta: dict, expected: dict) -> None:
    """Refuse a checkpoint whose format or fingerprint differs from ``expected``."""
    fmt = meta["format"]
    if fmt != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has state format {fmt}; this ecl_jax reads format {CHECKPOINT_FORMAT} "
            f"(format 4: per-edge state in the layout config.layout picks, ECL duals as ecl_jax.duals.EdgeDuals with news flags); {_FIX}"
        )
    stored = meta["fingerprint"]
    if not stored:
        raise CheckpointError(
            f"checkpoint {path} carries no run fingerprint (written by an older ecl_jax), so it cannot be "
            f"checked against this run; {_FIX}"
        )
    diff = fingerprint_diff(stored, expected)
    if diff:
        shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise CheckpointError(
            f"checkpoint {path} belongs to a different run: {shown}. Resuming would mix two runs; "
            f"{_FIX}, or --set name=... for a new run folder"
        )


def load_checkpoint(path: pathlib.Path, template: Any, fingerprint: dict | None = None) -> tuple[Any, list[dict], float]:
    """Restore a carry into the structure of ``template`` (a freshly initialised carry).

    With ``fingerprint``, the stored one must equal it (:class:`CheckpointError` naming the
    fields that differ). Raises CheckpointError naming the first leaf whose shape or dtype
    differs (another model, algorithm, topology or an older state format).
    """
    path = pathlib.Path(path)
    meta = read_meta(path)
    if fingerprint is not None:
        check_fingerprint(path, meta, fingerprint)
    elif meta["format"] != CHECKPOINT_FORMAT:
        check_fingerprint(path, meta, {})
    n = meta["n_leaves"]
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    if len(paths_leaves) != n:
        raise CheckpointError(f"checkpoint {path} holds {n} arrays, this run's state has {len(paths_leaves)}; {_FIX}")
    try:
        with _open(path) as z:
            leaves = [z[f"leaf_{i}"] for i in range(n)]
    except (KeyError, ValueError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted ({type(err).__name__}: {err}); {_FIX}") from None
    for (kp, t), leaf in zip(paths_leaves, leaves):
        if np.shape(t) != np.shape(leaf) or np.dtype(t.dtype).kind != leaf.dtype.kind:
            raise CheckpointError(
                f"checkpoint {path} does not match this run's model/algorithm/topology: state"
                f"{jax.tree_util.keystr(kp)} is {leaf.dtype}{list(np.shape(leaf))} in the file, "
                f"{np.dtype(t.dtype)}{list(np.shape(t))} here; {_FIX}"
            )
    restored = [jnp.asarray(leaf, dtype=t.dtype) for (_, t), leaf in zip(paths_leaves, leaves)]
    return jax.tree_util.tree_unflatten(treedef, restored), meta["history"], meta["wall"]


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(type(x))
