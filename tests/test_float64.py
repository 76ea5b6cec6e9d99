"""Float64 means float64: with ``jax_enable_x64`` and float64 params, every constant the
algorithms and the engine use (lr, eta_i, rho_i, the gradient coefficient, the
Metropolis-Hastings and averaging weights, the 1/m_i and 1/B loss weights) is computed in
the params' dtype (per leaf), so a float64 run is float64 end to end.

The constants are chosen so that float32 cannot represent them (lr = 0.1 or 0.3,
eta = 0.3, eta_i = eta/|N(i)| = 0.075, 0.1, 0.15, MH weights 1/3 and 1/5, unequal
per-node row counts so the 1/m_i differ): one rounded to float32 moves a trajectory by
~1e-8 and the fixed point by 1e-8, far above the tolerances here.

* least squares on the irregular ICML21 random graph, full local gradients, every edge
  active: ECL-PDMM / ECL-ADMM (eta_rule "degree" and "constant") and the ISVR rules reach
  the closed-form fixed point argmin sum_i (c_i/eta_i) f_i
  (docs/algorithms.md#fixed-point-and-consensus) to <= 1e-10;
* every algorithm of the naive float64 reference (tests/naive_reference.py), with random
  edge and node masks, agrees with ecl_jax step by step for 300 steps to 1e-12 relative;
* the engine's loss weights of a node sum to 1 to 1e-15 (full batch and minibatches);
* in a params tree with a float64 and a float32 leaf each leaf gets its own dtype's
  constants (bit-identical to a run of the leaf alone; the float64 leaf agrees with the
  naive float64 reference to 1e-12).

All run in one float64 subprocess (as tests/test_convergence.py does), so this process
keeps x64 off. Ground truth is NumPy (np.linalg.lstsq, the naive reference), never ecl_jax.
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

sys.path.insert(0, os.path.dirname(__file__))
import naive_reference as nr  # noqa: E402

from ecl_jax import engine as eng  # noqa: E402
from ecl_jax import masks as mk  # noqa: E402
from ecl_jax import topology as tp  # noqa: E402
from ecl_jax.algorithms import ecl_admm, ecl_isvr, ecl_pdmm  # noqa: E402

# slow: one subprocess or set of runs for the module; grouped: that fixture is built once, on one worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("float64")]

N, M, P = 8, 20, 5
COUNTS = np.array([10, 13, 17, 20, 11, 15, 19, 12], np.int32)  # rows per node: the 1/m_i differ
STEPS = 3000


# ------------------------------------------------------------------ problem
def irregular_lsq(seed: int = 0):
    """Node i: COUNTS[i] rows y = X_i w_i^true + noise (padded to M with zero rows)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, M, P))
    w_true = 2.0 * rng.normal(size=(N, P))
    y = np.einsum("nmp,np->nm", x, w_true) + 0.1 * rng.normal(size=(N, M))
    valid = np.arange(M)[None, :] < COUNTS[:, None]
    return np.where(valid[..., None], x, 0.0), np.where(valid, y, 0.0)


def weighted_lsq(x, y, c):
    """argmin_w sum_i c_i f_i(w), f_i(w) = (1/(2 m_i)) ||X_i w - y_i||^2 over node i's m_i rows."""
    s = np.sqrt(np.asarray(c, np.float64) / COUNTS)
    return np.linalg.lstsq((s[:, None, None] * x).reshape(-1, P), (s[:, None] * y).reshape(-1), rcond=None)[0]


def lsq_loss(w, x, y, rng):
    return 0.5 * (x @ w - y) ** 2


