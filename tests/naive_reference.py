"""Naive NumPy ground truth for every ecl_jax algorithm: explicit loops over nodes and edges.

Written from docs/algorithms.md and docs/official_codes.md (and the official codes they describe),
not from ecl_jax: the only thing taken from a ``Topology`` is its neighbour lists
(:meth:`Topology.neighbors`). Everything runs in float64 on plain dicts:

* a node model is a flat dict ``{leaf name: np.ndarray}``;
* per-directed-edge state (duals z_{i|j}, smoothed duals, received models) is a dict
  keyed by the pair ``(i, j)``;
* an edge mask is indexed like the sorted list of undirected edges (u < v), a node mask
  by node.

Semantics (docs/algorithms.md#mask-semantics, edge_consensus.py/baselines.py docstrings):
an undirected edge exchanges only when it is active AND both end nodes are active; an
inactive node keeps its whole state (model, optimiser state, duals, trackers).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import numpy as np

from ecl_jax.duals import is_duals

Tree = dict  # leaf name -> np.ndarray (one node's model)


# --------------------------------------------------------------------------- helpers
def split_mask(node_mask):
    """(computes, answers) of a node mask: a bool [N] array (both the same) or a pair of them
    (a paused node computes nothing but still answers swaps)."""
    if isinstance(node_mask, tuple):
        return node_mask
    return node_mask, node_mask


def tmap(fn: Callable, *trees: Tree) -> Tree:
    return {k: fn(*(t[k] for t in trees)) for k in trees[0]}


def tzeros(tree: Tree) -> Tree:
    return {k: np.zeros_like(v, dtype=np.float64) for k, v in tree.items()}


def tcopy(tree: Tree) -> Tree:
    return {k: np.array(v, dtype=np.float64, copy=True) for k, v in tree.items()}


def split_nodes(stacked: dict) -> list[Tree]:
    """{leaf: [N, ...]} -> one float64 dict per node."""
    n = len(next(iter(stacked.values())))
    return [{k: np.array(v[i], dtype=np.float64) for k, v in stacked.items()} for i in range(n)]


def stack_nodes(nodes: list[Tree]) -> dict:
    return {k: np.stack([t[k] for t in nodes]) for k in nodes[0]}


class Graph:
    """Neighbour lists of an undirected graph, and the canonical orders derived from them."""

    def __init__(self, topology):
        self.n = int(topology.n_nodes)
        self.nbrs = [sorted(int(j) for j in topology.neighbors(i)) for i in range(self.n)]
        for i, ns in enumerate(self.nbrs):
            for j in ns:
                assert i in self.nbrs[j], f"neighbour lists are not symmetric at ({i}, {j})"
        self.deg = [len(ns) for ns in self.nbrs]
        # Undirected edges (u < v), lexicographically sorted: the index of an edge mask.
        self.edges = [(i, j) for i in range(self.n) for j in self.nbrs[i] if i < j]
        # Directed edges sorted by (src, dst): the canonical CSR order.
        self.directed = [(i, j) for i in range(self.n) for j in self.nbrs[i]]

    @staticmethod
    def A(i: int, j: int) -> float:
        """A_{i|j} = +I if i < j else -I (docs/algorithms.md#consensus-problem)."""
        return 1.0 if i < j else -1.0

    def exchanging(self, edge_mask, node_mask) -> list[tuple[int, int]]:
        """Undirected edges that exchange this step: edge active and both ends active."""
        return [
            (u, v)
            for e, (u, v) in enumerate(self.edges)
            if bool(edge_mask[e]) and bool(node_mask[u]) and bool(node_mask[v])
        ]

    def stack_edges(self, values: dict) -> dict:
        """{(i, j): Tree} -> {leaf: [2E, ...]} in canonical (src, dst) order."""
        first = values[self.directed[0]]
        return {k: np.stack([values[d][k] for d in self.directed]) for k in first}


def fan_in(tree: Tree, name: str) -> int:
    """KDD20 code's "dim_num" for Flax-layout leaves: a weight with >= 2 dims -> product of
    all dims but the output (last) one; a 1-D weight -> its length; a bias -> its layer's
    weight's value."""
    if name == "bias":
        for ref in ("kernel", "scale"):
            if ref in tree:
                return fan_in(tree, ref)
    shape = np.shape(tree[name])
    if len(shape) >= 2:
        return int(np.prod(shape[:-1]))
    if len(shape) == 1:
        return int(shape[0])
    return 1


class NaiveSGD:
    """optax.sgd(lr, momentum) per node: m <- g + beta m ; w <- w - lr m (beta = 0: plain)."""

    def __init__(self, lr: float, momentum: float | None = None):
        self.lr, self.beta = lr, momentum

    def init(self, w: Tree):
        return tzeros(w) if self.beta else None

    def update(self, w: Tree, g: Tree, m):
        if self.beta:
            m = tmap(lambda mm, gg: gg + self.beta * mm, m, g)
            return tmap(lambda ww, mm: ww - self.lr * mm, w, m), m
        return tmap(lambda ww, gg: ww - self.lr * gg, w, g), m


# ------------------------------------------------------------------------ ECL family
class NaiveECL:
    """Linearised PDMM / ADMM / ISVR, per node and per edge (docs/algorithms.md#linearised-pdmm-step,
    #ecl-isvr).

    Primal (KDD20 Algorithm 1 line 5, with the code's per-edge coefficients):
        w_i <- (mu w_i - gcoef g_i + sum_j s eta_{i} A_{i|j} zbar_{i|j} + sum_j s rho_i w_j^recv)
               / (mu + sum_j s (eta_i + rho_i))
    ISVR paper rule in the poster's explicit form (Algorithm 1 line 8):
        w_i <- ((K-1)/K)(w_i - lr g_i) + (1/(K |N(i)|)) sum_j A_{i|j} z_{i|j}
    Reflection y_{i|j} = z_{i|j} - 2 A_{i|j} w_i^new, written into node i's send buffer
    ``snd[(i, j)]`` at i's own step (the official codes' ``snd``; it starts at 0); an exchange
    on an active edge delivers both buffers, z_{i|j} <- (1 - theta) z_{i|j} + theta snd[(j, i)].
    For theta = 1 every buffer is delivered, as the codes do (a buffer sent again is what the
    receiver holds already); for theta != 1 only buffers written since that edge's last swap.
    """

    def __init__(
        self,
        graph: Graph,
        lr,
        eta: float = 1.0,
        theta: float = 1.0,
        rho: float = 0.0,
        eta_rule: str = "constant",
        K: int | None = None,
        c: float = 1.0,
        fan_in_scaling: bool = False,
        dual_smoothing: bool = False,
        gradient_coefficient: bool = False,
        eta_follows_lr: bool = False,
    ):
        self.g = graph
        self.lr = lr
        self.eta, self.theta, self.rho = eta, theta, rho
        self.rule, self.K, self.c = eta_rule, K, c
        self.fan_in_scaling = fan_in_scaling
        self.smoothing = dual_smoothing
        self.gcoef_on = gradient_coefficient
        self.follow = eta_follows_lr

    def lr_at(self, t: int) -> float:
        return float(self.lr(t)) if callable(self.lr) else float(self.lr)

    def init(self, w0: list[Tree]):
        g = self.g
        self.w = [tcopy(w) for w in w0]
        self.z = {(i, j): tzeros(w0[i]) for (i, j) in g.directed}
        self.snd = {(i, j): tzeros(w0[i]) for (i, j) in g.directed}
        self.written = {(i, j): False for (i, j) in g.directed}  # snd written since the edge's last swap
        # Both official codes start the running dual mean at a copy of the node's weights.
        self.zbar = {(i, j): tcopy(w0[i]) for (i, j) in g.directed} if self.smoothing else None
        # Received neighbour models start as the neighbours' initial models.
        self.recv = {(i, j): tcopy(w0[j]) for (i, j) in g.directed} if self.rho > 0 else None
        self.t = 0

    def coefficients(self, i: int, lr: float) -> tuple[float, float, float]:
        """(eta_i, rho_i, gcoef_i) at step size lr."""
        d = self.g.deg[i]
        if self.rule == "constant":
            eta, rho, gcoef = self.eta, self.rho, 1.0
        elif self.rule == "degree":  # KDD20 code: eta/|E_i| and rho/|E_i| per edge
            eta, rho, gcoef = self.eta / d, self.rho / d, 1.0
        elif self.rule == "isvr_code":  # ICML21 code: eta = piw / (lr (R E + R - piw E))
            K, c = self.K, self.c
            eta, rho = c / (lr * (K * d + K - c * d)), 0.0
            gcoef = (1.0 - lr * eta * d * (K / c - 1.0)) if self.gcoef_on else 1.0
        else:
            raise ValueError(self.rule)
        if self.follow:
            # KDD20 code: eta = mu * (eta / mu_0) is recomputed from the current lr; rho is not.
            eta = eta * self.lr_at(0) / lr
        return eta, rho, gcoef

    def step(self, grads: list[Tree], edge_mask, node_mask):
        node_mask, answer = split_mask(node_mask)
        g = self.g
        lr = self.lr_at(self.t)
        new_w = [tcopy(w) for w in self.w]
        for i in range(g.n):
            if not node_mask[i]:
                continue
            if self.smoothing:  # codes' "ADMM": running mean every local step
                for j in g.nbrs[i]:
                    self.zbar[(i, j)] = tmap(lambda a, b: 0.5 * (a + b), self.zbar[(i, j)], self.z[(i, j)])
            zb = self.zbar if self.smoothing else self.z
            if self.rule == "isvr_paper":
                K, d = self.K, g.deg[i]
                out = tmap(lambda w, gg: (K - 1) / K * (w - lr * gg), self.w[i], grads[i])
                for j in g.nbrs[i]:
                    out = tmap(lambda o, zz: o + g.A(i, j) * zz / (K * d), out, zb[(i, j)])
                new_w[i] = out
                continue
            eta, rho, gcoef = self.coefficients(i, lr)
            out = {}
            for k, w in self.w[i].items():
                s = math.sqrt(fan_in(self.w[i], k)) if self.fan_in_scaling else 1.0
                num = w / lr - gcoef * grads[i][k]
                den = 1.0 / lr
                for j in g.nbrs[i]:
                    num = num + s * eta * g.A(i, j) * zb[(i, j)][k]
                    den += s * eta
                    if self.rho > 0:
                        num = num + s * rho * self.recv[(i, j)][k]
                        den += s * rho
                out[k] = num / den
            new_w[i] = out
        for (i, j) in g.directed:
            if node_mask[i]:
                self.snd[(i, j)] = tmap(lambda zz, ww: zz - 2.0 * g.A(i, j) * ww, self.z[(i, j)], new_w[i])
                self.written[(i, j)] = True
        th = self.theta
        for (u, v) in g.exchanging(edge_mask, answer):
            into_u, into_v = self.snd[(v, u)], self.snd[(u, v)]
            if th == 1.0 or self.written[(v, u)]:
                self.z[(u, v)] = tmap(lambda zz, yy: (1 - th) * zz + th * yy, self.z[(u, v)], into_u)
            if th == 1.0 or self.written[(u, v)]:
                self.z[(v, u)] = tmap(lambda zz, yy: (1 - th) * zz + th * yy, self.z[(v, u)], into_v)
            self.written[(u, v)] = self.written[(v, u)] = False
            if self.recv is not None:
                self.recv[(u, v)] = tcopy(new_w[v])
                self.recv[(v, u)] = tcopy(new_w[u])
        self.w = new_w
        self.t += 1

    def params(self) -> list[Tree]:
        return self.w


# ------------------------------------------------------------------------- baselines
class _SGDNodes:
    def __init__(self, graph: Graph, lr: float, momentum: float | None = None):
        self.g = graph
        self.opt = NaiveSGD(lr, momentum)

    def init(self, w0: list[Tree]):
        self.w = [tcopy(w) for w in w0]
        self.m = [self.opt.init(w) for w in self.w]

    def local_steps(self, grads, node_mask) -> list[Tree]:
        """Local optimiser step on active nodes (inactive keep model and momentum)."""
        half = [tcopy(w) for w in self.w]
        for i in range(self.g.n):
            if node_mask[i]:
                half[i], self.m[i] = self.opt.update(self.w[i], grads[i], self.m[i])
        return half

    def params(self) -> list[Tree]:
        return self.w


def mh_weights(graph: Graph, edge_mask, node_mask) -> dict:
    """Metropolis-Hastings W_ij = 1/(1 + max(d_i, d_j)) on exchanging edges (full degrees)."""
    W = {}
    for (u, v) in graph.exchanging(edge_mask, node_mask):
        W[(u, v)] = W[(v, u)] = 1.0 / (1.0 + max(graph.deg[u], graph.deg[v]))
    return W


def mix(graph: Graph, x: list[Tree], W: dict) -> list[Tree]:
    """x_i + sum_j W_ij (x_j - x_i) = sum_j W_ij x_j with W_ii = 1 - sum_{j != i} W_ij."""
    out = []
    for i in range(graph.n):
        xi = tcopy(x[i])
        for j in graph.nbrs[i]:
            if (i, j) in W:
                xi = tmap(lambda a, b, c: a + W[(i, j)] * (b - c), xi, x[j], x[i])
        out.append(xi)
    return out


class NaiveGossip(_SGDNodes):
    """D-PSGD: local step, then MH mixing over the exchanging edges."""

    def step(self, grads, edge_mask, node_mask):
        node_mask, answer = split_mask(node_mask)
        half = self.local_steps(grads, node_mask)
        self.w = mix(self.g, half, mh_weights(self.g, edge_mask, answer))


class _NaiveReceived(_SGDNodes):
    """Baselines that combine with the last received neighbour models (stale copies)."""

    def init(self, w0):
        super().init(w0)
        self.recv = {(i, j): tcopy(w0[j]) for (i, j) in self.g.directed}

    def combine(self, i: int, w: Tree) -> Tree:
        raise NotImplementedError

    def step(self, grads, edge_mask, node_mask):
        node_mask, answer = split_mask(node_mask)
        half = self.local_steps(grads, node_mask)
        new = [self.combine(i, half[i]) if node_mask[i] else tcopy(self.w[i]) for i in range(self.g.n)]
        for (u, v) in self.g.exchanging(edge_mask, answer):
            self.recv[(u, v)] = tcopy(new[v])
            self.recv[(v, u)] = tcopy(new[u])
        self.w = new


class NaivePairwiseGossip(_NaiveReceived):
    """KDD20 code gossip: for each neighbour in increasing index order, w <- (w + w_j^recv)/2."""

    def combine(self, i, w):
        for j in self.g.nbrs[i]:
            w = tmap(lambda a, b: 0.5 * (a + b), w, self.recv[(i, j)])
        return w


class NaiveDSGD(_NaiveReceived):
    """ICML21 code DSGD: w <- (w + sum_j w_j^recv) / (|N(i)| + 1)."""

    def combine(self, i, w):
        total = tcopy(w)
        for j in self.g.nbrs[i]:
            total = tmap(np.add, total, self.recv[(i, j)])
        return tmap(lambda a: a / (self.g.deg[i] + 1), total)


class NaiveGradientTracking(_SGDNodes):
    """DSGT with time-varying MH weights W_t over the exchanging edges:

        y_t = W_{t-1} y_{t-1} + g_t - g_{t-1}   (y_0 = g_0: W_{-1} y_{-1} = g_{-1} = 0)
        w_{t+1} = W_t (w_t - lr y_t)

    State per node: q_i = (W_{t-1} y_{t-1})_i and the last gradient; an inactive node
    keeps both (so its y is q_i and it does not move).
    """

    def init(self, w0):
        super().init(w0)
        self.q = [tzeros(w) for w in self.w]
        self.gprev = [tzeros(w) for w in self.w]

    def step(self, grads, edge_mask, node_mask):
        node_mask, answer = split_mask(node_mask)
        y = []
        for i in range(self.g.n):
            y.append(tmap(lambda a, b, c: a + b - c, self.q[i], grads[i], self.gprev[i]) if node_mask[i] else tcopy(self.q[i]))
        half = self.local_steps(y, node_mask)
        W = mh_weights(self.g, edge_mask, answer)
        self.w = mix(self.g, half, W)
        self.q = mix(self.g, y, W)
        self.gprev = [tcopy(grads[i]) if node_mask[i] else self.gprev[i] for i in range(self.g.n)]


class NaiveLocal(_SGDNodes):
    """Every node trains alone."""

    def step(self, grads, edge_mask, node_mask):
        self.w = self.local_steps(grads, split_mask(node_mask)[0])


class NaiveCentralized:
    """One model (node 0's initial one) updated with the mean gradient of the active nodes."""

    def __init__(self, graph: Graph, lr: float, momentum: float | None = None):
        self.g = graph
        self.opt = NaiveSGD(lr, momentum)

    def init(self, w0):
        self.model = tcopy(w0[0])
        self.m = self.opt.init(self.model)

    def step(self, grads, edge_mask, node_mask):
        node_mask = split_mask(node_mask)[0]
        act = [i for i in range(self.g.n) if node_mask[i]]
        if not act:
            return
        mean = tmap(lambda *gs: sum(gs) / len(gs), *[grads[i] for i in act])
        self.model, self.m = self.opt.update(self.model, mean, self.m)

    def params(self):
        return [tcopy(self.model) for _ in range(self.g.n)]


def sgd_alone(w0: Tree, grad_fn: Callable[[Tree], Tree], lr: float, steps: int, momentum: float | None = None) -> list[Tree]:
    """One model trained alone with (momentum) SGD; the trajectory w_1..w_steps."""
    opt = NaiveSGD(lr, momentum)
    w, m, out = tcopy(w0), opt.init(w0), []
    for _ in range(steps):
        w, m = opt.update(w, grad_fn(w), m)
        out.append(w)
    return out


# =========================================================================== harness
# The only part of this module that touches ecl_jax: it builds, for a named case, the
# ecl_jax algorithm and its naive twin with the same hyperparameters, a test problem,
# masks, and views of both states in one canonical form. The naive classes above do not
# use it.

LR_ECL = 0.05
LR_SGD = 0.1


def lr_schedule(t):
    """A decaying step size; works on Python ints (naive) and traced int32 (ecl_jax)."""
    return 0.08 / (1.0 + 0.15 * t)


def _cases():
    import optax

    from ecl_jax.algorithms import (
        ECLConfig,
        centralized,
        dsgd,
        ecl,
        ecl_admm,
        ecl_isvr,
        ecl_pdmm,
        gossip,
        gradient_tracking,
        local_sgd,
        pairwise_gossip,
    )

    lr = LR_ECL
    return {
        # name: (ecl_jax builder, naive builder taking a Graph)
        "pdmm": (lambda: ecl_pdmm(lr, eta=1.0), lambda g: NaiveECL(g, lr, eta=1.0, theta=1.0)),
        "admm": (lambda: ecl_admm(lr, eta=1.0), lambda g: NaiveECL(g, lr, eta=1.0, theta=0.5)),
        "kdd_code": (
            lambda: ecl(ECLConfig(lr=lr, eta=1.0, rho=0.1, eta_rule="degree", fan_in_scaling=True, dual_smoothing=True)),
            lambda g: NaiveECL(g, lr, eta=1.0, rho=0.1, eta_rule="degree", fan_in_scaling=True, dual_smoothing=True),
        ),
        "pdmm_rho_schedule": (
            lambda: ecl_pdmm(lr_schedule, eta=1.0, rho=0.2, eta_follows_lr=True),
            lambda g: NaiveECL(g, lr_schedule, eta=1.0, rho=0.2, eta_follows_lr=True),
        ),
        "isvr_paper_pdmm": (
            lambda: ecl_isvr(lr, K=4, variant="pdmm", eta_rule="paper"),
            lambda g: NaiveECL(g, lr, eta_rule="isvr_paper", K=4, theta=1.0),
        ),
        "isvr_paper_admm": (
            lambda: ecl_isvr(lr, K=4, variant="admm", eta_rule="paper"),
            lambda g: NaiveECL(g, lr, eta_rule="isvr_paper", K=4, theta=0.5),
        ),
        "isvr_code_pdmm": (
            lambda: ecl_isvr(lr, K=4, variant="pdmm", eta_rule="code", gradient_coefficient=True),
            lambda g: NaiveECL(g, lr, eta_rule="isvr_code", K=4, c=1.0, gradient_coefficient=True),
        ),
        "isvr_code_admm_schedule": (
            lambda: ecl_isvr(lr_schedule, K=4, variant="admm", eta_rule="code", gradient_coefficient=True),
            lambda g: NaiveECL(
                g, lr_schedule, eta_rule="isvr_code", K=4, c=2.0, dual_smoothing=True, gradient_coefficient=True
            ),
        ),
        "gossip": (lambda: gossip(LR_SGD), lambda g: NaiveGossip(g, LR_SGD)),
        "pairwise_gossip": (lambda: pairwise_gossip(LR_SGD), lambda g: NaivePairwiseGossip(g, LR_SGD)),
        "dsgd": (lambda: dsgd(LR_SGD), lambda g: NaiveDSGD(g, LR_SGD)),
        "dsgd_momentum": (
            lambda: dsgd(optimizer=optax.sgd(LR_SGD, momentum=0.9)),
            lambda g: NaiveDSGD(g, LR_SGD, momentum=0.9),
        ),
        "gradient_tracking": (lambda: gradient_tracking(LR_SGD), lambda g: NaiveGradientTracking(g, LR_SGD)),
        "local": (lambda: local_sgd(LR_SGD), lambda g: NaiveLocal(g, LR_SGD)),
        "centralized": (lambda: centralized(LR_SGD), lambda g: NaiveCentralized(g, LR_SGD)),
    }


CASE_NAMES = (
    "pdmm",
    "admm",
    "kdd_code",
    "pdmm_rho_schedule",
    "isvr_paper_pdmm",
    "isvr_paper_admm",
    "isvr_code_pdmm",
    "isvr_code_admm_schedule",
    "gossip",
    "pairwise_gossip",
    "dsgd",
    "dsgd_momentum",
    "gradient_tracking",
    "local",
    "centralized",
)
ECL_CASES = CASE_NAMES[:8]
# Cases whose zbar starts at the weights (both official codes): not sign-convention free.
SMOOTHING_CASES = ("kdd_code", "isvr_code_admm_schedule")


def build(name: str, topology):
    """(ecl_jax Algorithm, naive twin) for case ``name`` on ``topology``."""
    make_alg, make_naive = _cases()[name]
    return make_alg(), make_naive(Graph(topology))


LEAF_SHAPES = {"kernel": (3, 2), "bias": (2,)}


class Problem:
    """Per-node smooth nonconvex-ish costs with gradient
    g_i(w) = a_i * (w - c_i) + 0.3 tanh(w) (+ a kernel/bias coupling), leafwise."""

    def __init__(self, n: int, seed: int, identical: bool = False):
        rng = np.random.default_rng(seed)
        rows = 1 if identical else n

        def draw(fn):
            return {k: np.repeat(fn(rows, s), n // rows, axis=0) for k, s in LEAF_SHAPES.items()}

        self.a = draw(lambda r, s: rng.uniform(0.5, 2.0, (r,) + s))
        self.c = draw(lambda r, s: rng.normal(0.0, 1.0, (r,) + s))
        self.w0 = draw(lambda r, s: rng.normal(0.0, 0.5, (r,) + s))
        self.n = n

    def grads(self, params: dict) -> dict:
        """Stacked gradients [N, ...] (float64) at stacked params."""
        p = {k: np.asarray(v, np.float64) for k, v in params.items()}
        g = {k: self.a[k] * (p[k] - self.c[k]) + 0.3 * np.tanh(p[k]) for k in p}
        g["bias"] = g["bias"] + 0.1 * np.sin(p["kernel"].sum(axis=1))
        return g

    def node_grads(self, nodes: list[Tree]) -> list[Tree]:
        return split_nodes(self.grads(stack_nodes(nodes)))

    def permuted(self, perm: np.ndarray) -> "Problem":
        """The same problem with node i renamed perm[i]."""
        out = object.__new__(Problem)
        inv = np.argsort(perm)
        out.a = {k: v[inv] for k, v in self.a.items()}
        out.c = {k: v[inv] for k, v in self.c.items()}
        out.w0 = {k: v[inv] for k, v in self.w0.items()}
        out.n = self.n
        return out


def random_masks(topology, steps: int, seed: int, p_edge: float = 0.5, p_node: float = 0.75):
    """Edge masks [T, E] and node masks [T, N] drawn in NumPy."""
    rng = np.random.default_rng(seed)
    return (
        rng.random((steps, topology.n_edges)) < p_edge,
        rng.random((steps, topology.n_nodes)) < p_node,
    )


def directed_duals(state):
    """``state`` with every :class:`~ecl_jax.duals.EdgeDuals` replaced by its directed values
    z_{i|j} in the topology's edge layout (recognised by type)."""
    return jax.tree_util.tree_map(lambda x: x.directed() if is_duals(x) else x, state, is_leaf=is_duals)


def jax_view(algorithm, state, topology, directed=None) -> dict:
    """Named parts of an ecl_jax state as float64 NumPy dicts; per-edge parts in canonical
    (src, dst) order via ``topology.to_directed``. ``directed``: the function that turns the
    state's pair-stored duals into the edge layout (default :func:`directed_duals`; pass a
    jitted one to view long trajectories fast)."""
    def nodes(tree):
        return {k: np.asarray(v, np.float64) for k, v in tree.items()}

    def edges(tree):
        return {k: np.asarray(topology.to_directed(v), np.float64) for k, v in tree.items()}

    state = directed_duals(state) if directed is None else directed(state)
    out = {"params": nodes(algorithm.node_params(state))}
    for field, kind in (
        ("duals", edges),
        ("smoothed_duals", edges),
        ("received", edges),
        ("mixed_tracker", nodes),
        ("prev_grads", nodes),
    ):
        value = getattr(state, field, None)
        if value is not None:
            out[field] = kind(value)
    return out


def naive_view(naive) -> dict:
    """The same named parts of a naive state."""
    g = naive.g
    out = {"params": stack_nodes(naive.params())}
    if isinstance(naive, NaiveECL):
        out["duals"] = g.stack_edges(naive.z)
        if naive.zbar is not None:
            out["smoothed_duals"] = g.stack_edges(naive.zbar)
        if naive.recv is not None:
            out["received"] = g.stack_edges(naive.recv)
    elif isinstance(naive, _NaiveReceived):
        out["received"] = g.stack_edges(naive.recv)
    elif isinstance(naive, NaiveGradientTracking):
        out["mixed_tracker"] = stack_nodes(naive.q)
        out["prev_grads"] = stack_nodes(naive.gprev)
    return out


def jitted_step(algorithm, topology):
    import jax

    return jax.jit(lambda s, g, e, n: algorithm.step(s, g, topology, e, n))


def as_jax_mask(node_mask):
    """A naive node mask as the library takes it: a bool array, or an ``Activity`` for a pair."""
    import jax.numpy as jnp

    from ecl_jax.masks import Activity

    if isinstance(node_mask, tuple):
        return Activity(jnp.asarray(node_mask[0]), jnp.asarray(node_mask[1]))
    return jnp.asarray(node_mask)


def run_jax(algorithm, topology, problem: Problem, edge_masks, node_masks, step_fn=None, callback=None,
            dtype=np.float32):
    """Drive ``algorithm`` with gradients computed in NumPy at its own params, models and
    gradients in ``dtype`` (float32; float64 needs ``jax_enable_x64``)."""
    import jax.numpy as jnp

    step_fn = step_fn or jitted_step(algorithm, topology)
    state = algorithm.init({k: jnp.asarray(v, dtype) for k, v in problem.w0.items()}, topology)
    for t in range(len(edge_masks)):
        params = {k: np.asarray(v) for k, v in algorithm.node_params(state).items()}
        grads = {k: jnp.asarray(v, dtype) for k, v in problem.grads(params).items()}
        state = step_fn(state, grads, jnp.asarray(edge_masks[t]), as_jax_mask(node_masks[t]))
        if callback is not None:
            callback(t, state)
    return state


def run_naive(naive, problem: Problem, edge_masks, node_masks, callback=None):
    naive.init(split_nodes(problem.w0))
    for t in range(len(edge_masks)):
        naive.step(problem.node_grads(naive.params()), edge_masks[t], node_masks[t])
        if callback is not None:
            callback(t, naive)
    return naive
