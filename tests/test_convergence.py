"""Convergence to the centralised optimum on strongly convex problems with full gradients
(docs/algorithms.md#fixed-point-and-consensus, docs/algorithms.md#properties-the-tests-check).

Every node holds different data, so the local optima differ and only a method that
corrects for the heterogeneity reaches argmin_w sum_i f_i(w) with a constant step:

* ECL-PDMM / ECL-ADMM (same eta on every node): the closed-form least-squares optimum,
  to float32 precision (<= 1e-5) and, in a float64 subprocess, to <= 1e-10, with every
  edge active and with each edge active with probability 1/6 per step;
* node-dependent eta_i on an irregular graph (KDD20 code's eta/|N(i)|, ICML21 ISVR
  rules): the limit is argmin sum_i f_i / eta_i (weighted least squares), measurably
  not argmin sum_i f_i;
* gradient tracking reaches the optimum; gossip (D-PSGD), the ICML21 DSGD and the KDD20
  pairwise gossip settle at a biased point with a constant step;
* l2-regularised logistic regression: PDMM/ADMM reach the optimum computed by Newton's
  method in NumPy.

Float64 runs with constants float32 cannot represent (lr = 0.1, eta = 0.3, eta/|N(i)|,
MH weights 1/3 and 1/5, unequal 1/m_i) are in tests/test_float64.py.

Ground truth is NumPy (np.linalg.lstsq / Newton in float64), never ecl_jax.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecl_jax import engine as eng
from ecl_jax import masks as mk
from ecl_jax import topology as tp
from ecl_jax.algorithms import (
    dsgd,
    ecl_admm,
    ecl_isvr,
    ecl_pdmm,
    gossip,
    gradient_tracking,
    pairwise_gossip,
)

N, M, P = 8, 20, 5
LR = 0.2  # mu = 5 > the largest local Lipschitz constant (~2.4) of the problem below


# ------------------------------------------------------------------ problem
def lsq_problem(seed: int = 0):
    """Node i: 20 rows y = X_i w_i^true + noise with its own w_i^true (non-IID)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, M, P))
    w_true = 2.0 * rng.normal(size=(N, P))
    y = np.einsum("nmp,np->nm", x, w_true) + 0.1 * rng.normal(size=(N, M))
    return x, y


def weighted_lsq(x, y, c=None):
    """argmin_w sum_i c_i f_i(w), f_i(w) = (1/2M) ||X_i w - y_i||^2 (equal M per node)."""
    c = np.ones(len(x)) if c is None else np.asarray(c, np.float64)
    s = np.sqrt(c)
    return np.linalg.lstsq((s[:, None, None] * x).reshape(-1, P), (s[:, None] * y).reshape(-1), rcond=None)[0]


def lsq_loss(w, x, y, rng):
    return 0.5 * (x @ w - y) ** 2


def run_full_batch(alg, topo, schedule, x, y, target, steps, dtype=np.float32, eval_every=500):
    """Run the engine with full local gradients; return (node models, max-abs error to
    ``target`` at every metric point)."""
    engine = eng.Engine(alg, topo, lsq_loss, batch_size=None, edge_schedule=schedule,
                        eval_every=eval_every, train_metrics=False,
                        eval_fn=lambda p, t: {"err": jnp.max(jnp.abs(p - t))})
    data = eng.NodeData(x.astype(dtype), y.astype(dtype), np.full(N, M, np.int32))
    w0 = np.random.default_rng(7).normal(size=(N, P)).astype(dtype)  # nodes start apart
    carry, hist = engine.run(w0, data, steps, jax.random.PRNGKey(3), eval_data=np.asarray(target, dtype))
    w = np.asarray(alg.node_params(carry.state))
    assert w.dtype == dtype
    return w, hist["err"]


TOPOLOGIES = {"ring8": lambda: tp.ring(8), "random_regular8_d3": lambda: tp.random_regular(8, 3, seed=0)}
SCHEDULES = {"all_edges": lambda: mk.AlwaysEdges(), "bernoulli_1_6": lambda: mk.BernoulliEdges(p=1 / 6)}
ECL = {"pdmm": lambda: ecl_pdmm(lr=LR, eta=1.0), "admm": lambda: ecl_admm(lr=LR, eta=1.0)}


