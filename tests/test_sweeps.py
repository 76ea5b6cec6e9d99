"""Grids of hyperparameters in one compiled program (docs/design.md#sweeps): an algorithm built
with ``inject_hyperparams`` carries its float hyperparameters in its state, so run r of a
batch (``Engine(runs=R)``, ``hyperparams=`` one value per run) equals the algorithm built with
run r's numbers and run alone, to float tolerance; a grid whose values change the program's
shape, or that the builder needs as Python numbers, is refused naming the option.
"""

from __future__ import annotations

import functools
import re

import jax
import numpy as np
import pytest

from ecl_jax import engine as eng
from ecl_jax import registry
from ecl_jax import topology as tp
from ecl_jax.algorithms import (HyperState, check_sweep, ecl, ecl_pdmm, gossip, inject_hyperparams,
                                set_hyperparams)
from ecl_jax.algorithms.edge_consensus import ECLConfig
from test_runs import SETTINGS, N, _csv, _data, _params, _tiny
from test_runs import _logistic_loss as _loss

def _sgd(lr, momentum):
    return registry._sgd(gossip)(lr, momentum=momentum)


GRIDS = {  # build, the fixed arguments, the grid (one dict per run)
    "ecl-pdmm eta x lr": (ecl_pdmm, {}, [dict(lr=lr, eta=eta) for lr in (0.05, 0.1) for eta in (0.5, 2.0)]),
    "ecl-admm rho theta": (lambda **k: ecl(ECLConfig(**k)), {}, [dict(lr=0.1, eta=1.0, rho=rho, theta=th)
                                                            for rho, th in ((0.2, 0.5), (0.7, 1.0), (0.4, 0.8))]),
    "gossip lr momentum": (_sgd, {}, [dict(lr=lr, momentum=m) for lr, m in ((0.05, 0.5), (0.1, 0.9), (0.2, 0.5))]),
}


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_run_r_of_a_sweep_is_that_setting_alone(grid, setting):
    build, fixed, points = GRIDS[grid]
    R = len(points)
    data, params = _data(), np.stack([_params(r % 2) for r in range(R)])
    keys = jax.random.split(jax.random.PRNGKey(3), R)
    check_sweep(build, points, params[0], tp.ring(N))
    common = dict(batch_size=4, epoch_samples=12, eval_every=5, **SETTINGS[setting])
    injected = inject_hyperparams(build)(**fixed, **points[0])
    batch = eng.Engine(injected, tp.ring(N), _loss, runs=R, **common)
    hyper = {k: np.array([p[k] for p in points], np.float32) for k in points[0]}
    carry, hist = batch.run(params, data, 23, keys, hyperparams=hyper)
    assert batch.trace_count == 1
    assert isinstance(carry.state, HyperState)
    np.testing.assert_array_equal(np.asarray(carry.state.hyperparams["lr"]), hyper["lr"])
    finals = []
    for r, point in enumerate(points):
        alone = eng.Engine(build(**fixed, **point), tp.ring(N), _loss, **common)
        c, h = alone.run(params[r], data, 23, keys[r])
        for a, b in zip(jax.tree_util.tree_leaves(carry.state.inner), jax.tree_util.tree_leaves(c.state)):
            np.testing.assert_allclose(np.asarray(a)[r], np.asarray(b), rtol=2e-5, atol=1e-6)
        for k in h:
            np.testing.assert_allclose(hist[k][:, r], h[k], rtol=2e-5, atol=1e-6, err_msg=f"{point} {k}")
        finals.append(float(h["node_loss"][-1].mean()))
    assert len(set(np.round(finals, 6))) == R  # the settings are different runs


