# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Writing a new update rule
#
# An algorithm in `ecl_jax` is an `Algorithm(name, init, step, node_params)` of pure
# functions over node-stacked pytrees (optax style):
#
# ```python
# state  = algorithm.init(params, topology)          # params: [N, ...] on every leaf
# state  = algorithm.step(state, grads, topology, edge_active [E], node_active [N])
# params = algorithm.node_params(state)              # the models the nodes evaluate
# ```
#
# The engine computes `grads` (each node's stochastic gradient at `node_params(state)`)
# and draws the masks; the rule only says how nodes update and what they exchange. A new
# rule is therefore one small function, written with the primitives the built-in rules
# use (so it runs on the same fast path):
#
# * `for_each_node(fn, *args, node_active=..., keep=...)` (`ecl_jax.algorithms`): `fn` is
#   ONE node's local update, written for its own (unstacked) model, gradient, ...; it runs
#   on every node at once, nodes that skip the step keep `keep`, and the result is laid
#   out so the exchange after it stays fast;
# * `EdgeDuals` (`ecl_jax.duals`): per-edge duals $z_{i|j}$, with the verbs
#   `EdgeDuals.zeros(topo, params)`, `duals.signed_sum()` ($\sum_{j} A_{i|j} z_{i|j}$ per
#   node), `duals.exchange(w, active, theta, node_active)` (the masked ECL exchange
#   $z_{i|j} \leftarrow (1-\theta) z_{i|j} + \theta (z_{j|i} - 2 A_{j|i} w_j)$; given the
#   step's `node_active`, a node that did not step since the edge's last swap sends nothing
#   new, as in the official codes) and
#   `duals.directed()` ($z_{i|j}$ per directed edge, for checks and plots);
# * `ecl_jax.graph_ops`: `exchanging_edges(topo, edge_active, node_active)` (the edges
#   that exchange this step: drawn, both ends active), `neighbor_values`, `sum_edges`,
#   `edge_weights(topo, "sign")` ($A_{i|j}$), ... for rules that exchange models;
# * `keep_inactive(new, old, node_active)`: nodes that skip a step keep their old state.
#
# Example: **ECL-PDMM with heavy-ball momentum on the primal step**.

# %% [markdown]
# ## The rule
#
# ECL-PDMM (see `01_quickstart`) linearises $f_i$ around $w_i^t$ and adds a proximal
# term $\frac\mu2\|w - w_i^t\|^2$. Heavy ball (Polyak) moves the proximal centre to the
# extrapolated point $w_i^t + \beta (w_i^t - w_i^{t-1})$:
#
# $$
# w_i^{t+1} = \frac{\mu \big(w_i^t + \beta (w_i^t - w_i^{t-1})\big) - g_i^t
#                   + \eta \sum_{j \in \mathcal N(i)} A_{i|j}\, z_{i|j}}
#                  {\mu + \eta\, |\mathcal N(i)|},
# \qquad y_{i|j} = z_{i|j} - 2 A_{i|j}\, w_i^{t+1},
# $$
#
# and on active edges $z_{i|j} \leftarrow y_{j|i}$. With $\beta = 0$ this *is*
# ECL-PDMM. At a fixed point $w^t = w^{t-1}$, so the fixed points (the centralised
# optimum with full gradients) are the same for every $\beta$. The state needs one extra
# copy of the models, $w^{t-1}$.

# %%
# %matplotlib inline
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import ecl_jax
from ecl_jax import datasets, masks, models, partition, topology
from ecl_jax import graph_ops as gops
from ecl_jax.algorithms import Algorithm, ecl_pdmm, for_each_node
from ecl_jax.communication import Messages
from ecl_jax.duals import EdgeDuals
from ecl_jax.participation import Participation, step_keys


# %%
class HeavyBallState(NamedTuple):
    params: Any       # w_i^t      [N, ...]
    prev: Any         # w_i^{t-1}  [N, ...]
    duals: EdgeDuals  # z_{i|j}


