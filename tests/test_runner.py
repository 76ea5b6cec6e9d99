"""Runner, configs and CLI: overrides, errors, run folders, resume bit-equality, divergence."""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from ecl_jax import cli
from ecl_jax.config import ConfigError, RunConfig, apply_overrides, load_config
from ecl_jax.checkpoint import CHECKPOINT_FORMAT
from ecl_jax.runner import DivergenceError, build_algorithm, build_topology, run_experiment

ROOT = pathlib.Path(__file__).resolve().parents[1]

TINY = RunConfig(
    name="tiny",
    dataset="mnist5k",
    n_train=600,
    n_test=200,
    model="logistic",
    n_nodes=4,
    partition="k_classes",
    partition_k=3,
    topology="ring",
    edge_schedule="bernoulli:K=2",
    algorithms=("ecl-pdmm", "gossip"),
    lr=0.05,
    batch_size=8,
    steps=60,
    eval_every=20,
)


def _rows(path: pathlib.Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------ config


def test_overrides_parse_types_and_algorithm_options():
    cfg = apply_overrides(
        TINY, ["steps=7", "lr=0.5", "algorithms=ecl-admm,dsgd", "data_dir=none", "ecl-admm.eta=3", "same_init=false"]
    )
    assert cfg.steps == 7 and cfg.lr == 0.5 and cfg.algorithms == ("ecl-admm", "dsgd")
    assert cfg.data_dir is None and cfg.same_init is False
    assert cfg.options == {"ecl-admm": {"eta": 3.0}}
    assert build_algorithm("ecl-admm", cfg).config.eta == 3.0


def test_admm_isvr_as_shipped_is_the_pdmm_isvr_code_update():
    """The ICML21 script's ADMM-ISVR (--piw left at 1): c = 1, no running-mean dual, theta = 1."""
    cfg = dataclasses.replace(TINY, options={"pdmm-isvr": {"isvr_rule": "code"}})
    shipped, pdmm = build_algorithm("admm-isvr-shipped", cfg), build_algorithm("pdmm-isvr", cfg)
    paper = build_algorithm("admm-isvr", cfg)
    assert shipped.name == "admm-isvr-shipped"
    assert shipped.config == dataclasses.replace(pdmm.config, name="admm-isvr-shipped")
    assert shipped.config.c == 1.0 and not shipped.config.dual_smoothing
    assert paper.config.theta == 0.5 and paper.config != shipped.config
    with pytest.raises(ConfigError, match="admm-isvr-shipped is fixed to c=1.0.*got 2.0"):
        build_algorithm("admm-isvr-shipped",
                        apply_overrides(TINY, ["algorithms=admm-isvr-shipped", "admm-isvr-shipped.c=2"]))


def test_epoch_samples_must_be_a_multiple_of_the_batch_size():
    with pytest.raises(ConfigError, match="epoch_samples=12 must be a multiple of batch_size=8"):
        apply_overrides(TINY, ["epoch_samples=12"])
    assert apply_overrides(TINY, ["epoch_samples=16"]).epoch_samples == 16


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        apply_overrides(TINY, ["stepz=3"])
    assert "'stepz'" in str(err.value) and "steps" in str(err.value) and "n_nodes" in str(err.value)


@pytest.mark.parametrize(
    "item, needle",
    [("steps=abc", "integer"), ("lr=fast", "number"), ("same_init=maybe", "boolean"), ("steps", "key=value"),
     ("ecl-pdmm.etta=1", "valid options"), ("n_nodes=0", "positive integer"), ("x_axis=time", "x_axis")],
)
def test_ill_typed_or_invalid_values_are_rejected(item, needle):
    with pytest.raises(ConfigError, match=needle):
        apply_overrides(TINY, [item])


def test_unknown_algorithm_and_topology_are_named():
    with pytest.raises(ConfigError, match="unknown algorithm 'pdmmm'.*valid"):
        build_algorithm("pdmmm", TINY)
    with pytest.raises(ConfigError, match="unknown topology 'hypercube'.*valid"):
        build_topology(dataclasses.replace(TINY, topology="hypercube"))
    with pytest.raises(ConfigError, match="gossip has no option 'eta'.*lr, mixing, momentum"):
        apply_overrides(TINY, ["gossip.eta=2"])


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.py"))
    bad = tmp_path / "bad.py"
    bad.write_text("CONFIG = 3\n")
    with pytest.raises(ConfigError, match="must define CONFIG"):
        load_config(str(bad))
    assert load_config(str(ROOT / "experiments" / "default.py")).name == "default"


# ------------------------------------------------------------------ runs


@pytest.mark.slow
def test_run_folder_contents(tmp_path):
    cfg = dataclasses.replace(TINY, out_dir=str(tmp_path))
    res = run_experiment(cfg, quiet=True)
    d = res.run_dir
    for f in ("config.json", "split.txt", "split.csv", "metrics.csv", "accuracy.png", "loss.png", "consensus.png", "final.json"):
        assert (d / f).is_file(), f
    rows = _rows(d / "metrics.csv")
    assert [r["algorithm"] for r in rows] == ["ecl-pdmm"] * 3 + ["gossip"] * 3
    assert [int(r["step"]) for r in rows[:3]] == [20, 40, 60]
    needed = {"epoch", "samples_seen", "wall_time", "test_acc_mean", "test_loss_mean", "mean_model_test_acc",
              "consensus_distance", "test_acc_node_0", "test_acc_node_3", "test_loss_node_3"}
    assert needed <= set(rows[0])
    assert int(rows[-1]["samples_seen"]) == 60 * 8 * 4
    np.testing.assert_allclose(
        float(rows[0]["test_acc_mean"]), np.mean([float(rows[0][f"test_acc_node_{i}"]) for i in range(4)]), rtol=1e-6
    )
    split = np.loadtxt(d / "split.csv", delimiter=",")
    assert split.shape == (4, 10) and split.sum() == 600
    assert (split > 0).sum(1).tolist() == [3, 3, 3, 3]  # 3 of 10 classes per node
    assert json.loads((d / "config.json").read_text())["steps"] == 60
    # learning happened: both beat chance, accuracy rose
    assert float(rows[2]["test_acc_mean"]) > 0.3


def test_interrupted_run_resumes_bit_identical(tmp_path):
    full = run_experiment(dataclasses.replace(TINY, out_dir=str(tmp_path / "a")), quiet=True)
    cfg_b = dataclasses.replace(TINY, out_dir=str(tmp_path / "b"))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg_b, quiet=True, stop_after_chunks=4)  # inside the second algorithm
    partial = _rows(tmp_path / "b" / "tiny" / "metrics.csv") if (tmp_path / "b" / "tiny" / "metrics.csv").exists() else []
    assert partial == []  # metrics.csv is only written at the end; checkpoints hold the progress
    resumed = run_experiment(cfg_b, quiet=True)
    a = _rows(full.run_dir / "metrics.csv")
    b = _rows(resumed.run_dir / "metrics.csv")
    assert len(a) == len(b) == 6
    for ra, rb in zip(a, b):
        ra.pop("wall_time"), rb.pop("wall_time")
        assert ra == rb  # every metric, every node, as text: bit for bit
    # the final states too
    za = np.load(full.run_dir / "checkpoints" / "gossip.npz")
    zb = np.load(resumed.run_dir / "checkpoints" / "gossip.npz")
    for k in za.files:
        if k.startswith("leaf_"):
            np.testing.assert_array_equal(za[k], zb[k])


