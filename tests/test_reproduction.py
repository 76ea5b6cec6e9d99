"""Reproduction experiments (experiments/kdd2020, icml2021, scale) and the papers' claims.

* Every experiment file runs end to end in its ``--smoke`` size through the command
  line and writes metrics.csv and the PNGs (issue item 3).
* The ICML21 files carry the published setup (docs/reproduction_setups.md#icml-2021) and
  numbers (docs/reproduction_setups.md#icml21-published-numbers).
* On the real Fashion-MNIST (Debian's ``dataset-fashion-mnist``), the ICML21 logistic
  multiplex-ring setting for 96 rounds keeps the published ordering: PDMM-ISVR and
  ADMM-ISVR at least 5 points above DSGD and within 3 points of the reference
  (issue item 5; skipped only when the data set is not installed).
* The same data under the free-running runtime's evaluation pauses: DSGD loses at least 5
  points against lockstep, PDMM-ISVR stays within 3 (skipped likewise).
* On the embedded MNIST subset: with a non-IID split and asynchronous exchange the ECL
  methods end within 2 points of the centralised reference while DSGD and gossip fall
  at least 5 points behind; with an IID split everything is close (issue item 6).
"""

from __future__ import annotations

import csv
import pathlib

import numpy as np
import pytest

from ecl_jax import cli
from ecl_jax.config import RunConfig, apply_overrides, load_config, load_experiment
from ecl_jax.runner import run_experiment, summarize

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(
    p for d in ("kdd2020", "icml2021", "scale") for p in (ROOT / "experiments" / d).glob("*.py")
)


