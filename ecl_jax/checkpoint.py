"""Checkpoints: the carry of one algorithm's run, its metric history, and who it belongs to.

A checkpoint ``checkpoints/<algorithm>.npz`` holds the carry's leaves (state, step, key),
the metric history, the wall time so far, the state format and a *fingerprint*: a JSON
record of everything that determines the trajectory (the resolved config's trajectory
fields, the algorithm's name, options and static hyperparameters, the data identity:
data set, source, a hash of the node split; the state format). A resume compares the
stored fingerprint with the new run's and refuses a mismatch naming each differing
field, so two runs are never mixed. Files are read with ``allow_pickle=False`` (no code
runs on load) and written atomically (temporary file, fsync, rename).

Each checkpoint also carries a *checksum* (SHA-256 over the zip's CRC-32 of every member:
arrays, history, step, wall time, fingerprint), verified whenever it is read, and each
member read whole is checked against its CRC: an array altered after it was written, or a
damaged file, is refused. The checkpoint it replaced stays beside it as
``<algorithm>.npz.prev`` (a hard link, no copy), which the refusal offers as the way back.
See docs/design.md#run-folders-and-checkpoints.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax.errors import CheckpointError
from ecl_jax.execution import steps_done
from ecl_jax.run_folder import atomic_write_bytes

__all__ = [
    "CHECKPOINT_FORMAT",
    "NON_TRAJECTORY_FIELDS",
    "fingerprint",
    "fingerprint_diff",
    "save_checkpoint",
    "load_checkpoint",
    "read_meta",
    "previous_path",
]

CHECKPOINT_FORMAT = 5
"""Version of the checkpoint's state layout: 5 = as 4, and the carry holds the messages delivered
so far (:class:`ecl_jax.communication.Traffic`); 4 = as 3, and ECL's duals carry the per-end
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
    """Atomically write the carry's leaves, the metric history, the fingerprint and the
    checksum; the checkpoint it replaces is kept as :func:`previous_path`."""
    path = pathlib.Path(path)
    leaves = [np.asarray(a) for a in jax.tree_util.tree_leaves(jax.device_get(carry))]
    arrays = {f"leaf_{i}": a for i, a in enumerate(leaves)}
    step = steps_done(carry) if hasattr(carry, "step") else -1
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
    _append_checksum(buf)
    data = buf.getvalue()
    if path.is_file():
        _keep_previous(path)
    atomic_write_bytes(path, data)


def previous_path(path: pathlib.Path) -> pathlib.Path:
    """Where the checkpoint that ``path`` replaced is kept: ``<algorithm>.npz.prev``."""
    path = pathlib.Path(path)
    return path.with_name(path.name + ".prev")


def _keep_previous(path: pathlib.Path) -> None:
    """Hard-link the checkpoint about to be replaced as :func:`previous_path` (atomically:
    a link under a temporary name, then a rename). Where the file system has no hard
    links, no previous checkpoint is kept."""
    prev = previous_path(path)
    tmp = prev.with_name(f".{prev.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        os.link(path, tmp)
        os.replace(tmp, prev)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


_CHECKSUM_MEMBER = "checksum.npy"


def _checksum(members: list[zipfile.ZipInfo]) -> str:
    """SHA-256 over each member's name, size and CRC-32 (the checksum member left out).

    The zip format stores a CRC-32 of every member, and reading a member whole verifies its
    bytes against it; this digest binds those CRCs together, so a file rewritten with other
    arrays (even with the fingerprint kept) no longer matches. It detects changes and
    damage, not forgery: whoever rewrites a checkpoint can write a new checksum."""
    h = hashlib.sha256()
    for info in sorted(members, key=lambda i: i.filename):
        if info.filename != _CHECKSUM_MEMBER:
            h.update(f"{info.filename}\0{info.file_size}\0{info.CRC:08x}\n".encode())
    return h.hexdigest()


def _append_checksum(buf: io.BytesIO) -> None:
    """Append to the ``.npz`` in ``buf`` a ``checksum`` array: :func:`_checksum` of the rest."""
    with zipfile.ZipFile(buf, "a") as zf:
        digest = _checksum(zf.infolist())
        member = io.BytesIO()
        np.lib.format.write_array(member, np.asarray(digest), allow_pickle=False)
        zf.writestr(_CHECKSUM_MEMBER, member.getvalue())


def _fix(path: pathlib.Path) -> str:
    """How to get past a damaged checkpoint: the intact previous one when there is one."""
    prev = previous_path(path)
    if prev.is_file():
        try:
            step = _read(prev, keep_leaves=False)[0]["step"]
        except CheckpointError:
            pass
        else:
            return f"the previous checkpoint is intact: mv {prev} {path} resumes from step {step}; or {_FIX}"
    return _FIX


def _damaged(path: pathlib.Path, what: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} {what}; {_fix(path)}")


def _read(path: pathlib.Path, keep_leaves: bool) -> tuple[dict, list[np.ndarray]]:
    """The checkpoint's metadata (and its arrays if ``keep_leaves``), its checksum verified.

    Each member read whole is checked against its CRC-32 by the zip reader; the checksum
    binds the CRCs of all members, so the arrays need not be read to detect a rewrite."""
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as err:
        raise _damaged(path, f"is truncated or corrupted ({type(err).__name__}: {err})") from None
    try:
        with z:
            files = set(z.files)
            stored = str(z["checksum"]) if "checksum" in files else None
            if stored is not None and stored != _checksum(z.zip.infolist()):
                raise _damaged(path, "fails its checksum: its arrays or history differ from what was written "
                               "(changed since, or damaged)")
            meta = {
                "format": int(z["format"]) if "format" in files else 1,
                "n_leaves": int(z["n_leaves"]),
                "wall": float(z["wall"]),
                "history": json.loads(str(z["history"])),
                "step": int(z["step"]) if "step" in files else None,
                "fingerprint": json.loads(str(z["fingerprint"])) if "fingerprint" in files else None,
            }
            leaves = [z[f"leaf_{i}"] for i in range(meta["n_leaves"])] if keep_leaves else []
    except CheckpointError:
        raise
    except (KeyError, ValueError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise _damaged(path, f"is truncated or corrupted ({type(err).__name__}: {err})") from None
    if meta["step"] is None and meta["history"]:
        meta["step"] = int(meta["history"][-1].get("step", 0))
    return meta, leaves


def read_meta(path: pathlib.Path) -> dict:
    """Step, history, wall time, format and fingerprint of a checkpoint, its checksum verified
    (without reading the arrays). A checkpoint written before checksums existed is read unchecked."""
    return _read(pathlib.Path(path), keep_leaves=False)[0]


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

    The checksum is verified first (a changed or damaged file is refused, offering the
    previous checkpoint). With ``fingerprint``, the stored one must equal it (:class:`CheckpointError` naming the
    fields that differ). Raises CheckpointError naming the first leaf whose shape or dtype
    differs (another model, algorithm, topology or an older state format).
    """
    path = pathlib.Path(path)
    meta, leaves = _read(path, keep_leaves=True)
    if fingerprint is not None:
        check_fingerprint(path, meta, fingerprint)
    elif meta["format"] != CHECKPOINT_FORMAT:
        check_fingerprint(path, meta, {})
    n = meta["n_leaves"]
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    if len(paths_leaves) != n:
        raise CheckpointError(f"checkpoint {path} holds {n} arrays, this run's state has {len(paths_leaves)}; {_FIX}")
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