@pytest.mark.slow
def test_changed_config_in_same_folder_is_refused(tmp_path):
    cfg = dataclasses.replace(TINY, out_dir=str(tmp_path), steps=20, algorithms=("gossip",))
    run_experiment(cfg, quiet=True)
    with pytest.raises(ConfigError, match=r"different config.*lr.*--fresh"):
        run_experiment(dataclasses.replace(cfg, lr=0.1), quiet=True)
    run_experiment(dataclasses.replace(cfg, lr=0.1), quiet=True, fresh=True)


@pytest.mark.slow
def test_divergence_stops_with_step_algorithm_and_settings(tmp_path):
    cfg = dataclasses.replace(TINY, out_dir=str(tmp_path), algorithms=("gossip",), lr=1e3, l2=1.0, steps=200)
    with pytest.raises(DivergenceError) as err:
        run_experiment(cfg, quiet=True)
    msg = str(err.value)
    assert "gossip" in msg and "step" in msg and "1000.0" in msg
    # no bad checkpoint was written: either none or one whose params are finite
    ck = tmp_path / "tiny" / "checkpoints" / "gossip.npz"
    if ck.exists():
        z = np.load(ck)
        assert all(np.all(np.isfinite(z[k])) for k in z.files if k.startswith("leaf_") and z[k].dtype.kind == "f")


# ------------------------------------------------------------------ CLI