def test_problem_is_heterogeneous():
    x, y = lsq_problem()
    w_star = weighted_lsq(x, y)
    local = np.stack([np.linalg.lstsq(x[i], y[i], rcond=None)[0] for i in range(N)])
    assert np.min(np.abs(local - w_star).max(1)) > 0.5  # no node's own optimum is w*
    # the optimum is a stationary point of sum_i f_i (sanity of the closed form)
    grad = sum(x[i].T @ (x[i] @ w_star - y[i]) for i in range(N))
    assert np.abs(grad).max() < 1e-10


@pytest.mark.slow
@pytest.mark.parametrize("sched", list(SCHEDULES))
@pytest.mark.parametrize("topo", list(TOPOLOGIES))
@pytest.mark.parametrize("alg", list(ECL))
def test_ecl_reaches_centralised_optimum_float32(alg, topo, sched):
    x, y = lsq_problem()
    w_star = weighted_lsq(x, y)
    w, err = run_full_batch(ECL[alg](), TOPOLOGIES[topo](), SCHEDULES[sched](), x, y, w_star, steps=1000)
    assert np.abs(w - w_star[None]).max() <= 1e-5, err


F64_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    sys.path.insert(0, {tests_dir!r})
    import test_convergence as tc
    x, y = tc.lsq_problem()
    w_star = tc.weighted_lsq(x, y)
    out = {{}}
    for a in tc.ECL:
        for t in tc.TOPOLOGIES:
            for s in tc.SCHEDULES:
                w, err = tc.run_full_batch(tc.ECL[a](), tc.TOPOLOGIES[t](), tc.SCHEDULES[s](), x, y, w_star,
                                           steps=2000, dtype=np.float64, eval_every=1000)
                out[f"{{a}}/{{t}}/{{s}}"] = [float(np.abs(w - w_star[None]).max()), str(w.dtype)]
    print("RESULT" + json.dumps(out))
    """
)


@pytest.mark.slow
def test_ecl_reaches_centralised_optimum_float64_subprocess():
    script = F64_SCRIPT.format(tests_dir=os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    results = json.loads(line[len("RESULT"):])
    assert len(results) == len(ECL) * len(TOPOLOGIES) * len(SCHEDULES)
    for case, (err, dtype) in results.items():
        assert dtype == "float64", case
        assert err <= 1e-10, f"{case}: max abs error {err:.3g}"
    assert not jax.config.jax_enable_x64  # this process is unaffected


# ------------------------------------------------------- node-dependent eta
def _isvr_code_weight(d, K, c):
    # 1/eta_i = lr (K d + K - c d) / c (ICML21 code)
    return (K * d + K - c * d) / c


IRREGULAR = {
    # name: (algorithm, 1/eta_i up to a constant factor, computed here from the formulas)
    "pdmm_degree": (lambda: ecl_pdmm(lr=LR, eta=1.0, eta_rule="degree"), lambda d: d),
    "admm_degree": (lambda: ecl_admm(lr=LR, eta=1.0, eta_rule="degree"), lambda d: d),
    "pdmm_isvr_paper": (lambda: ecl_isvr(lr=LR, K=8), lambda d: d * (8 - 1)),
    "pdmm_isvr_code": (lambda: ecl_isvr(lr=LR, K=8, eta_rule="code"), lambda d: _isvr_code_weight(d, 8, 1.0)),
}


@pytest.mark.parametrize("case", list(IRREGULAR))
def test_node_dependent_eta_moves_the_limit_on_irregular_graph(case):
    make, inv_eta = IRREGULAR[case]
    topo = tp.icml21_random()
    assert not topo.is_regular
    x, y = lsq_problem(seed=1)
    w_star = weighted_lsq(x, y)
    w_weighted = weighted_lsq(x, y, inv_eta(topo.degree.astype(np.float64)))
    gap = np.abs(w_weighted - w_star).max()
    assert gap > 2e-2  # the two targets are distinguishable
    w, err = run_full_batch(make(), topo, mk.AlwaysEdges(), x, y, w_weighted, steps=1500)
    assert np.abs(w - w_weighted[None]).max() <= 1e-5, err
    assert np.abs(w - w_star[None]).max() > 1e-2


def test_constant_eta_on_irregular_graph_reaches_unweighted_optimum():
    topo = tp.icml21_random()
    x, y = lsq_problem(seed=1)
    w_star = weighted_lsq(x, y)
    w, err = run_full_batch(ecl_pdmm(lr=LR, eta=1.0), topo, mk.BernoulliEdges(p=1 / 6), x, y, w_star, steps=1000)
    assert np.abs(w - w_star[None]).max() <= 1e-5, err


# ------------------------------------------------------------------ baselines
def test_gradient_tracking_reaches_optimum():
    x, y = lsq_problem()
    w_star = weighted_lsq(x, y)
    w, err = run_full_batch(gradient_tracking(0.1), tp.ring(8), mk.AlwaysEdges(), x, y, w_star, steps=1000)
    assert np.abs(w - w_star[None]).max() <= 1e-5, err


@pytest.mark.parametrize("name", ["gossip", "dsgd", "pairwise_gossip"])
def test_constant_step_gossip_settles_away_from_optimum(name):
    make = {"gossip": gossip, "dsgd": dsgd, "pairwise_gossip": pairwise_gossip}[name]
    x, y = lsq_problem()
    w_star = weighted_lsq(x, y)
    w, err = run_full_batch(make(0.1), tp.ring(8), mk.AlwaysEdges(), x, y, w_star, steps=1500)
    assert err[-1] > 1e-2
    # it has settled (a biased fixed point, not slow progress)
    assert abs(err[-1] - err[-2]) < 1e-4, err
    assert np.abs(w - w_star[None]).max() > 1e-2


# -------------------------------------------------------- logistic regression
LAM = 0.1
NL, ML, PL = 8, 30, 4


def logistic_problem(seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(NL, ML, PL)) + rng.normal(size=(NL, 1, PL))  # node-specific shift
    w_true, b_true = 1.5 * rng.normal(size=(NL, PL)), rng.normal(size=NL)
    logits = np.einsum("nmp,np->nm", x, w_true) + b_true[:, None]
    y = (rng.random((NL, ML)) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float64)
    return x, y


def newton_logistic(x, y, nodes=None):
    """argmin over theta = (w, b) of sum_i [ mean_m (log(1 + e^z) - y z) + LAM/2 ||theta||^2 ]."""
    nodes = list(range(len(x))) if nodes is None else nodes
    xt = np.concatenate([x[nodes], np.ones(x[nodes].shape[:2] + (1,))], -1)
    yy, n = y[nodes], len(nodes)
    th = np.zeros(xt.shape[-1])
    for _ in range(50):
        s = 1.0 / (1.0 + np.exp(-(xt @ th)))
        g = np.einsum("nmp,nm->p", xt, s - yy) / xt.shape[1] + n * LAM * th
        h = np.einsum("nmp,nm,nmq->pq", xt, s * (1 - s), xt) / xt.shape[1] + n * LAM * np.eye(len(th))
        th = th - np.linalg.solve(h, g)
    assert np.abs(g).max() < 1e-12
    return th


def logistic_loss(p, x, y, rng):
    z = x @ p["w"] + p["b"]
    return jnp.logaddexp(0.0, z) - y * z + 0.5 * LAM * (jnp.sum(p["w"] ** 2) + p["b"] ** 2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "alg, topo, sched",
    [
        ("pdmm", "icml21_random", "bernoulli_1_6"),
        ("admm", "ring8", "all_edges"),
    ],
)
def test_logistic_regression_reaches_newton_optimum(alg, topo, sched):
    x, y = logistic_problem()
    th = newton_logistic(x, y)
    local = np.stack([newton_logistic(x, y, [i]) for i in range(NL)])
    assert np.min(np.abs(local - th).max(1)) > 0.05  # heterogeneous nodes
    make = {"pdmm": lambda: ecl_pdmm(lr=0.3), "admm": lambda: ecl_admm(lr=0.3)}[alg]
    topology = {"icml21_random": tp.icml21_random, "ring8": lambda: tp.ring(8)}[topo]()
    schedule = SCHEDULES[sched]()
    algorithm = make()
    engine = eng.Engine(algorithm, topology, logistic_loss, batch_size=None, edge_schedule=schedule,
                        eval_every=500, train_metrics=False)
    data = eng.NodeData(x.astype(np.float32), y.astype(np.float32), np.full(NL, ML, np.int32))
    p0 = {"w": np.zeros((NL, PL), np.float32), "b": np.zeros(NL, np.float32)}
    carry, _ = engine.run(p0, data, 1000, jax.random.PRNGKey(0))
    params = algorithm.node_params(carry.state)
    err = max(np.abs(np.asarray(params["w"]) - th[None, :PL]).max(), np.abs(np.asarray(params["b"]) - th[PL]).max())
    assert err <= 1e-5, err
