"""Hostile input to the checkpoint reader: arrays altered behind a kept fingerprint, a
truncated file, a previous checkpoint that is itself damaged, an older file without a
checksum. Each refusal is one line naming the file and the way out, and changes nothing on
disk; the way out it offers works (docs/design.md#run-folders-and-checkpoints)."""

from __future__ import annotations

import csv
import pathlib

import numpy as np
import pytest
from cli_harness import _cli, _one_line_error, _snapshot

from ecl_jax import checkpoint
from ecl_jax.errors import CheckpointError

RUN = ["run", "tiny.py", "--quiet", "--set", "name=ck"]


def _ckpts(home: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    ck = home / "runs" / "ck" / "checkpoints" / "gossip.npz"
    return ck, checkpoint.previous_path(ck)


def _zero_arrays_keep_the_rest(ck: pathlib.Path) -> None:
    """What a careless script does: load, zero the state, save with every other field kept."""
    with np.load(ck, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for k in arrays:
        if k.startswith("leaf_") and arrays[k].dtype.kind == "f":
            arrays[k] = np.zeros_like(arrays[k])
    np.savez(ck, **arrays)


def _metrics(home: pathlib.Path, name: str) -> list[dict]:
    with open(home / "runs" / name / "metrics.csv") as fh:
        return [{k: v for k, v in row.items() if "wall" not in k} for row in csv.DictReader(fh)]


def test_the_replaced_checkpoint_is_kept_and_verifies(home):
    assert _cli(home, *RUN).returncode == 0  # steps=20, a checkpoint at 10 and at 20
    ck, prev = _ckpts(home)
    assert checkpoint.read_meta(ck)["step"] == 20 and checkpoint.read_meta(prev)["step"] == 10
    assert ck.stat().st_ino != prev.stat().st_ino  # the new one was written anew, not in place
    assert sorted(p.name for p in ck.parent.iterdir()) == ["gossip.npz", "gossip.npz.prev"]  # no temporaries
    assert _cli(home, *RUN, "--fresh").returncode == 0  # --fresh starts again: the old pair is gone
    assert checkpoint.read_meta(prev)["step"] == 10


def test_altered_arrays_are_refused_and_the_previous_checkpoint_resumes_identically(home):
    assert _cli(home, *RUN).returncode == 0
    ck, prev = _ckpts(home)
    _zero_arrays_keep_the_rest(ck)
    before = _snapshot(home)
    res = _cli(home, *RUN, "--set", "steps=40")
    _one_line_error(res, "gossip.npz fails its checksum", "changed since, or damaged",
                    "mv runs/ck/checkpoints/gossip.npz.prev runs/ck/checkpoints/gossip.npz resumes from step 10",
                    "--fresh")
    assert _snapshot(home) == before
    # the way out it offers: the previous checkpoint, then the run continues as if never stopped
    prev.replace(ck)
    assert _cli(home, *RUN, "--set", "steps=40").returncode == 0
    assert _cli(home, "run", "tiny.py", "--quiet", "--set", "name=straight", "--set", "steps=40").returncode == 0
    assert _metrics(home, "ck") == _metrics(home, "straight")


@pytest.mark.parametrize("damage", ["truncate", "zero"])
def test_a_damaged_checkpoint_without_an_intact_previous_one_offers_fresh(home, damage):
    assert _cli(home, *RUN).returncode == 0
    ck, prev = _ckpts(home)
    prev.write_bytes(prev.read_bytes()[:300])  # the previous one is damaged too
    if damage == "truncate":
        ck.write_bytes(ck.read_bytes()[:-100])
    else:
        _zero_arrays_keep_the_rest(ck)
    before = _snapshot(home)
    res = _cli(home, *RUN, "--set", "steps=40")
    what = "is truncated or corrupted" if damage == "truncate" else "fails its checksum"
    _one_line_error(res, f"gossip.npz {what}", "delete that file", "--fresh")
    assert "previous checkpoint" not in res.stderr
    assert _snapshot(home) == before


def test_a_damaged_finished_checkpoint_is_refused_before_any_work(home):
    """A finished algorithm's checkpoint is read for its history when another is added:
    verified there too, before the new algorithm runs."""
    assert _cli(home, *RUN).returncode == 0
    ck, _ = _ckpts(home)
    _zero_arrays_keep_the_rest(ck)
    before = _snapshot(home)
    res = _cli(home, *RUN, "--algorithms", "gossip,dsgd")
    _one_line_error(res, "gossip.npz fails its checksum")
    assert _snapshot(home) == before


def test_a_checkpoint_from_before_checksums_resumes(home):
    assert _cli(home, *RUN).returncode == 0
    ck, prev = _ckpts(home)
    prev.unlink()
    with np.load(ck, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "checksum"}
    np.savez(ck, **arrays)
    res = _cli(home, *RUN, "--set", "steps=40")
    assert res.returncode == 0, res.stderr
    assert checkpoint.read_meta(ck)["step"] == 40 and checkpoint.read_meta(prev)["step"] == 30


def _tiny_checkpoint(path: pathlib.Path) -> tuple:
    import jax.numpy as jnp

    from ecl_jax.engine import Carry

    carry = Carry(state={"w": jnp.arange(4096, dtype=jnp.float32)}, step=jnp.int32(3), key=jnp.zeros(2, jnp.uint32))
    checkpoint.save_checkpoint(path, carry, [{"step": 3, "loss": 0.5}], 1.5, {"algorithm": "x"})
    return carry


@pytest.mark.parametrize("field", ["leaf_0", "history", "wall", "step", "fingerprint"])
def test_a_rewrite_of_any_field_with_the_rest_kept_is_refused(tmp_path, field):
    ck = tmp_path / "x.npz"
    carry = _tiny_checkpoint(ck)
    with np.load(ck, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[field] = {"leaf_0": arrays["leaf_0"] + 1, "history": np.asarray('[{"step": 3, "loss": 0.25}]'),
                     "wall": np.asarray(9.0), "step": np.asarray(4), "fingerprint": np.asarray('{"algorithm": "y"}')}[field]
    np.savez(ck, **arrays)
    with pytest.raises(CheckpointError, match=r"x\.npz fails its checksum"):
        checkpoint.read_meta(ck)
    with pytest.raises(CheckpointError, match=r"x\.npz fails its checksum"):
        checkpoint.load_checkpoint(ck, carry)


def test_bytes_damaged_in_place_are_caught_when_the_arrays_are_read(tmp_path):
    ck = tmp_path / "x.npz"
    carry = _tiny_checkpoint(ck)
    raw = bytearray(ck.read_bytes())
    at = raw.index(np.arange(4096, dtype=np.float32)[1000:1004].tobytes())
    raw[at] ^= 0x40  # one bit of one parameter, the zip's directory untouched
    ck.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"x\.npz is truncated or corrupted .*Bad CRC-32"):
        checkpoint.load_checkpoint(ck, carry)
