"""Safety rules of the runner, in-process: run names, ownership marker, atomic writes,
fingerprints, locks, option validation, extension of a finished run."""

from __future__ import annotations

import csv
import dataclasses
import errno
import json
import os

import numpy as np
import pytest

from ecl_jax import checkpoint, run_folder
from ecl_jax.config import ConfigError, RunConfig, apply_overrides
from ecl_jax.errors import CheckpointError, RunFolderError
from ecl_jax.runner import DivergenceError, build_algorithm, run_experiment

TINY = RunConfig(
    name="tiny", dataset="mnist5k", n_train=400, n_test=100, model="logistic", n_nodes=4,
    partition="k_classes", partition_k=3, topology="ring", edge_schedule="bernoulli:K=2",
    algorithms=("gossip",), lr=0.05, batch_size=8, steps=20, eval_every=10,
)


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------ names and ownership


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "/abs", " x", "~x", "x\x00"])
def test_run_name_must_be_one_plain_component(name):
    with pytest.raises(ConfigError, match="name"):
        RunConfig(name=name)


def test_fresh_refuses_a_folder_without_marker_and_names_it(tmp_path):
    victim = tmp_path / "tiny"
    victim.mkdir()
    (victim / "thesis.tex").write_text("chapter 1")
    cfg = dataclasses.replace(TINY, out_dir=str(tmp_path))
    with pytest.raises(RunFolderError, match=f"{victim}.*not made by ecl_jax"):
        run_experiment(cfg, quiet=True, fresh=True)
    assert (victim / "thesis.tex").read_text() == "chapter 1"
    with pytest.raises(RunFolderError):
        run_folder.clear(victim)
    with pytest.raises(RunFolderError):
        run_folder.remove(victim)
    assert (victim / "thesis.tex").exists()


@pytest.mark.slow
def test_fresh_does_not_follow_symlinks_out_of_the_run(tmp_path):
    cfg = dataclasses.replace(TINY, out_dir=str(tmp_path / "runs"))
    run_experiment(cfg, quiet=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    os.symlink(outside, tmp_path / "runs" / "tiny" / "link")
    run_experiment(cfg, quiet=True, fresh=True)
    assert (outside / "keep.txt").read_text() == "keep"
    assert not (tmp_path / "runs" / "tiny" / "link").exists()


def test_invalid_config_writes_nothing(tmp_path):
    for bad in (dict(topology="tours"), dict(dataset="mnist", data_dir=str(tmp_path / "none")),
                dict(algorithms=("ecl-pdmm",), options={"ecl-pdmm": {"K": 3}})):
        with pytest.raises(Exception) as err:
            run_experiment(dataclasses.replace(TINY, out_dir=str(tmp_path / "runs"), **bad), quiet=True)
        assert "Traceback" not in str(err.value)
        assert not (tmp_path / "runs").exists(), bad


def test_subsample_larger_than_the_data_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"n_train must be an integer in 1\.\.4000.*has 4000 training"):
        run_experiment(dataclasses.replace(TINY, out_dir=str(tmp_path), n_train=999_999), quiet=True)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_failed_run_does_not_block_the_corrected_command(tmp_path):
    cfg = dataclasses.replace(TINY, out_dir=str(tmp_path), lr=1e3, l2=1.0, steps=40)
    with pytest.raises(DivergenceError, match="no checkpoint exists yet"):
        run_experiment(cfg, quiet=True)
    res = run_experiment(dataclasses.replace(cfg, lr=0.05), quiet=True)  # same folder, corrected lr
    assert res.final["gossip"]["step"] == 40


# ------------------------------------------------------------------ atomic writes