# name: (algorithm, c_i/eta_i up to a constant factor as a function of the degrees d)
CONVERGENCE = {
    "pdmm_degree": (lambda: ecl_pdmm(lr=0.3, eta=0.3, eta_rule="degree"), lambda d: d),
    "admm_degree": (lambda: ecl_admm(lr=0.1, eta=0.3, eta_rule="degree"), lambda d: d),
    "pdmm_constant": (lambda: ecl_pdmm(lr=0.3, eta=0.3), lambda d: np.ones_like(d)),
    "isvr_paper_pdmm": (lambda: ecl_isvr(lr=0.1, K=4), lambda d: d * (4 - 1)),
    "isvr_paper_admm": (lambda: ecl_isvr(lr=0.1, K=4, variant="admm"), lambda d: d * (4 - 1)),
    "isvr_code_pdmm": (lambda: ecl_isvr(lr=0.1, K=4, eta_rule="code"), lambda d: 4 * d + 4 - d),
    "isvr_code_gcoef": (
        lambda: ecl_isvr(lr=0.1, K=4, eta_rule="code", gradient_coefficient=True),
        lambda d: np.ones_like(d),
    ),
}


def run_convergence(case: str) -> dict:
    """Full-batch float64 run of ``case`` on the ICML21 graph: final error to its fixed
    point, the error history and the final models' dtype."""
    make, weight = CONVERGENCE[case]
    topo = tp.icml21_random()
    x, y = irregular_lsq()
    target = weighted_lsq(x, y, weight(topo.degree.astype(np.float64)))
    alg = make()
    engine = eng.Engine(alg, topo, lsq_loss, batch_size=None, edge_schedule=mk.AlwaysEdges(),
                        eval_every=1000, train_metrics=False,
                        eval_fn=lambda p, t: {"err": jnp.max(jnp.abs(p - t))})
    data = eng.NodeData(x, y, COUNTS)
    w0 = np.random.default_rng(7).normal(size=(N, P))  # nodes start apart
    carry, hist = engine.run(w0, data, STEPS, jax.random.PRNGKey(3), eval_data=target)
    w = np.asarray(alg.node_params(carry.state))
    return {"err": float(np.abs(w - target[None]).max()), "history": [float(e) for e in hist["err"]],
            "dtype": str(w.dtype)}


# -------------------------------------------------- step-by-step reference
REF_STEPS = 300
REF_LAYOUTS = ("slots", "edges")


def run_reference(case: str, layout: str) -> dict:
    """Max over 300 steps and all state parts of max|ecl_jax - naive| / max|naive| (per leaf)."""
    topo = tp.icml21_random().with_layout(layout)
    alg, naive = nr.build(case, topo)
    seed = sum(map(ord, case + layout))
    problem = nr.Problem(topo.n_nodes, seed)
    edge_masks, node_masks = nr.random_masks(topo, REF_STEPS, seed + 1)
    want = []
    nr.run_naive(naive, problem, edge_masks, node_masks, callback=lambda t, nv: want.append(nr.naive_view(nv)))
    worst = {"rel": 0.0, "dtype": None}
    directed = jax.jit(nr.directed_duals)  # the eager conversion dominated the run time

    def check(t, state):
        got = nr.jax_view(alg, state, topo, directed=directed)
        worst["dtype"] = str(np.asarray(jax.tree_util.tree_leaves(alg.node_params(state))[0]).dtype)
        assert set(got) == set(want[t]), (sorted(got), sorted(want[t]))
        for part, leaves in want[t].items():
            for leaf, ref in leaves.items():
                rel = np.abs(got[part][leaf] - ref).max() / max(np.abs(ref).max(), 1e-300)
                worst["rel"] = max(worst["rel"], float(rel))

    nr.run_jax(alg, topo, problem, edge_masks, node_masks, callback=check, dtype=np.float64)
    worst["moved"] = float(max(np.abs(want[-1]["params"][k] - problem.w0[k]).max() for k in problem.w0))
    return worst


# ------------------------------------------------------------ loss weights
def run_loss_weights(batch_size) -> dict:
    """One engine step of local SGD (lr = 1) on f_i(w) = mean over rows of w . x_i, every
    row of node i equal to c_i: the gradient is c_i times the sum of the loss weights
    (1/m_i over m_i rows, or 1/B over B rows), so w_1 = w_0 - c_i exactly when the weights
    sum to 1. Returns max |w_1 - (w_0 - c_i)| / max |c_i|."""
    from ecl_jax.algorithms import local_sgd

    rng = np.random.default_rng(5)
    c = rng.normal(size=(N, P))
    x = np.repeat(c[:, None, :], M, axis=1)
    w0 = rng.normal(size=(N, P))
    alg = local_sgd(1.0)
    engine = eng.Engine(alg, tp.icml21_random(), lambda w, x, y, r: x @ w, batch_size=batch_size,
                        eval_every=1, train_metrics=False)
    carry, _ = engine.run(w0, eng.NodeData(x, np.zeros((N, M)), COUNTS), 1, jax.random.PRNGKey(0))
    w1 = np.asarray(alg.node_params(carry.state))
    return {"rel": float(np.abs(w1 - (w0 - c)).max() / np.abs(c).max()), "dtype": str(w1.dtype)}