def ecl_pdmm_heavy_ball(lr: float, eta: float = 1.0, beta: float = 0.5) -> Algorithm:
    """ECL-PDMM with heavy-ball extrapolation of the proximal centre (beta = 0: ECL-PDMM)."""
    mu = 1.0 / lr

    def init(params, topo):
        return HeavyBallState(params, params, EdgeDuals.zeros(topo, params))

    def step(state, grads, topo, edge_active, node_active):
        def primal(w, w_prev, g, a, deg):  # node i: a = sum_j A_{i|j} z_{i|j}; returns (w_i^{t+1}, w_i^t)
            new = lambda w, wp, g, a: (mu * (w + beta * (w - wp)) - g + eta * a) / (mu + eta * deg)
            return jax.tree_util.tree_map(new, w, w_prev, g, a), w

        deg = jnp.asarray(topo.degree, jnp.float32)
        new_w, new_prev = for_each_node(primal, state.params, state.prev, grads, state.duals.signed_sum, deg,
                                        node_active=node_active, keep=(state.params, state.prev))
        exchanging = gops.exchanging_edges(topo, edge_active, node_active)
        new_z = state.duals.exchange(new_w, exchanging, node_active=node_active)
        return HeavyBallState(new_w, new_prev, new_z)

    sends = Messages(lambda w: w, one_way=True)  # a dual per exchange and direction, as ECL: counts messages and bytes
    return Algorithm(f"ecl-pdmm-hb{beta:g}", init, step, lambda s: s.params, messages=sends)


# %% [markdown]
# ## Check 1: $\beta = 0$ reproduces ECL-PDMM
#
# A check to copy for any new rule: when it should reduce to an existing one, step both
# side by side on the same inputs and compare the states after every step. Random
# gradients, random edge masks and random stragglers (`BernoulliNodes(p=0.7)`), nodes
# starting from *different* models so the exchange matters from the first step.

# %%
N = 8
topo = topology.ring(N)
model = models.get_model("logistic")
params0 = models.init_node_params(model, jax.random.PRNGKey(0), N, (28, 28, 1))  # one model, copied N times
rng = np.random.default_rng(0)
random_like = lambda tree: jax.tree_util.tree_map(lambda w: rng.normal(size=w.shape).astype(np.float32), tree)
w_init = jax.tree_util.tree_map(lambda w, r: w + 0.1 * r, params0, random_like(params0))  # nodes start apart

reference = ecl_pdmm(lr=0.1, eta=1.0)
candidate = ecl_pdmm_heavy_ball(lr=0.1, eta=1.0, beta=0.0)
step_ref = jax.jit(lambda s, g, e, n: reference.step(s, g, topo, e, n))
step_new = jax.jit(lambda s, g, e, n: candidate.step(s, g, topo, e, n))
participation = Participation(topo, masks.BernoulliEdges(K=4), masks.BernoulliNodes(p=0.7))  # who takes part
key = jax.random.PRNGKey(100)
clocks = participation.init(key)

s_ref, s_new = reference.init(w_init, topo), candidate.init(w_init, topo)
max_diff = 0.0
for t in range(30):
    grads = random_like(w_init)
    clocks, who = participation.draw(clocks, step_keys(key, t), t)  # the masks an engine run with `key` draws
    e, n = who.edge_active, who.node_active
    s_ref, s_new = step_ref(s_ref, grads, e, n), step_new(s_new, grads, e, n)
    for a, b in zip(jax.tree_util.tree_leaves((s_ref.params, s_ref.duals.directed())),
                    jax.tree_util.tree_leaves((s_new.params, s_new.duals.directed()))):
        assert np.allclose(a, b, rtol=1e-5, atol=1e-5), (t, float(jnp.abs(a - b).max()))
        max_diff = max(max_diff, float(jnp.abs(a - b).max()))