def test_one_injected_run_is_the_plain_run():
    data, key = _data(), jax.random.PRNGKey(5)
    common = dict(batch_size=4, eval_every=5, **SETTINGS["bernoulli"])
    plain, _ = eng.Engine(ecl_pdmm(lr=0.1, eta=2.0), tp.ring(N), _loss, **common).run(_params(0), data, 12, key)
    inj = eng.Engine(inject_hyperparams(ecl_pdmm)(lr=0.1, eta=0.5), tp.ring(N), _loss, **common)
    carry, _ = inj.run(_params(0), data, 12, key, hyperparams={"eta": 2.0})
    for a, b in zip(jax.tree_util.tree_leaves(carry.state.inner), jax.tree_util.tree_leaves(plain.state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_an_injected_batch_resumes_bit_identically():
    data, R = _data(), 3
    keys = jax.random.split(jax.random.PRNGKey(1), R)
    params = np.stack([_params(r) for r in range(R)])
    engine = eng.Engine(inject_hyperparams(ecl_pdmm)(lr=0.1, eta=1.0), tp.ring(N), _loss, runs=R, batch_size=4,
                        eval_every=5, **SETTINGS["free"])
    hyper = {"eta": np.array([0.5, 1.0, 2.0])}
    straight, _ = engine.run(params, data, 20, keys, hyperparams=hyper)
    half, _ = engine.run(params, data, 10, keys, hyperparams=hyper)
    resumed, _ = engine.run(params, data, 20, keys, carry=half)  # the values travel in the carry
    for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("build, points, message", [
    (lambda **k: ecl(ECLConfig(**k)), [dict(lr=0.1, rho=0.0), dict(lr=0.1, rho=0.5)],
     r"rho=0 changes the program's shape"),
    (_sgd, [dict(lr=0.1, momentum=0.0), dict(lr=0.1, momentum=0.9)], r"momentum=0 changes the program's shape"),
    (lambda lr, eta: ecl_pdmm(lr=lr, eta=eta if lr > 0.05 else 2 * eta), [dict(lr=0.1, eta=1.0), dict(lr=0.01, eta=1.0)],
     r"lr cannot be swept in one program: the algorithm needs it as a Python number"),
])
def test_a_grid_that_is_not_one_program_is_refused(build, points, message):
    with pytest.raises(ValueError, match=message):
        check_sweep(build, points, _params(0), tp.ring(N))


def test_bad_values_and_names_are_refused():
    with pytest.raises(ValueError, match=r"eta must be a positive finite number, got -1.0"):
        check_sweep(ecl_pdmm, [dict(lr=0.1, eta=1.0), dict(lr=0.1, eta=-1.0)], _params(0), tp.ring(N))
    state = inject_hyperparams(ecl_pdmm)(lr=0.1, eta=1.0).init(_params(0), tp.ring(N))
    with pytest.raises(ValueError, match=r"hyperparameters \['rho'\] are not injected; this algorithm injects \['eta', 'lr'\]"):
        set_hyperparams(state, {"rho": 0.3})
    with pytest.raises(TypeError, match=r"only in the state of an algorithm built with inject_hyperparams"):
        set_hyperparams(state.inner, {"eta": 0.3})
    with pytest.raises(ValueError, match=r"no float argument to inject"):
        inject_hyperparams(functools.partial(ecl_pdmm, lr=0.1))(name="x")
    engine = eng.Engine(inject_hyperparams(ecl_pdmm)(lr=0.1, eta=1.0), tp.ring(N), _loss, runs=2, batch_size=4)
    with pytest.raises(ValueError, match=r"hyperparams\['eta'\] must hold one value per run, shape \(2,\); got shape \(3,\)"):
        engine.init(np.stack([_params(0)] * 2), jax.random.split(jax.random.PRNGKey(0), 2), {"eta": [1.0, 2.0, 3.0]})


# ------------------------------------------------------------------ ecl-jax run --sweep
SWEEP = {"lr": [0.02, 0.05], "ecl-pdmm.eta": [0.5, 2.0]}


def test_a_sweep_point_is_the_run_of_that_setting(tmp_path):
    import json

    from ecl_jax.plotting import read_metrics_csv
    from ecl_jax.runner import run_experiment

    batch = run_experiment(_tiny(tmp_path, sweep=SWEEP, seeds=2, seed=3, name="grid"), quiet=True)
    rows = _csv(batch.run_dir / "metrics.csv")
    assert list(rows[0])[3:8] == ["algorithm", "run", "lr", "eta", "seed"]
    assert len(rows) == 2 * (4 + 2) * 2  # points x (ecl-pdmm's 4 + gossip's 2 grid points) x seeds
    assert {r["run"] for r in rows if r["algorithm"] == "gossip"} == {"lr=0.02", "lr=0.05"}
    for lr, eta, seed in ((0.05, 2.0, 4), (0.02, 0.5, 3)):
        alone = run_experiment(_tiny(tmp_path, lr=lr, seed=seed, options={"ecl-pdmm": {"eta": eta}},
                                     name=f"alone{lr}{eta}{seed}"), quiet=True)
        for algo, run in (("ecl-pdmm", f"lr={lr:g} eta={eta:g}"), ("gossip", f"lr={lr:g}")):
            mine = [r for r in rows if r["algorithm"] == algo and r["run"] == run and r["seed"] == str(seed)]
            theirs = [r for r in _csv(alone.run_dir / "metrics.csv") if r["algorithm"] == algo]
            assert len(mine) == len(theirs) == 2
            for a, b in zip(theirs, mine):
                for k in a:
                    if k not in ("algorithm", "wall_time", "step"):
                        np.testing.assert_allclose(float(b[k]), float(a[k]), rtol=2e-5, atol=1e-6, err_msg=k)
    final = json.loads((batch.run_dir / "final.json").read_text())
    assert sorted(final) == ["ecl-pdmm (lr=0.02 eta=0.5)", "ecl-pdmm (lr=0.02 eta=2)", "ecl-pdmm (lr=0.05 eta=0.5)",
                             "ecl-pdmm (lr=0.05 eta=2)", "gossip (lr=0.02)", "gossip (lr=0.05)"]
    point = [r for r in rows if r["run"] == "lr=0.05 eta=2" and r["step"] == "40"]
    accs = [np.mean([float(r[k]) for k in r if k.startswith("test_acc_node_")]) for r in point]
    assert final["ecl-pdmm (lr=0.05 eta=2)"]["test_acc_mean"] == pytest.approx(np.mean(accs))
    assert final["ecl-pdmm (lr=0.05 eta=2)"]["test_acc_mean_std"] == pytest.approx(np.std(accs, ddof=1))
    assert final["ecl-pdmm (lr=0.05 eta=2)"]["seeds"] == [3, 4]
    assert sorted(read_metrics_csv(batch.run_dir / "metrics.csv")) == sorted(final)  # replots: a line per point
    assert {p.name for p in batch.plots} == {"accuracy.png", "loss.png", "consensus.png", "accuracy_bytes.png"}


def test_an_interrupted_sweep_resumes_to_the_same_results(tmp_path):
    from ecl_jax.runner import run_experiment

    straight = run_experiment(_tiny(tmp_path / "a", sweep={"lr": [0.02, 0.05]}, steps=60), quiet=True)
    cfg = _tiny(tmp_path / "b", sweep={"lr": [0.02, 0.05]}, steps=60)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, quiet=True, stop_after_chunks=4)  # inside the second algorithm
    resumed = run_experiment(cfg, quiet=True)
    a, b = _csv(straight.run_dir / "metrics.csv"), _csv(resumed.run_dir / "metrics.csv")
    assert len(a) == len(b) == 2 * 3 * 2 and "seed" not in a[0]  # one seed: no seed column
    for ra, rb in zip(a, b):
        ra.pop("wall_time"), rb.pop("wall_time")
        assert ra == rb


@pytest.mark.parametrize("sweep, message", [
    ({"ecl-pdmm.K": [4, 8]}, r"sweep ecl-pdmm.K: K is a int option, which changes the compiled program; a sweep "
                             r"varies float options only"),
    ({"batch_size": [8, 16]}, r"sweep 'batch_size': a sweep varies lr, eta or ALGO.OPTION; other settings"),
    ({"momentum": [0.5, 0.9]}, r"sweep 'momentum'.*as a per-algorithm option: gossip.momentum"),
    ({"dsgd.lr": [0.1, 0.2]}, r"sweep dsgd.lr: 'dsgd' is not in this run's algorithms"),
    ({"lr": [0.1, 0.1]}, r"sweep lr: give distinct numbers"),
    ({"lr": []}, r"sweep lr: give distinct numbers"),
    ({"lr": [0.1], "gossip.lr": [0.2, 0.3]}, r"sweep gossip.lr and lr both vary gossip.lr; keep one"),
])
def test_a_bad_sweep_is_refused(tmp_path, sweep, message):
    from ecl_jax.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        _tiny(tmp_path, sweep=sweep)


def test_a_sweep_the_options_would_ignore_is_refused(tmp_path):
    from ecl_jax.config import ConfigError

    with pytest.raises(ConfigError, match=r"sweep lr: ecl-pdmm sets its own lr \(ecl-pdmm.lr=0.1\)"):
        _tiny(tmp_path, sweep={"lr": [0.1, 0.2]}, options={"ecl-pdmm": {"lr": 0.1}})


@pytest.mark.parametrize("argv, message", [
    (["--sweep", "gossip.momentum=0,0.9"], "sweep of gossip: momentum=0 changes the program's shape"),
    (["--sweep", "ecl-pdmm.rho=0,0.5"], "sweep of ecl-pdmm: rho=0 changes the program's shape"),
    (["--sweep", "lr=0.1,-0.1"], "ecl-pdmm: lr must be a positive finite number, got -0.1"),
    (["--sweep", "lr=0.1,fast"], "--sweep lr: 'fast' is not a number"),
    (["--sweep", "lr"], "--sweep 'lr': give KEY=V1,V2,..."),
    (["--sweep", "lr=0.1", "--sweep", "lr=0.2"], "--sweep lr is given twice"),
])
def test_the_command_line_refuses_a_grid_that_is_not_one_program(tmp_path, capsys, argv, message):
    from ecl_jax import cli

    code = cli.main(["run", "--quiet", "--set", f"out_dir={tmp_path}", "--set", "n_train=600", "--set", "n_test=200",
                     "--algorithms", "ecl-pdmm,gossip", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not any(tmp_path.iterdir())  # refused before a folder is made


def test_the_command_line_runs_a_sweep_and_prints_a_line_per_point(tmp_path, capsys):
    from ecl_jax import cli

    code = cli.main(["run", "--quiet", "--set", f"out_dir={tmp_path}", "--set", "n_train=600", "--set", "n_test=200",
                     "--set", "n_nodes=4", "--set", "steps=20", "--set", "eval_every=10", "--algorithms", "gossip",
                     "--sweep", "lr=0.02,0.05", "--seeds", "2"])
    out = capsys.readouterr().out
    assert code == 0
    for lr in ("0.02", "0.05"):
        assert re.search(rf"gossip \(lr={lr}\)\s+\d+\.\d\d \+- \d+\.\d\d%", out), out
    assert len(list(tmp_path.iterdir())) == 1
    args = cli.build_parser().parse_args(["run", "experiments/default.py", "--sweep", "lr=0.01,0.1", "--seeds", "3"])
    config = cli.resolve_run(args)
    assert config.name == "default__seeds-3_sweep-lr-0.01+0.1" and config.sweep == {"lr": [0.01, 0.1]}