LOSS_WEIGHTS = {"full_batch": None, "batch3": 3, "batch7": 7}


# ------------------------------------------------------- mixed-dtype leaves
def _mixed_algorithms():
    from ecl_jax.algorithms import dsgd, gossip, gradient_tracking, pairwise_gossip

    return {
        "pdmm_degree": lambda: ecl_pdmm(lr=0.1, eta=0.3, eta_rule="degree"),
        "isvr_code_gcoef": lambda: ecl_isvr(0.1, K=4, variant="admm", eta_rule="code", gradient_coefficient=True),
        "gossip": lambda: gossip(0.1),
        "dsgd": lambda: dsgd(0.1),
        "pairwise_gossip": lambda: pairwise_gossip(0.1),
        "gradient_tracking": lambda: gradient_tracking(0.1),
    }


MIXED = ("pdmm_degree", "isvr_code_gcoef", "gossip", "dsgd", "pairwise_gossip", "gradient_tracking")


def _mixed_naive(case: str, graph: nr.Graph):
    return {
        "pdmm_degree": lambda: nr.NaiveECL(graph, 0.1, eta=0.3, eta_rule="degree"),
        "isvr_code_gcoef": lambda: nr.NaiveECL(graph, 0.1, eta_rule="isvr_code", K=4, c=2.0, dual_smoothing=True,
                                               gradient_coefficient=True),
        "gossip": lambda: nr.NaiveGossip(graph, 0.1),
        "dsgd": lambda: nr.NaiveDSGD(graph, 0.1),
        "pairwise_gossip": lambda: nr.NaivePairwiseGossip(graph, 0.1),
        "gradient_tracking": lambda: nr.NaiveGradientTracking(graph, 0.1),
    }[case]()


def run_mixed_leaves(case: str, steps: int = 40) -> dict:
    """A float64 and a float32 leaf in one params tree get the constants of their own dtype:
    each ends bit-identical to a run of that leaf alone (leafwise gradients
    g = a (w - c), so the leaves do not interact), and the float64 leaf agrees with the
    naive float64 reference ("rel", max relative deviation)."""
    topo = tp.icml21_random()
    rng = np.random.default_rng(11)
    shapes = {"k64": (N, 3, 2), "b32": (N, 4)}
    a = {k: rng.uniform(0.5, 2.0, s) for k, s in shapes.items()}
    c = {k: rng.normal(size=s) for k, s in shapes.items()}
    w0 = {k: rng.normal(size=s) for k, s in shapes.items()}
    dtypes = {"k64": jnp.float64, "b32": jnp.float32}

    def run(names):
        alg = _mixed_algorithms()[case]()
        params = {k: jnp.asarray(w0[k], dtypes[k]) for k in names}
        state = alg.init(params, topo)
        ea, na = jnp.ones(topo.n_edges, bool), jnp.ones(topo.n_nodes, bool)
        step = jax.jit(lambda s: alg.step(
            s, {k: (a[k] * (w - c[k])).astype(w.dtype) for k, w in alg.node_params(s).items()}, topo, ea, na))
        for _ in range(steps):
            state = step(state)
        return {k: np.asarray(v) for k, v in alg.node_params(state).items()}

    both = run(("k64", "b32"))
    alone = {k: run((k,))[k] for k in shapes}
    out = {k: {"equal": bool(np.array_equal(both[k], alone[k])), "dtype": str(both[k].dtype),
               "moved": float(np.abs(both[k] - w0[k]).max())} for k in shapes}
    naive = _mixed_naive(case, nr.Graph(topo))
    naive.init(nr.split_nodes({"k64": w0["k64"]}))
    edges, nodes = np.ones(topo.n_edges, bool), np.ones(topo.n_nodes, bool)
    for _ in range(steps):
        naive.step([{"k64": a["k64"][i] * (w["k64"] - c["k64"][i])} for i, w in enumerate(naive.params())], edges, nodes)
    want = nr.stack_nodes(naive.params())["k64"]
    out["rel"] = float(np.abs(both["k64"] - want).max() / np.abs(want).max())
    return out


SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    sys.path.insert(0, {tests_dir!r})
    import test_float64 as tf
    out = {{"convergence": {{c: tf.run_convergence(c) for c in tf.CONVERGENCE}},
           "reference": {{f"{{c}}/{{l}}": tf.run_reference(c, l)
                         for c in tf.nr.CASE_NAMES for l in tf.REF_LAYOUTS}},
           "loss_weights": {{k: tf.run_loss_weights(b) for k, b in tf.LOSS_WEIGHTS.items()}},
           "mixed": {{c: tf.run_mixed_leaves(c) for c in tf.MIXED}}}}
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def results():
    script = SCRIPT.format(tests_dir=os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def test_problem_is_irregular_and_weighted():
    """The fixed points are distinct (so reaching the right one to 1e-10 means something)
    and float32 cannot hold the constants."""
    topo = tp.icml21_random()
    assert not topo.is_regular and len(set(COUNTS.tolist())) > 4
    d = topo.degree.astype(np.float64)
    x, y = irregular_lsq()
    assert np.abs(weighted_lsq(x, y, d) - weighted_lsq(x, y, np.ones(N))).max() > 1e-2
    # lr, eta, eta_i = eta/d_i (d = 2, 3, 4), MH weights 1/3 and 1/5, the 1/m_i
    for value in [0.1, 0.3, 0.3 / 2, 0.3 / 3, 0.3 / 4, 1 / 3, 1 / 5, *(1.0 / COUNTS)]:
        assert float(np.float32(value)) != value, value


@pytest.mark.parametrize("case", list(CONVERGENCE))
def test_float64_reaches_fixed_point(results, case):
    r = results["convergence"][case]
    assert r["dtype"] == "float64", case
    assert r["err"] <= 1e-10, f"{case}: max abs error to the fixed point {r['err']:.3g} (history {r['history']})"


@pytest.mark.parametrize("layout", REF_LAYOUTS)
@pytest.mark.parametrize("case", nr.CASE_NAMES)
def test_float64_matches_naive_reference_step_by_step(results, case, layout):
    r = results["reference"][f"{case}/{layout}"]
    assert r["dtype"] == "float64", case
    assert r["moved"] > 1e-2
    assert r["rel"] <= 1e-12, f"{case}/{layout}: max relative deviation {r['rel']:.3g} over {REF_STEPS} steps"


@pytest.mark.parametrize("case", list(LOSS_WEIGHTS))
def test_float64_loss_weights_sum_to_one(results, case):
    """The engine's 1/m_i (unequal m_i) and 1/B loss weights are float64 in a float64 run."""
    r = results["loss_weights"][case]
    assert r["dtype"] == "float64", case
    assert r["rel"] <= 1e-15, f"{case}: the loss weights of a node sum to 1 + {r['rel']:.3g}"


@pytest.mark.parametrize("case", MIXED)
def test_mixed_dtype_leaves_use_their_own_dtype(results, case):
    r = results["mixed"][case]
    assert (r["k64"]["dtype"], r["b32"]["dtype"]) == ("float64", "float32")
    for leaf in ("k64", "b32"):
        assert r[leaf]["moved"] > 1e-2, (case, leaf)
        assert r[leaf]["equal"], f"{case}: the {leaf} leaf of a mixed float64/float32 tree differs from its run alone"
    assert r["rel"] <= 1e-12, f"{case}: the float64 leaf deviates {r['rel']:.3g} from the naive float64 reference"


def test_this_process_is_unaffected():
    assert not jax.config.jax_enable_x64