print(f"30 steps, models and duals equal to ECL-PDMM's: max |difference| = {max_diff:.2e}")

# %% [markdown]
# ## Check 2: the fixed point is unchanged
#
# Full-batch least squares, every node with its own data ($y = X_i w_i^\star + $ noise,
# a different $w_i^\star$ per node), edges active with probability 1/4. The centralised
# optimum $\arg\min_w \sum_i \frac{1}{2M}\|X_i w - y_i\|^2$ comes from `np.linalg.lstsq`;
# both rules must reach it to float32 precision.

# %%
M, P = 20, 5
rng = np.random.default_rng(0)
x_ls = rng.normal(size=(N, M, P))
y_ls = np.einsum("nmp,np->nm", x_ls, 2.0 * rng.normal(size=(N, P))) + 0.1 * rng.normal(size=(N, M))
w_star = np.linalg.lstsq(x_ls.reshape(-1, P), y_ls.reshape(-1), rcond=None)[0]
ls_data = ecl_jax.NodeData(x_ls.astype(np.float32), y_ls.astype(np.float32), np.full(N, M, np.int32))

def squared_error(w, x, y, rng):
    return 0.5 * (x @ w - y) ** 2

for alg in [ecl_pdmm(0.2), ecl_pdmm_heavy_ball(0.2, beta=0.5)]:
    engine = ecl_jax.Engine(alg, topo, squared_error, batch_size=None, edge_schedule=masks.BernoulliEdges(K=4),
                            eval_every=100, train_metrics=False,
                            eval_fn=lambda w, target: {"error": jnp.abs(w - target).max()})
    _, m = engine.run(np.zeros((N, P), np.float32), ls_data, 1000, jax.random.PRNGKey(0),
                      eval_data=jnp.asarray(w_star, jnp.float32))
    print(f"{alg.name:>15}: max_i |w_i - w*| at steps {m['step'][[0, 2, 4, -1]].tolist()}: {m['error'][[0, 2, 4, -1]]}")
    assert m["error"][-1] < 1e-4, m["error"]

# %% [markdown]
# ## Compare on non-IID MNIST
#
# The quickstart's setting: ring of 8, two digit classes per node, logistic regression,
# batch 32, each edge active with probability 1/4, 300 steps, $\mu = 10$, $\eta = 1$.

# %%
ds = datasets.load_dataset("mnist5k")
parts = partition.partition(ds.y_train, N, "k_classes", seed=0, k=2)
data = partition.node_data(ds.x_train, ds.y_train, parts)
loss_fn, accuracy = models.classification_loss(model), models.accuracy_fn(model)
test = (jnp.asarray(ds.x_test), jnp.asarray(ds.y_test))

def eval_fn(node_params, test):
    return {"test_acc": jax.vmap(lambda p: accuracy(p, *test).mean())(node_params)}

LR = 0.1
runs = {}
for alg in [ecl_pdmm(LR), ecl_pdmm_heavy_ball(LR, beta=0.3), ecl_pdmm_heavy_ball(LR, beta=0.6)]:
    engine = ecl_jax.Engine(alg, topo, loss_fn, batch_size=32, edge_schedule=masks.BernoulliEdges(K=4),
                            eval_every=25, eval_fn=eval_fn)
    t0 = time.perf_counter()
    _, runs[alg.name] = engine.run(params0, data, 300, jax.random.PRNGKey(1), eval_data=test)
    acc = runs[alg.name]["test_acc"].mean(1)
    print(f"{alg.name:>15}: {time.perf_counter() - t0:4.1f} s | test accuracy at steps 25/100/300: "
          f"{acc[0]:.3f} {acc[3]:.3f} {acc[-1]:.3f} | consensus distance {runs[alg.name]['consensus_distance'][-1]:.3g}")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for name, m in runs.items():
    axes[0].plot(m["step"], m["test_acc"].mean(1), marker=".", label=name)
    axes[1].semilogy(m["step"], m["consensus_distance"], marker=".", label=name)