def _read_csv(path: pathlib.Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_experiment_files_found():
    names = {p.name for p in EXPERIMENTS}
    for expected in ("mnist_round_robin.py", "mnist_random.py", "cifar_round_robin.py", "cifar_random.py",
                     "fashion_logistic_ring.py", "fashion_logistic_random.py", "fashion_resnet_ring.py",
                     "fashion_resnet_random.py", "cifar10_resnet_ring.py", "cifar10_resnet_random.py",
                     "icml21_ring.py", "icml21_torus.py", "icml21_exponential.py"):
        assert expected in names, f"experiment file {expected} is missing"


@pytest.mark.slow
@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_smoke_every_experiment(path, tmp_path, capsys):
    """``ecl-jax run FILE --smoke`` writes metrics.csv (one row per metric point and
    algorithm, finite accuracies) and the accuracy / loss figures."""
    config, smoke_overrides = load_experiment(str(path))
    rc = cli.main(["run", str(path), "--smoke", "--quiet", "--set", f"out_dir={tmp_path}"])
    assert rc == 0, capsys.readouterr().err
    run_dir = tmp_path / f"{config.name}_smoke"
    for f in ("metrics.csv", "accuracy.png", "loss.png", "config.json", "split.txt"):
        assert (run_dir / f).is_file(), f"{f} not written for {path.name}"
    rows = _read_csv(run_dir / "metrics.csv")
    smoke = apply_overrides(config, smoke_overrides)
    algos = {r["algorithm"] for r in rows}
    assert algos == set(smoke.algorithms)
    for r in rows:
        acc = float(r["test_acc_mean"])
        assert 0.0 <= acc <= 1.0 and np.isfinite(float(r["test_loss_mean"]))
    assert max(int(float(r["step"])) for r in rows) == smoke.steps


def test_icml21_configs_carry_published_setup():
    """docs/reproduction_setups.md#icml21-hyperparameters-and-length (split: #icml21-data-split):
    N = 8, K = 8, batch 100, lr 0.002, L2 0.01, split seed 11, 8 of 10 classes; figure
    lengths 8800 / 5600 rounds; the official slot table of each graph, the code's per-epoch
    permutation sampling and StepLR; the finals of #icml21-published-numbers as references."""
    published = {
        "fashion_logistic_ring.py": (0.6540, 0.8082, 0.8093, 0.8202, 8800),
        "fashion_logistic_random.py": (0.6543, 0.8045, 0.8054, 0.8167, 5600),
        "fashion_resnet_ring.py": (0.8658, 0.9059, 0.9087, 0.9108, 8800),
        "fashion_resnet_random.py": (0.8460, 0.9062, 0.9004, 0.9086, 5600),
        "cifar10_resnet_ring.py": (0.5380, 0.7287, 0.7272, 0.7401, 8800),
        "cifar10_resnet_random.py": (0.4813, 0.7220, 0.7221, 0.7305, 5600),
    }
    for name, (dsgd, pdmm, admm, ref, rounds) in published.items():
        c = load_config(str(ROOT / "experiments" / "icml2021" / name))
        assert (c.n_nodes, c.K, c.batch_size, c.lr, c.l2, c.partition, c.partition_k, c.partition_seed) == (
            8, 8, 100, 0.002, 0.01, "icml21", 8, 11), name
        assert c.same_init and c.steps == rounds * c.K, name
        assert c.topology == ("multiplex_ring" if "ring" in name else "icml21_random"), name
        assert c.edge_schedule == f"slots:K=8,table={'doublering' if 'ring' in name else 'random'}", name
        assert (c.epoch_samples, c.lr_decay, c.lr_decay_every) == (12_800, 0.9, 410 * 128), name
        assert c.published["test_acc"] == {"dsgd": dsgd, "pdmm-isvr": pdmm, "admm-isvr": admm, "centralized": ref}
        assert {"dsgd", "pdmm-isvr", "admm-isvr", "admm-isvr-shipped", "pdmm-sgd", "admm-sgd", "gradient-tracking",
                "centralized"} == set(c.algorithms), name


def test_kdd20_configs_carry_sample_code_setup():
    """docs/reproduction_setups.md#kdd20-hyperparameters-and-length: 3 fully connected nodes,
    batch 100, mu 200, eta 1, rho 0.1, gossip lr 0.05, class splits with replacement,
    round-robin every 6 / p = 1/6."""
    for name, schedule in (("mnist_round_robin.py", "round_robin:interval=6,offsets=5/1/3"), ("mnist_random.py", "bernoulli:K=6"),
                           ("cifar_round_robin.py", "round_robin:interval=6,offsets=5/1/3"), ("cifar_random.py", "bernoulli:K=6")):
        c = load_config(str(ROOT / "experiments" / "kdd2020" / name))
        assert (c.topology, c.n_nodes, c.batch_size, c.edge_schedule) == ("complete", 3, 100, schedule), name
        assert c.partition == "classes" and c.partition_replace, name
        assert c.options["pairwise-gossip"]["lr"] == 0.05
        for algo in ("ecl-pdmm", "ecl-admm"):
            o = c.options[algo]
            assert (o["lr"], o["eta"], o["rho"]) == (0.005, 1.0, 0.1), (name, algo)
        if name.startswith("mnist"):
            assert c.class_lists == ((6, 7, 8, 9), (3, 4, 5), (0, 1, 2)) and c.steps == 50 * 600
        else:
            assert c.steps == 200 * 500 and (c.lr_decay, c.lr_decay_every) == (0.95, 10 * 500)


# --------------------------------------------------------------------------- item 5

def _fashion_mnist_or_skip():
    from ecl_jax import datasets

    try:
        return datasets.load_dataset("fashion_mnist")
    except Exception as err:  # the loader's own error names where it looked
        pytest.skip(f"Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): {err}")


@pytest.mark.slow
def test_icml21_fashion_logistic_ordering(tmp_path):
    """Real Fashion-MNIST, ICML21 logistic regression, multiplex ring, 96 rounds (768
    steps): the published ordering (ISVR >= DSGD + 5 points, |ISVR - reference| <= 3)."""
    _fashion_mnist_or_skip()
    config = load_config(str(ROOT / "experiments" / "icml2021" / "fashion_logistic_ring.py"))
    config = apply_overrides(config, [
        "steps=768", "eval_every=768", "algorithms=dsgd,pdmm-isvr,admm-isvr,centralized",
        f"out_dir={tmp_path}", "name=ordering",
    ])
    acc = {k: 100 * v["test_acc_mean"] for k, v in summarize(run_experiment(config, quiet=True).final).items()}
    for isvr in ("pdmm-isvr", "admm-isvr"):
        assert acc[isvr] >= acc["dsgd"] + 5.0, acc
        assert abs(acc[isvr] - acc["centralized"]) <= 3.0, acc


@pytest.mark.slow
def test_icml21_pauses_cost_dsgd_not_pdmm_isvr(tmp_path):
    """Real Fashion-MNIST, ICML21 logistic, random graph, 1,024 own steps per node: with the
    official runtime's evaluation pauses (free-running clocks, a pause of 3.7 x the epoch's
    training after every 32 own steps, +-10 % jitter, random phases) DSGD loses at least 5 points
    against lockstep while PDMM-ISVR stays within 3 (REPRODUCTION.md section 1.1; measured
    2026-12-03: DSGD 51.2 -> 37.6 %, PDMM-ISVR 64.5 -> 65.5 %)."""
    _fashion_mnist_or_skip()
    base = load_config(str(ROOT / "experiments" / "icml2021" / "fashion_logistic_random.py"))
    own, every = 1024, 32
    pause = 3.7 * every
    ticks = round(own / every * (every + pause))
    runs = {
        "lockstep": [f"steps={own}", f"eval_every={own}"],
        "free": [f"steps={ticks}", f"eval_every={ticks}", "lr_decay=1.0", "lr_decay_every=0",
                 f"runtime=free:pause_every={every},pause={pause},jitter=0.1,phase=random"],
    }
    acc = {}
    for label, extra in runs.items():
        config = apply_overrides(base, extra + ["algorithms=dsgd,pdmm-isvr", "n_train=16000", "n_test=2000",
                                                f"out_dir={tmp_path}", f"name={label}"])
        final = summarize(run_experiment(config, quiet=True).final)
        acc[label] = {k: 100 * v["test_acc_mean"] for k, v in final.items()}
        assert {k: v["step"] for k, v in final.items()} == {"dsgd": config.steps, "pdmm-isvr": config.steps}
    drop = {a: acc["lockstep"][a] - acc["free"][a] for a in ("dsgd", "pdmm-isvr")}
    assert drop["dsgd"] >= 5.0, acc
    assert abs(drop["pdmm-isvr"]) <= 3.0, acc
    assert drop["dsgd"] >= drop["pdmm-isvr"] + 5.0, acc


# --------------------------------------------------------------------------- item 6

def _claims_run(tmp_path, partition: str, algorithms: tuple[str, ...]) -> dict[str, float]:
    config = RunConfig(
        name=f"claims_{partition}", dataset="mnist5k", model="logistic", partition=partition,
        partition_k=2 if partition == "k_classes" else None, topology="ring", n_nodes=8, edge_schedule="bernoulli:K=4", K=4, algorithms=algorithms,
        lr=0.1, eta=2.0, batch_size=32, steps=600, eval_every=600, out_dir=str(tmp_path),
    )
    final = summarize(run_experiment(config, quiet=True).final)
    return {k: 100 * v["test_acc_mean"] for k, v in final.items()}


ECL = ("ecl-pdmm", "ecl-admm", "pdmm-isvr", "admm-isvr")


@pytest.fixture(scope="module")
def claims(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("claims")
    non_iid = _claims_run(tmp, "k_classes", ECL + ("dsgd", "gossip", "centralized"))
    iid = _claims_run(tmp, "iid", ("ecl-pdmm", "pdmm-isvr", "dsgd", "gossip", "centralized"))
    return non_iid, iid


@pytest.mark.slow
@pytest.mark.xdist_group("claims")  # the claims fixture is built once, on one worker
def test_claim_non_iid_ecl_near_reference_baselines_behind(claims):
    """2 of 10 classes per node, 8-node ring, each edge active with p = 1/4 per step:
    ECL-PDMM/ADMM and PDMM/ADMM-ISVR within 2 points of the centralised reference,
    DSGD and gossip at least 5 points behind it."""
    acc, _ = claims
    ref = acc["centralized"]
    for name in ECL:
        assert ref - acc[name] <= 2.0, (name, acc)
    for name in ("dsgd", "gossip"):
        assert ref - acc[name] >= 5.0, (name, acc)
        assert min(acc[e] for e in ECL) - acc[name] >= 3.0, (name, acc)


@pytest.mark.slow
@pytest.mark.xdist_group("claims")
def test_claim_iid_all_close(claims):
    """IID split, same graph and exchange: ECL and gossip within 2 points of the
    reference; DSGD (ICML21 code's averaging with stale copies, which slows it on any
    data) within 6, and its gap less than half of its non-IID gap."""
    non_iid, acc = claims
    ref = acc["centralized"]
    for name in ("ecl-pdmm", "pdmm-isvr", "gossip"):
        assert abs(ref - acc[name]) <= 2.0, (name, acc)
    assert ref - acc["dsgd"] <= 6.0, acc
    for name in ("dsgd", "gossip"):
        assert (ref - acc[name]) < 0.5 * (non_iid["centralized"] - non_iid[name]), (name, acc, non_iid)
