"""The runner split by job (docs/design.md#runner-callbacks): ``run_experiment`` runs each
algorithm as one ``Engine.run`` (the chunk loop lives only there), with the callbacks of
``ecl_jax.callbacks`` in a fixed order, and ``ecl_jax.records`` writes the files."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecl_jax import callbacks as cbs
from ecl_jax import records, runner
from ecl_jax import topology as tp
from ecl_jax.algorithms import gossip
from ecl_jax.checkpoint import read_meta
from ecl_jax.config import RunConfig
from ecl_jax.engine import Carry, Engine

TINY = RunConfig(
    name="tiny", dataset="mnist5k", n_train=400, n_test=100, model="logistic", n_nodes=4,
    partition="k_classes", partition_k=3, topology="ring", edge_schedule="bernoulli:K=2",
    algorithms=("ecl-pdmm", "gossip"), lr=0.05, batch_size=8, steps=30, eval_every=10,
)


@pytest.fixture
def counted(monkeypatch):
    """Count Engine.run calls and Engine.run_chunk calls, and whether each chunk ran inside run."""
    log = {"runs": [], "chunks_inside": 0, "chunks_outside": 0}
    depth = [0]
    run, run_chunk = Engine.run, Engine.run_chunk

    def counting_run(self, *args, **kwargs):
        log["runs"].append((self.algorithm.name, [type(cb).__name__ for cb in kwargs.get("callbacks", ())]))
        depth[0] += 1
        try:
            return run(self, *args, **kwargs)
        finally:
            depth[0] -= 1

    def counting_chunk(self, *args, **kwargs):
        log["chunks_inside" if depth[0] else "chunks_outside"] += 1
        return run_chunk(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "run", counting_run)
    monkeypatch.setattr(Engine, "run_chunk", counting_chunk)
    return log


@pytest.mark.slow
def test_every_chunk_of_run_experiment_goes_through_engine_run(tmp_path, counted):
    res = runner.run_experiment(dataclasses.replace(TINY, out_dir=str(tmp_path)), quiet=True)
    order = ["DivergenceCheck", "Recorder", "Progress", "Checkpointer", "StopOnInterrupt"]
    assert counted["runs"] == [("ecl-pdmm", order), ("gossip", order)]
    assert counted["chunks_inside"] == 6 and counted["chunks_outside"] == 0
    assert [r["step"] for r in res.histories["gossip"]] == [10, 20, 30]


@pytest.mark.slow
def test_interrupt_and_resume_go_through_engine_run(tmp_path, counted):
    cfg = dataclasses.replace(TINY, out_dir=str(tmp_path))
    with pytest.raises(KeyboardInterrupt, match="stopped after 4 chunks"):
        runner.run_experiment(cfg, quiet=True, stop_after_chunks=4)
    assert counted["runs"][-1][1][-1] == "StopAfter"  # last, after the checkpoint
    assert read_meta(tmp_path / "tiny" / "checkpoints" / "gossip.npz")["step"] == 10
    counted["runs"].clear()
    res = runner.run_experiment(cfg, quiet=True)
    # ecl-pdmm is finished (its run has no chunk to do), gossip continues from step 10
    assert [name for name, _ in counted["runs"]] == ["ecl-pdmm", "gossip"]
    assert counted["chunks_inside"] == 4 + 2 and counted["chunks_outside"] == 0
    assert [r["step"] for r in res.histories["gossip"]] == [10, 20, 30]


@pytest.mark.slow
def test_the_plan_is_printed_once_per_algorithm(tmp_path, capsys):
    runner.run_experiment(dataclasses.replace(TINY, out_dir=str(tmp_path), steps=10), quiet=False)
    err = capsys.readouterr().err
    for name in TINY.algorithms:
        lines = [ln for ln in err.splitlines() if ln.startswith(f"[{name}] plan: ")]
        assert len(lines) == 1, err
        assert lines[0].startswith(f"[{name}] plan: scan loop, vmapped node gradients (")


def test_runner_names_still_resolve():
    for name in ("DivergenceError", "Progress", "summarize", "write_metrics_csv", "save_checkpoint",
                 "load_checkpoint", "build_algorithm", "build_topology", "run_experiment", "prepare_data"):
        assert hasattr(runner, name), name
    assert runner.DivergenceError is cbs.DivergenceError and runner.Progress is cbs.Progress
    assert runner.summarize is records.summarize and runner.write_metrics_csv is records.write_metrics_csv


# ------------------------------------------------------------------ callbacks
ALG = gossip(0.1)


def _carry(step, value=1.0):
    state = ALG.init({"w": jnp.full((4, 2), value)}, tp.ring(4))
    return Carry(state, jnp.int32(step), jax.random.PRNGKey(0))


def test_checkpointer_saves_every_k_chunks_and_at_the_end(tmp_path):
    rec = cbs.Recorder("gossip", TINY, mean_count=100.0)
    ck = cbs.Checkpointer(tmp_path / "g.npz", rec, every=2, total_steps=50, fingerprint=None)
    saved = []
    for step in (10, 20, 30, 40, 50):
        rec(_carry(step), {"step": step, "consensus_distance": 0.5})
        ck(_carry(step), {})
        saved.append(ck.saved_step)
    assert saved == [None, 20, 20, 40, 50]
    meta = read_meta(tmp_path / "g.npz")
    assert meta["step"] == 50 and [r["step"] for r in meta["history"]] == [10, 20, 30, 40, 50]
    assert rec.history[0]["samples_seen"] == 10 * 8 * 4 and rec.history[0]["epoch"] == 10 * 8 / 100.0


def test_divergence_check_names_the_kept_checkpoint():
    rec = cbs.Recorder("gossip", TINY, mean_count=1.0)
    ck = cbs.Checkpointer(None, rec, every=1, total_steps=100)
    check = cbs.DivergenceCheck(ALG, ck)
    check(_carry(10), {"step": 10, "consensus_distance": 0.1})  # finite: passes
    with pytest.raises(cbs.DivergenceError, match=r"gossip diverged \(NaN/inf\) by step 20 .*no checkpoint exists yet"):
        check(_carry(20), {"step": 20, "consensus_distance": np.nan})
    ck.saved_step = 10
    with pytest.raises(cbs.DivergenceError, match=r"by step 20 .*its last good checkpoint \(step 10\) is kept"):
        check(_carry(20, np.inf), {"step": 20, "consensus_distance": 0.1})  # non-finite models


def test_stop_after_counts_across_runs_and_never_stops_a_finished_run():
    stop = cbs.StopAfter(3, total_steps=20)
    stop(_carry(10), {})
    stop(_carry(20), {})  # second chunk finishes the first algorithm
    with pytest.raises(KeyboardInterrupt, match="stopped after 3 chunks"):
        stop(_carry(10), {})  # the next algorithm's first chunk
    done = cbs.StopAfter(1, total_steps=10)
    done(_carry(10), {})  # the chunk that finished the run does not raise


def test_progress_accepts_a_carry_or_a_step(capsys):
    progress = cbs.Progress("gossip", total=20, quiet=False)
    progress(_carry(10), {"consensus_distance": 0.5})
    progress(20, {"consensus_distance": 0.25})
    first, second = capsys.readouterr().err.strip().splitlines()
    assert first.startswith("[gossip] step 10/20 (50%) first chunk") and "steps/s" in second
    cbs.Progress("gossip", total=20, quiet=True)(_carry(10), {"consensus_distance": 0.5})
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------ records
def test_records_write_the_run_files(tmp_path):
    records.write_config(tmp_path / "config.json", {"steps": 3})
    assert json.loads((tmp_path / "config.json").read_text()) == {"steps": 3}
    counts = np.array([[2, 0], [1, 3]])
    records.write_split(tmp_path, "data: x", "table", counts, 2)
    assert (tmp_path / "split.txt").read_text() == "data: x\n\ntable\n"
    np.testing.assert_array_equal(np.loadtxt(tmp_path / "split.csv", delimiter=","), counts)
    assert (tmp_path / "split.csv").read_text().startswith("# class_0,class_1\n")
    row = records.history_row({"step": np.int32(4), "test_acc_node": np.array([0.5, 1.0]), "test_loss_node":
                               np.array([1.0, 2.0]), "mean_model_test_acc": np.float32(0.75),
                               "consensus_distance": np.float32(0.1), "node_loss": np.array([3.0, 4.0])},
                              "gossip", TINY, mean_count=16.0, wall=2.0)
    assert row["train_loss_node"] == [3.0, 4.0] and row["round"] == 4 / TINY.K and row["wall_time"] == 2.0
    records.write_final(tmp_path / "final.json", {"gossip": row})
    final = json.loads((tmp_path / "final.json").read_text())["gossip"]
    assert final["test_acc_mean"] == 0.75 and final["test_acc_min"] == 0.5 and final["step"] == 4
    records.write_metrics_csv(tmp_path / "metrics.csv", {"gossip": [row]}, 2)
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"test_acc_mean", "test_acc_node_0", "test_acc_node_1", "train_loss_mean"} <= set(header)