axes[0].set_ylabel("test accuracy (mean over nodes)")
axes[1].set_ylabel("consensus distance")
for ax in axes:
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
axes[0].legend()
plt.tight_layout()
plt.show()


# %% [markdown]
# Momentum speeds up the first steps, but the nodes drift apart (larger consensus
# distance), and with $\beta = 0.6$ the run destabilises: the accuracy peaks and then
# falls while the consensus distance grows. On least squares (check 2) every direction
# is curved and momentum is harmless; logistic regression on MNIST has many directions
# with almost no curvature (pixels that are rarely on). The extreme case $f_i = 0$
# isolates the consensus dynamics: ECL-PDMM contracts to consensus, and the heavy-ball
# version blows up once $\beta$ is large enough.

# %%
def consensus_only(alg, steps=600):
    """Consensus distance of a run with zero gradients (f_i = 0), nodes starting apart."""
    w = jax.random.normal(jax.random.PRNGKey(0), (N, 50))
    schedule = masks.BernoulliEdges(K=4)

    def body(state, t):
        e = schedule(jax.random.fold_in(jax.random.PRNGKey(1), t), t, topo)
        state = alg.step(state, jnp.zeros_like(w), topo, e, jnp.ones(N, bool))
        return state, ecl_jax.consensus_distance(alg.node_params(state))

    return jax.lax.scan(body, alg.init(w, topo), jnp.arange(steps))[1]

zero_grad = {beta: np.asarray(consensus_only(ecl_pdmm_heavy_ball(LR, beta=beta))) for beta in (0.0, 0.3, 0.6)}
plt.figure(figsize=(5, 3.2))
for beta, d in zero_grad.items():
    plt.semilogy(np.maximum(d, 1e-12), label=f"beta = {beta}")
plt.xlabel("step")
plt.ylabel("consensus distance ($f_i = 0$)")
plt.legend()
plt.grid(alpha=0.3)
plt.show()
print({beta: f"{d[-1]:.3g}" for beta, d in zero_grad.items()})

# %% [markdown]
# ## Summary
#
# Writing the rule took one `init` and one `step` over the primitives the built-in rules
# use (`for_each_node`, `EdgeDuals`), so it compiles to the same kind of program as the
# built-in ECL-PDMM: on the MLP at N = 64 on a ring it ran at 0.87-0.92 of its speed
# (`python -m experiments.bench --only user_rule`; BENCHMARKS.md), the price of the one
# extra model copy $w^{t-1}$ it reads and writes every step;
# checks 1 and 2 are the two tests worth copying for any new rule (reduction to a known
# rule, and the fixed point on a problem with a closed-form optimum). The cell below
# fails if the findings above do not hold (`tests/test_notebooks.py` executes it).

# %%
final_acc = {name: float(m["test_acc"][-1].mean()) for name, m in runs.items()}
final_cd = {name: float(m["consensus_distance"][-1]) for name, m in runs.items()}
assert final_acc["ecl-pdmm"] > 0.8 and final_acc["ecl-pdmm-hb0.3"] > 0.8, final_acc
assert not final_cd["ecl-pdmm-hb0.6"] < 10 * final_cd["ecl-pdmm"], final_cd  # (NaN also counts as unstable)
start, end = {b: d[0] for b, d in zero_grad.items()}, {b: d[-50:].mean() for b, d in zero_grad.items()}
assert end[0.0] < 1e-3 * start[0.0] and end[0.3] < 1e-2 * start[0.3], (start, end)
assert not end[0.6] < start[0.6], (start, end)  # grows (or overflows to inf/NaN)
print("RESULT", " ".join(f"{k}={v:.3f}" for k, v in final_acc.items()),
      "| consensus", " ".join(f"{k}={v:.3g}" for k, v in final_cd.items()))