@pytest.mark.slow
def test_cli_default_job_smoke(tmp_path, capsys):
    code = cli.main(["run", str(ROOT / "experiments" / "default.py"), "--smoke", "--quiet", "--set", f"out_dir={tmp_path}"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "final test accuracy" in out and "ecl-pdmm" in out and "centralized" in out
    assert "plot:" in out and "accuracy.png" in out
    run_dir = tmp_path / "default_smoke"
    assert (run_dir / "accuracy.png").stat().st_size > 10_000
    # compare overlays finished runs
    code = cli.main(["compare", str(run_dir), "--out", str(tmp_path / "cmp")])
    assert code == 0 and (tmp_path / "cmp" / "accuracy.png").is_file()


def test_cli_reports_config_errors_with_exit_code_2(tmp_path, capsys):
    code = cli.main(["run", "--set", "nodes=3", "--set", f"out_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown config key 'nodes'" in err and "n_nodes" in err


def test_cli_reports_invalid_algorithm_option_with_its_name(tmp_path, capsys):
    # a hyperparameter the algorithm rejects (ecl-pdmm fixes theta = 1) is a config error
    code = cli.main(["run", "--smoke", "--quiet", "--set", "ecl-pdmm.theta=0.5", "--set", f"out_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "ecl-pdmm: ecl_pdmm fixes theta = 1" in err and "theta=0.5" in err


def test_progress_lines_report_rate_and_long_eta(monkeypatch, capsys):
    from ecl_jax import runner

    clock = iter([0.0, 0.0, 300.0, 550.0])  # start, init, first chunk (compile), second chunk
    monkeypatch.setattr(runner.time, "time", lambda: next(clock))
    progress = runner.Progress("ecl-pdmm", total=10_100, quiet=False)
    metrics = {"test_acc_node": np.array([0.5, 0.7]), "consensus_distance": 0.01}
    progress(100, metrics)
    progress(200, metrics)  # 100 steps in 250 s: 0.4 steps/s, 9,900 steps left = 6 h 52 min 30 s
    first, second = capsys.readouterr().err.strip().splitlines()
    assert "first chunk 5:00 incl. compilation" in first and "test_acc 0.6000" in first
    assert "0.4 steps/s ETA 6:52:30" in second


def test_checkpoint_mismatch_names_the_leaf_and_shapes(tmp_path):
    from ecl_jax.runner import load_checkpoint, save_checkpoint

    path = tmp_path / "c.npz"
    carry = {"duals": jnp.zeros((6, 2, 5)), "params": jnp.ones((4, 5)), "step": jnp.int32(3)}
    save_checkpoint(path, carry, [{"step": 3}], 1.5)
    restored, history, wall = load_checkpoint(path, carry)
    np.testing.assert_array_equal(restored["params"], carry["params"])
    assert history == [{"step": 3}] and wall == 1.5
    other = dict(carry, duals=jnp.zeros((12, 5)))
    with pytest.raises(ValueError, match=r"\['duals'\] is float32\[6, 2, 5\] in the file, float32\[12, 5\] here.*--fresh"):
        load_checkpoint(path, other)
    with pytest.raises(ValueError, match=r"holds 3 arrays, this run's state has 2"):
        load_checkpoint(path, {"params": carry["params"], "step": carry["step"]})
    # a checkpoint without the format stamp (written before the pair-stored ECL duals)
    with np.load(path) as z:
        old = {k: z[k] for k in z.files if k not in ("format", "checksum")}  # as format 1 was written
    np.savez(tmp_path / "old.npz", **old)
    with pytest.raises(ValueError, match=rf"state format 1; this ecl_jax reads format {CHECKPOINT_FORMAT}.*--fresh"):
        load_checkpoint(tmp_path / "old.npz", carry)


def test_mistyped_keys_and_options_get_a_did_you_mean(tmp_path, capsys):
    for item, want in (("stpes=100", "unknown config key 'stpes' (did you mean 'steps'?)"),
                       ("ecl-pdmm.eat=2", "ecl-pdmm has no option 'eat' (in 'ecl-pdmm.eat') (did you mean 'eta'?)"),
                       ("gosip.lr=0.1", "unknown algorithm 'gosip' in 'gosip.lr' (did you mean 'gossip'?)")):
        code = cli.main(["run", "--set", item, "--set", f"out_dir={tmp_path}"])
        err = capsys.readouterr().err
        assert code == 2 and want in err, err
        assert len(err.strip().splitlines()) == 2  # the error and the --debug hint
    cli.main(["run", "--set", "zzzz=1", "--set", f"out_dir={tmp_path}"])
    assert "did you mean" not in capsys.readouterr().err  # nothing close: no guess


def test_a_long_run_says_so_before_it_starts(tmp_path, capsys, monkeypatch):
    """A run timed at more than 10 min says how long before its first step (also with quiet);
    a short one says nothing; resumed runs count only the steps left."""
    from ecl_jax import engine as eng
    from ecl_jax import runner

    timed = []
    real = eng.Engine.time_chunk

    def slow(self, *a, **k):  # the real timing, then pretend each chunk took 20 s
        timed.append(real(self, *a, **k))
        return 20.0

    monkeypatch.setattr(eng.Engine, "time_chunk", slow)
    cfg = dataclasses.replace(TINY, out_dir=str(tmp_path), steps=400, eval_every=20)  # 20 chunks: timed
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, quiet=True, stop_after_chunks=5)
    err = capsys.readouterr().err
    assert timed and 0 < timed[0] < 60
    # 800 steps left over 2 algorithms at 20 s / 20 steps = 1 s per step
    assert err.startswith("note: this run takes about 13 min: 800 steps left over 2 algorithms at 1 s per step")
    assert "the same command resumes" in err
    run_experiment(cfg, quiet=True)  # resumed at step 100 of ecl-pdmm: 300 + 400 steps left
    assert capsys.readouterr().err.startswith("note: this run takes about 12 min: 700 steps left")
    monkeypatch.setattr(runner, "LONG_RUN_S", 1e9)
    run_experiment(dataclasses.replace(cfg, name="short"), quiet=True)
    assert "note:" not in capsys.readouterr().err
    n = len(timed)
    run_experiment(dataclasses.replace(cfg, name="few", steps=100), quiet=True)  # 10 chunks in all: not timed
    assert len(timed) == n