def test_atomic_write_keeps_the_old_file_on_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    run_folder.atomic_write_text(path, '{"old": 1}')

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        run_folder.atomic_write_text(path, '{"new": 2}')
    assert json.loads(path.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # no temporary file left
    msg = run_folder.describe_os_error(OSError(errno.ENOSPC, "x", str(path)))
    assert "disk is full" in msg and str(path) in msg


def test_corrupted_files_name_themselves(tmp_path):
    cfg = dataclasses.replace(TINY, out_dir=str(tmp_path))
    res = run_experiment(cfg, quiet=True)
    (res.run_dir / "config.json").write_text('{"steps": 2')
    with pytest.raises(RunFolderError, match=r"config\.json.*corrupted.*--fresh"):
        run_experiment(cfg, quiet=True)
    (res.run_dir / "config.json").unlink()
    ck = res.run_dir / "checkpoints" / "gossip.npz"
    ck.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(CheckpointError, match=r"gossip\.npz is truncated or corrupted.*delete that file"):
        run_experiment(cfg, quiet=True)


# ------------------------------------------------------------------ fingerprints


def test_checkpoint_fingerprint_names_the_differing_field(tmp_path):
    cfg = dataclasses.replace(TINY, out_dir=str(tmp_path), steps=10)
    res = run_experiment(cfg, quiet=True)
    (res.run_dir / "config.json").unlink()  # the config no longer guards the folder
    for change, field in ((dict(lr=0.1), "config.lr"), (dict(batch_size=4), "config.batch_size"),
                          (dict(options={"gossip": {"momentum": 0.5}}), "options.momentum"),
                          (dict(n_train=300), "config.n_train")):
        with pytest.raises(CheckpointError, match=rf"belongs to a different run: .*{field}"):
            run_experiment(dataclasses.replace(cfg, **change), quiet=True)
    fp = checkpoint.read_meta(res.run_dir / "checkpoints" / "gossip.npz")["fingerprint"]
    assert fp["algorithm"] == "gossip" and fp["state_format"] == checkpoint.CHECKPOINT_FORMAT
    assert set(fp["data"]) == {"dataset", "source", "split", "test"} and len(fp["data"]["split"]) == 24
    assert len(fp["data"]["test"]) == 24  # the test set too (resuming on another one is refused)


def test_checkpoint_without_fingerprint_is_refused(tmp_path):
    cfg = dataclasses.replace(TINY, out_dir=str(tmp_path), steps=10)
    res = run_experiment(cfg, quiet=True)
    ck = res.run_dir / "checkpoints" / "gossip.npz"
    with np.load(ck) as z:
        old = {k: z[k] for k in z.files if k not in ("fingerprint", "checksum")}  # as older ecl_jax wrote
    np.savez(ck, **old)
    with pytest.raises(CheckpointError, match="no run fingerprint"):
        run_experiment(dataclasses.replace(cfg, steps=20), quiet=True)


# ------------------------------------------------------------------ extension and many calls


@pytest.mark.slow
def test_finished_run_extends_to_more_steps_bit_identically(tmp_path):
    straight = run_experiment(dataclasses.replace(TINY, out_dir=str(tmp_path / "a"), steps=40), quiet=True)
    cfg = dataclasses.replace(TINY, out_dir=str(tmp_path / "b"), steps=20)
    run_experiment(cfg, quiet=True)
    extended = run_experiment(dataclasses.replace(cfg, steps=40), quiet=True)
    a, b = _rows(straight.run_dir / "metrics.csv"), _rows(extended.run_dir / "metrics.csv")
    assert [r["step"] for r in b] == ["10", "20", "30", "40"]
    for ra, rb in zip(a, b):
        ra.pop("wall_time"), rb.pop("wall_time")
        assert ra == rb
    with pytest.raises(ConfigError, match="already at step 40, past steps=20"):
        run_experiment(cfg, quiet=True)
    assert json.loads((extended.run_dir / "config.json").read_text())["steps"] == 40


@pytest.mark.slow
def test_adding_an_algorithm_keeps_the_earlier_results(tmp_path):
    cfg = dataclasses.replace(TINY, out_dir=str(tmp_path))
    run_experiment(cfg, quiet=True)
    res = run_experiment(dataclasses.replace(cfg, algorithms=("local",)), quiet=True)
    rows = _rows(res.run_dir / "metrics.csv")
    assert sorted({r["algorithm"] for r in rows}) == ["gossip", "local"]
    assert sorted(json.loads((res.run_dir / "final.json").read_text())) == ["gossip", "local"]
    assert json.loads((res.run_dir / "config.json").read_text())["algorithms"] == ["gossip", "local"]


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    import socket
    import subprocess
    import sys

    folder = run_folder.create(tmp_path / "r")
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    (folder / run_folder.LOCK).write_text(f"{p.pid} {socket.gethostname()}\n")  # dead holder
    with run_folder.RunLock(folder):
        assert (folder / run_folder.LOCK).read_text().split()[0] == str(os.getpid())
        other = run_folder.RunLock(folder)
        # the live holder (this process) seen from another process's point of view
        (folder / run_folder.LOCK).write_text(f"1 {socket.gethostname()}\n")  # PID 1 is always alive
        with pytest.raises(RunFolderError, match="in use by process 1"):
            other.acquire()
    assert not (folder / run_folder.LOCK).exists()


# ------------------------------------------------------------------ options


@pytest.mark.parametrize(
    "items, needle",
    [
        (["ecl_pdmm.eta=50"], "did you mean 'ecl-pdmm'"),
        (["ecl-pdmm.momentum=0.9"], "ecl-pdmm has no option 'momentum'"),
        (["pdmm-isvr.eta=2", "algorithms=pdmm-isvr"], "pdmm-isvr has no option 'eta'"),
        (["dsgd.lr=0.1"], "not in this run's algorithms"),
        (["gossip.lr=-1"], "gossip.lr must be a positive"),
        (["gossip.lr=0"], "gossip.lr must be a positive"),
        (["lr=0"], "lr must be a positive"),
        (["algorithms=gossip,gossip"], "more than once"),
        (["algorithms="], "non-empty"),
        (["steps=0"], "steps must be a positive integer"),
        (["n_train=0"], "n_train must be a positive integer or None"),
        (["partition=iid"], "partition_k=3 has no effect with partition='iid'"),
        (["partition_alpha=0.1"], "partition_alpha=0.1 has no effect"),
        (["hops=3"], "hops=3 has no effect with topology='ring'"),
        (["published={\"test_acc\": {\"gossip\": 65.4}}"], r"must be a fraction in \[0, 1\]"),
        (["published={\"accuracy\": {\"gossip\": 0.6}}"], "unknown metric 'accuracy'"),
        (["options=[1, 2]"], "JSON object"),
        (["dataset=foo"], "unknown dataset 'foo'"),
        (["dataset=tfds:"], "unknown dataset 'tfds:'"),
        (["data_dir=/somewhere"], "data_dir has no effect with dataset='mnist5k'"),
        (["class_lists=[[1, 2]]"], "class_lists=.* has no effect with partition='k_classes'"),
        (["lr=nan"], "lr must be a positive finite"),
    ],
)
def test_options_that_would_do_nothing_are_refused(items, needle):
    with pytest.raises(ConfigError, match=needle):
        apply_overrides(TINY, items)


def test_options_json_and_algorithm_specific_checks():
    cfg = apply_overrides(TINY, ['options={"gossip": {"momentum": 0.5}}', "gossip.lr=0.2"])
    assert cfg.options == {"gossip": {"momentum": 0.5, "lr": 0.2}}
    tx_alg = build_algorithm("gossip", cfg)
    assert tx_alg.name == "gossip"
    with pytest.raises(ConfigError, match=r"momentum must be in \[0, 1\)"):
        build_algorithm("gossip", apply_overrides(TINY, ["gossip.momentum=-1"]))
    pd = apply_overrides(TINY, ["algorithms=ecl-pdmm", "ecl-pdmm.K=4"])
    with pytest.raises(ConfigError, match="ecl-pdmm.K is used only with eta_rule"):
        build_algorithm("ecl-pdmm", pd)
    ok = apply_overrides(TINY, ["algorithms=ecl-pdmm", "ecl-pdmm.K=4", "ecl-pdmm.eta_rule=isvr_paper"])
    assert build_algorithm("ecl-pdmm", ok).config.K == 4
