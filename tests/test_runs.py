"""Many runs in one compiled program (docs/design.md#many-runs-in-one-program): an engine with
``runs=R`` carries a leading run axis, and run r of the batch is the run of its own key and
initial parameters alone (to float tolerance), for ECL-PDMM and gossip, with Bernoulli masks
and under the free-running runtime, with scan and python loops; a batch that will not fit in
memory is refused before anything is compiled, naming the largest that fits.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecl_jax import engine as eng
from ecl_jax import execution as ex
from ecl_jax import masks as mk
from ecl_jax import topology as tp
from ecl_jax.algorithms import ecl_pdmm, gossip
from ecl_jax.errors import MemoryLimitError
from ecl_jax.runtime import FreeRunning

N, P, R = 6, 3, 3


def _logistic_loss(w, x, y, rng):
    z = x @ w
    return jax.numpy.logaddexp(0.0, z) - y * z


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, 12, P)).astype(np.float32)
    y = (rng.random((N, 12)) < 0.5).astype(np.float32)
    return eng.NodeData(x, y, np.full(N, 12, np.int32))


def _params(seed):
    return np.random.default_rng(100 + seed).normal(size=(N, P)).astype(np.float32)


SETTINGS = {
    "bernoulli": dict(edge_schedule=mk.BernoulliEdges(0.5), node_schedule=mk.BernoulliNodes(0.8)),
    "free": dict(edge_schedule=mk.BernoulliEdges(0.7), runtime=FreeRunning(speed=0.7, jitter=0.2, failure_prob=0.1)),
}


@pytest.mark.parametrize("loop", ["scan", "python"])
@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("algorithm", [ecl_pdmm(lr=0.1, eta=0.5), gossip(lr=0.1)], ids=lambda a: a.name)
def test_run_r_of_a_batch_is_that_seed_alone(algorithm, setting, loop):
    data = _data()
    keys = jax.random.split(jax.random.PRNGKey(7), R)
    params = np.stack([_params(r) for r in range(R)])
    common = dict(batch_size=4, epoch_samples=12, eval_every=5, loop=loop, **SETTINGS[setting])
    batch = eng.Engine(algorithm, tp.ring(N), _logistic_loss, runs=R, **common)
    carry, hist = batch.run(params, data, 23, keys)
    assert batch.trace_count == 1
    assert hist["consensus_distance"].shape == (5, R)  # [metric points, runs]
    assert hist["node_loss"].shape == (5, R, N)
    single = eng.Engine(algorithm, tp.ring(N), _logistic_loss, **common)
    spread = []
    for r in range(R):
        c, h = single.run(params[r], data, 23, keys[r])
        for a, b in zip(jax.tree_util.tree_leaves(carry.state), jax.tree_util.tree_leaves(c.state)):
            np.testing.assert_allclose(np.asarray(a)[r], np.asarray(b), rtol=1e-5, atol=1e-6)
        for k in h:
            np.testing.assert_allclose(hist[k][:, r], h[k], rtol=1e-5, atol=1e-6, err_msg=k)
        spread.append(h["consensus_distance"][-1])
    assert len(set(np.round(spread, 6))) == R  # the runs are different runs


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_each_run_on_its_own_split(setting):
    """``data_per_run``: run r trains (and measures its train metrics) on data[r] alone."""
    splits = [_data(seed) for seed in range(R)]
    data = eng.NodeData(*(np.stack(a) for a in zip(*splits)))
    keys = jax.random.split(jax.random.PRNGKey(2), R)
    params = np.stack([_params(r) for r in range(R)])
    common = dict(batch_size=4, eval_every=5, **SETTINGS[setting])
    batch = eng.Engine(ecl_pdmm(lr=0.1, eta=0.5), tp.ring(N), _logistic_loss, runs=R, data_per_run=True, **common)
    carry, hist = batch.run(params, data, 12, keys)
    single = eng.Engine(ecl_pdmm(lr=0.1, eta=0.5), tp.ring(N), _logistic_loss, **common)
    for r in range(R):
        c, h = single.run(params[r], splits[r], 12, keys[r])
        for k in h:
            np.testing.assert_allclose(hist[k][:, r], h[k], rtol=1e-5, atol=1e-6, err_msg=k)
    shared, _ = eng.Engine(ecl_pdmm(lr=0.1, eta=0.5), tp.ring(N), _logistic_loss, runs=R, **common).run(
        params, splits[0], 12, keys)
    assert not np.allclose(np.asarray(shared.state.params)[1], np.asarray(carry.state.params)[1])


def test_data_per_run_needs_the_run_axis():
    from ecl_jax.errors import DataError

    with pytest.raises(ValueError, match=r"data_per_run must be True \(with runs"):
        eng.Engine(ecl_pdmm(lr=0.1), tp.ring(N), _logistic_loss, data_per_run=True)
    engine = eng.Engine(ecl_pdmm(lr=0.1), tp.ring(N), _logistic_loss, runs=R, data_per_run=True, batch_size=4)
    with pytest.raises(DataError, match=r"data_per_run: data.x needs a leading run axis of size 3"):
        engine.check_data(_data())


def test_a_batched_run_resumes_bit_identically():
    data = _data()
    keys = jax.random.split(jax.random.PRNGKey(1), R)
    params = np.stack([_params(r) for r in range(R)])
    engine = eng.Engine(ecl_pdmm(lr=0.1), tp.ring(N), _logistic_loss, runs=R, batch_size=4, eval_every=5,
                        **SETTINGS["free"])
    straight, _ = engine.run(params, data, 20, keys)
    half, _ = engine.run(params, data, 10, keys)
    resumed, _ = engine.run(params, data, 20, keys, carry=half)
    for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("runs, message", [
    (0, r"runs must be None \(one run\) or an integer >= 1, got 0"),
    (2.5, r"runs must be None \(one run\) or an integer >= 1, got 2\.5"),
    (True, r"runs must be None \(one run\) or an integer >= 1, got True"),
])
def test_bad_run_counts_are_refused(runs, message):
    with pytest.raises(ValueError, match=message):
        eng.Engine(ecl_pdmm(lr=0.1), tp.ring(N), _logistic_loss, runs=runs)


def test_params_and_keys_must_carry_the_run_axis():
    engine = eng.Engine(ecl_pdmm(lr=0.1), tp.ring(N), _logistic_loss, runs=R)
    keys = jax.random.split(jax.random.PRNGKey(0), R)
    with pytest.raises(ValueError, match=r"runs=3.*params.*leading run axis of size 3.*shape \(6, 3\)"):
        engine.init(_params(0), keys)
    with pytest.raises(ValueError, match=r"runs=3.*one PRNG key per run.*key shape \(2,\)"):
        engine.init(np.stack([_params(r) for r in range(R)]), jax.random.PRNGKey(0))


def test_a_batch_that_does_not_fit_is_refused_with_the_largest_that_does(monkeypatch):
    params = np.stack([_params(r) for r in range(R)])
    keys = jax.random.split(jax.random.PRNGKey(0), R)
    engine = eng.Engine(ecl_pdmm(lr=0.1), tp.ring(N), _logistic_loss, runs=R, batch_size=4)
    # one run: its carry twice (in and out of a chunk), one gradient [N, P], one minibatch x [N, 4, P], y [N, 4]
    one = eng.Engine(ecl_pdmm(lr=0.1), tp.ring(N), _logistic_loss, batch_size=4).init(_params(0), keys[0])
    carry_bytes = sum(np.asarray(a).nbytes for a in jax.tree_util.tree_leaves(one))
    per_run = 2 * carry_bytes + N * P * 4 + N * 4 * (P * 4 + 4)
    monkeypatch.setattr(ex, "available_bytes", lambda: int(2.5 * per_run))
    with pytest.raises(MemoryLimitError, match=r"3 runs need about .* at most 2 runs fit"):
        engine.run(params, _data(), 10, keys)
    assert engine.trace_count == 0  # refused before compiling
    monkeypatch.setattr(ex, "available_bytes", lambda: int(3 * per_run))
    engine.run(params, _data(), 10, keys)  # exactly fits
    monkeypatch.setattr(ex, "available_bytes", lambda: int(0.5 * per_run))
    with pytest.raises(MemoryLimitError, match=r"not even one run fits"):
        engine.run(params, _data(), 10, keys)


# ------------------------------------------------------------------ ecl-jax run --seeds
def _tiny(tmp_path, **kw):
    import dataclasses

    from ecl_jax.config import RunConfig

    base = RunConfig(name="tiny", dataset="mnist5k", n_train=600, n_test=200, model="logistic", n_nodes=4,
                     partition="k_classes", partition_k=3, topology="ring", edge_schedule="bernoulli:K=2",
                     algorithms=("ecl-pdmm", "gossip"), lr=0.05, batch_size=8, steps=40, eval_every=20,
                     out_dir=str(tmp_path))
    return dataclasses.replace(base, **kw)


def _csv(path):
    import csv

    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_seeds_are_one_program_and_seed_s_is_the_run_of_seed_s(tmp_path):
    import json

    from ecl_jax.runner import run_experiment

    batch = run_experiment(_tiny(tmp_path, seeds=3, seed=4, name="batch"), quiet=True)
    rows = _csv(batch.run_dir / "metrics.csv")
    assert list(rows[0])[:4] == ["step", "epoch", "round", "algorithm"] and list(rows[0])[4] == "seed"
    assert [(r["algorithm"], r["seed"]) for r in rows[:3]] == [("ecl-pdmm", "4"), ("ecl-pdmm", "5"), ("ecl-pdmm", "6")]
    assert len(rows) == 2 * 2 * 3  # algorithms x points x seeds
    for seed in (4, 6):
        alone = _csv(run_experiment(_tiny(tmp_path, seed=seed, name=f"alone{seed}"), quiet=True).run_dir
                     / "metrics.csv")
        mine = [r for r in rows if r["seed"] == str(seed)]
        assert len(alone) == len(mine) == 4
        for a, b in zip(alone, mine):
            assert a["algorithm"] == b["algorithm"] and a["step"] == b["step"]
            for k in a:
                if k not in ("algorithm", "wall_time", "step"):
                    np.testing.assert_allclose(float(b[k]), float(a[k]), rtol=2e-5, atol=1e-6, err_msg=k)
    final = json.loads((batch.run_dir / "final.json").read_text())
    accs = [float(np.mean([float(r[k]) for k in r if k.startswith("test_acc_node_")]))
            for r in rows if r["algorithm"] == "gossip" and r["step"] == "40"]
    assert final["gossip"]["seeds"] == [4, 5, 6]
    assert final["gossip"]["test_acc_mean"] == pytest.approx(np.mean(accs))
    assert final["gossip"]["test_acc_mean_std"] == pytest.approx(np.std(accs, ddof=1))
    assert final["gossip"]["test_acc_mean_std"] > 0  # three different runs
    assert {p.name for p in batch.plots} == {"accuracy.png", "loss.png", "consensus.png", "accuracy_bytes.png"}


def test_split_per_seed_gives_seed_s_the_split_of_seed_s(tmp_path):
    """``split_per_seed``: seed s of a batch (here with a sweep too) trains on the split of
    partition seed s, as ``--set seed=s --set split_per_seed=true`` alone does."""
    batch = _tiny(tmp_path, seeds=2, seed=1, split_per_seed=True, sweep={"lr": [0.02, 0.05]}, name="batch")
    from ecl_jax.runner import run_experiment

    rows = _csv(run_experiment(batch, quiet=True).run_dir / "metrics.csv")
    split = (tmp_path / "batch" / "split.csv").read_text().splitlines()
    assert split[0].startswith("# seed,class_0") and {line.split(",")[0] for line in split[1:]} == {"1", "2"}
    by_seed = [sorted(line.split(",", 1)[1] for line in split[1:] if line.startswith(f"{s},")) for s in (1, 2)]
    assert by_seed[0] != by_seed[1]  # two different splits
    alone = run_experiment(_tiny(tmp_path, seed=2, lr=0.05, split_per_seed=True, name="alone"), quiet=True)
    theirs = _csv(alone.run_dir / "metrics.csv")
    mine = [r for r in rows if r["seed"] == "2" and r["run"] == "lr=0.05"]
    assert len(mine) == len(theirs) == 4
    for a, b in zip(theirs, mine):
        assert a["algorithm"] == b["algorithm"]
        for k in a:
            if k not in ("algorithm", "wall_time", "step"):
                np.testing.assert_allclose(float(b[k]), float(a[k]), rtol=2e-5, atol=1e-6, err_msg=k)


def test_split_per_seed_refuses_a_partition_seed(tmp_path):
    from ecl_jax.config import ConfigError

    with pytest.raises(ConfigError, match=r"partition_seed=3 has no effect with split_per_seed=true"):
        _tiny(tmp_path, split_per_seed=True, partition_seed=3)


def test_an_interrupted_batch_of_seeds_resumes_to_the_same_results(tmp_path):
    from ecl_jax.runner import run_experiment

    straight = run_experiment(_tiny(tmp_path / "a", seeds=2, steps=60), quiet=True)
    cfg = _tiny(tmp_path / "b", seeds=2, steps=60)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, quiet=True, stop_after_chunks=4)  # inside the second algorithm
    resumed = run_experiment(cfg, quiet=True)
    a, b = _csv(straight.run_dir / "metrics.csv"), _csv(resumed.run_dir / "metrics.csv")
    assert len(a) == len(b) == 2 * 3 * 2
    for ra, rb in zip(a, b):
        ra.pop("wall_time"), rb.pop("wall_time")
        assert ra == rb


def test_the_command_line_runs_seeds_and_prints_mean_and_std(tmp_path, capsys):
    from ecl_jax import cli

    exp = tmp_path / "exp.py"
    exp.write_text("from ecl_jax.config import RunConfig\n"
                   "CONFIG = RunConfig(name='t', n_train=600, n_test=200, n_nodes=4, partition_k=3, "
                   "algorithms=('gossip',), batch_size=8, steps=20, eval_every=10)\n")
    assert cli.main(["run", str(exp), "--seeds", "2", "--quiet", "--set", f"out_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "mean +- std over 2 seeds" in out
    assert re.search(r"gossip\s+\d+\.\d\d \+- \d+\.\d\d%", out), out
    assert (tmp_path / "t__seeds-2" / "metrics.csv").is_file()
    assert cli.main(["run", str(exp), "--seeds", "0", "--quiet", "--set", f"out_dir={tmp_path}"]) == 2
    assert "seeds" in capsys.readouterr().err


def test_a_diverged_seed_is_named():
    from ecl_jax.callbacks import DivergenceCheck, DivergenceError

    engine = eng.Engine(gossip(lr=0.1), tp.ring(N), _logistic_loss, runs=R, batch_size=4)
    params = np.stack([_params(r) for r in range(R)])
    carry = engine.init(params, jax.random.split(jax.random.PRNGKey(0), R))
    check = DivergenceCheck(engine.algorithm, runs=["seed 10", "seed 11", "seed 12"])
    check(carry, {"step": np.zeros(R), "consensus_distance": np.ones(R)})  # finite: passes
    with pytest.raises(DivergenceError, match=r"gossip diverged \(NaN/inf\) in seed 11 by step 0"):
        check(carry, {"step": np.zeros(R), "consensus_distance": np.array([1.0, np.nan, 1.0])})
    bad = carry._replace(state=jax.tree_util.tree_map(lambda a: a.at[2].set(np.inf) if a.dtype == np.float32 else a,
                                                      carry.state))
    with pytest.raises(DivergenceError, match=r"in seed 12 by"):
        check(bad, {"step": np.zeros(R), "consensus_distance": np.ones(R)})


def test_a_batch_keeps_the_conditionals_of_one_run():
    """The step bound and for_each_node's fusion boundary (a conditional on the CPU) stay
    conditionals in a batch of runs (execution.run_invariant), not selects that compute both
    branches: the batched chunk's optimised HLO has as many as one run's."""
    data = _data()
    counts = []
    for runs in (None, R):
        engine = eng.Engine(ecl_pdmm(lr=0.1), tp.ring(N), _logistic_loss, runs=runs, batch_size=4, eval_every=5,
                            loop="scan")
        params = _params(0) if runs is None else np.stack([_params(r) for r in range(R)])
        key = jax.random.PRNGKey(0) if runs is None else jax.random.split(jax.random.PRNGKey(0), R)
        carry = engine.init(params, key)
        hlo = engine.lower(carry, engine.check_data(data), 10).compile().as_text()
        counts.append(len(re.findall(r"\bconditional\(", hlo)))
    if jax.default_backend() == "cpu":
        assert counts[0] >= 2  # the step bound and at least one for_each_node boundary
    assert counts[1] == counts[0]


def test_gradients_flow_through_the_fusion_boundary_alone_and_in_a_batch():
    """run_invariant takes the predicate, which has no tangent, so a run stays differentiable
    (one run and under the vmap over runs) with the CPU conditional of for_each_node."""
    from ecl_jax.algorithms.base import for_each_node

    f = lambda w: (for_each_node(lambda a: a ** 2, w) * 3.0).sum()
    w = jnp.arange(1.0, 7.0).reshape(N, 1)
    np.testing.assert_allclose(jax.grad(f)(w), 6.0 * w)
    ws = jnp.stack([w, 2 * w])
    np.testing.assert_allclose(jax.vmap(jax.grad(f))(ws), 6.0 * ws)
