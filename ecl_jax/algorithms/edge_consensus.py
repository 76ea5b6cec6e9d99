"""Edge-consensus learning: linearised PDMM / ADMM and ECL-ISVR on node-stacked pytrees.

One core (docs/algorithms.md#linearised-pdmm-step): for node i, with mu = 1/lr,

    w_i <- ( mu w_i - gcoef_i g_i + s eta_i sum_j A_{i|j} zbar_{i|j} + s rho_i sum_j w_j^recv )
           / ( mu + s |N(i)| (eta_i + rho_i) )                                   (primal)
    y_{i|j} = z_{i|j} - 2 A_{i|j} w_i                                            (reflection)
    z_{i|j} <- (1 - theta) z_{i|j} + theta y_{j|i}     on active edges only       (exchange)

theta = 1 is PDMM (Peaceman-Rachford), theta = 1/2 ADMM (Douglas-Rachford). The duals
of each undirected edge {a, b} are stored as u = z_{a|b} + z_{b|a}, v = z_{a|b} - z_{b|a}
(:class:`ecl_jax.duals.EdgeDuals`), where the exchange is elementwise and updates in place:

    u <- u + 2 theta A_{a|b} (w_b - w_a),   v <- (1 - 2 theta) v + 2 theta A_{a|b} (w_a + w_b)

The step below is these equations in order: coefficients, zbar, the primal of every node
(:func:`~ecl_jax.algorithms.base.for_each_node`, one node's update written for one node),
the exchange on the edges whose two ends are active, the received models.

The variants differ only in static settings:

* ``eta_rule``: "constant" (eta_i = eta, the paper), "degree" (eta_i = eta/|N(i)|,
  rho_i = rho/|N(i)|, the KDD20 code), "isvr_paper" (eta_i = 1/(lr |N(i)| (K-1)),
  ICML21 poster) or "isvr_code" (eta_i = c/(lr (K|N(i)| + K - c|N(i)|)), ICML21 code);
* ``fan_in_scaling``: s = sqrt(fan_in) per parameter leaf (KDD20 code), else s = 1;
* ``dual_smoothing``: the codes' "ADMM": zbar <- (zbar + z)/2 every local step,
  zbar starting at the weights; y is still built from the raw z. Off: zbar = z;
* ``gradient_coefficient``: gcoef_i = 1 - lr eta_i |N(i)| (K/c - 1) (ICML21 code
  option), else 1;
* ``eta_follows_lr``: with an lr schedule, eta scales with mu = 1/lr so eta/mu stays
  constant; rho does not (KDD20 code, ``PdmmSGD.update``: eta = mu * eta_rate, rho fixed).

Node-dependent eta_i moves the fixed point to argmin sum_i f_i/eta_i on irregular
graphs; on regular graphs it is argmin sum_i f_i (docs/algorithms.md#fixed-point-and-consensus).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax import graph_ops as gops
from ecl_jax.algorithms.base import Algorithm, check_node_stacked, constant_dtype, for_each_node
from ecl_jax.communication import Messages
from ecl_jax.duals import EdgeDuals
from ecl_jax.topology import Topology
from ecl_jax.validation import is_array_value, is_int

__all__ = [
    "ECLConfig",
    "ECLState",
    "ecl",
    "ecl_pdmm",
    "ecl_admm",
    "ecl_isvr",
    "fan_in_scales",
    "node_eta",
    "step_coefficients",
    "LeafCoefficients",
]

ETA_RULES = ("constant", "degree", "isvr_paper", "isvr_code")


def _is_real(x) -> bool:
    """A real number (Python or NumPy scalar), not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))
LearningRate = float | Callable[[jax.Array], jax.Array]


class ECLState(NamedTuple):
    """State of every ECL variant.

    params: node models w [N, ...]; duals: z_{i|j} as :class:`~ecl_jax.duals.EdgeDuals`
    (pair-stored; ``duals.directed()`` gives them per directed edge); smoothed_duals: zbar_{i|j}
    in the topology's edge layout (only with ``dual_smoothing``, else None; a node keeps its
    own exactly while inactive);
    received: the last neighbour models w_j^recv in the topology's edge layout (only with
    rho > 0, else None); count: step counter.
    """

    params: Any
    duals: EdgeDuals
    smoothed_duals: Any
    received: Any
    count: jax.Array


@dataclasses.dataclass(frozen=True)
class ECLConfig:
    """Static hyperparameters of the ECL family (validated at construction).

    lr: step size 1/mu (float, or a schedule ``step -> lr`` such as an optax schedule).
    eta: constraint penalty (ignored by the ISVR rules, which compute eta_i).
    theta: dual relaxation in (0, 1]; 1 = PDMM, 1/2 = ADMM.
    rho: proximity to the last received neighbour models (KDD20), >= 0.
    K: local steps per round (ISVR rules); c: the ICML21 code's ``piw``.
    """

    lr: LearningRate
    eta: float = 1.0
    theta: float = 1.0
    rho: float = 0.0
    eta_rule: str = "constant"
    K: int | None = None
    c: float = 1.0
    fan_in_scaling: bool = False
    dual_smoothing: bool = False
    gradient_coefficient: bool = False
    eta_follows_lr: bool = False
    name: str = "ecl"

    def __post_init__(self):  # a JAX array (a swept value, ecl_jax.algorithms.hyperparams) was checked as a number
        given = lambda v: not is_array_value(v)
        if not callable(self.lr) and given(self.lr):
            if not (_is_real(self.lr) and math.isfinite(self.lr) and self.lr > 0):
                raise ValueError(f"lr (= 1/mu) must be a positive finite number or a schedule, got {self.lr!r}")
        if given(self.eta) and not (_is_real(self.eta) and self.eta > 0 and math.isfinite(self.eta)):
            raise ValueError(f"eta must be a positive finite number, got {self.eta!r}")
        if given(self.theta) and not (_is_real(self.theta) and 0 < self.theta <= 1):
            raise ValueError(f"theta must be in (0, 1] (1 = PDMM, 0.5 = ADMM), got {self.theta!r}")
        if given(self.rho) and not (_is_real(self.rho) and self.rho >= 0):
            raise ValueError(f"rho must be >= 0, got {self.rho!r}")
        if self.eta_rule not in ETA_RULES:
            raise ValueError(f"eta_rule must be one of {ETA_RULES}, got {self.eta_rule!r}")
        if self.eta_rule.startswith("isvr"):
            min_k = 2 if self.eta_rule == "isvr_paper" else 1
            if not is_int(self.K) or self.K < min_k:
                raise ValueError(f"eta_rule={self.eta_rule!r} needs an integer K >= {min_k} (local steps per round), got K={self.K!r}")
        if self.gradient_coefficient and self.eta_rule != "isvr_code":
            raise ValueError(
                f"gradient_coefficient=True is only defined for eta_rule='isvr_code', got eta_rule={self.eta_rule!r}"
            )
        if given(self.c) and not (_is_real(self.c) and self.c > 0):
            raise ValueError(f"c must be > 0, got {self.c!r}")

    def lr_at(self, count: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
        """The step size at step ``count`` as a ``dtype`` scalar (the step passes the
        params' :func:`~ecl_jax.algorithms.base.constant_dtype`: float64 in a float64 run).
        A schedule's value is cast, so it is only as precise as the schedule returns it."""
        return jnp.asarray(self.lr(count) if callable(self.lr) else self.lr, dtype)


def node_eta(
    config: ECLConfig, topology: Topology, lr: jax.Array, dtype: Any = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-node (eta_i, rho_i, gcoef_i) [N] for the current step size ``lr``, computed in
    ``dtype`` (default: ``lr``'s dtype, float32 for a Python number)."""
    if dtype is None:
        dtype = lr.dtype if hasattr(lr, "dtype") else jnp.float32
    lr = jnp.asarray(lr, dtype)
    deg = jnp.asarray(topology.degree, dtype)
    rho = jnp.full_like(deg, config.rho)
    gcoef = jnp.ones_like(deg)
    if config.eta_rule == "constant":
        eta = jnp.full_like(deg, config.eta)
    elif config.eta_rule == "degree":
        eta, rho = config.eta / deg, config.rho / deg
    elif config.eta_rule == "isvr_paper":
        eta = 1.0 / (lr * deg * (config.K - 1))
    else:  # isvr_code
        K, c = config.K, config.c
        eta = c / (lr * (K * deg + K - c * deg))
        if config.gradient_coefficient:
            gcoef = 1.0 - lr * eta * deg * (K / c - 1.0)
    if config.eta_follows_lr and not config.eta_rule.startswith("isvr"):
        # KDD20 code: eta = mu * (eta / mu_0) every step; rho stays fixed.
        eta = eta * (config.lr_at(jnp.zeros((), jnp.int32), dtype) / lr)
    return eta, rho, gcoef


class LeafCoefficients(NamedTuple):
    """One parameter leaf's step constants, each [N] in the leaf's dtype: mu = 1/lr, s eta_i,
    s rho_i (s: the leaf's sqrt(fan_in) with ``fan_in_scaling``, else 1), gcoef_i, |N(i)|."""

    mu: jax.Array
    s_eta: jax.Array
    s_rho: jax.Array
    gcoef: jax.Array
    degree: jax.Array


def step_coefficients(config: ECLConfig, topology: Topology, count: jax.Array, params: Any) -> Any:
    """A tree shaped like ``params`` holding each leaf's :class:`LeafCoefficients` at step
    ``count``. The constants are computed in the leaf's constant dtype (float64 for a float64
    leaf, float32 otherwise; :func:`~ecl_jax.algorithms.base.constant_dtype`), once per dtype,
    then rounded to the leaf's dtype; s eta_i and s rho_i are formed in the leaf's dtype."""
    per_dtype = {}

    def constants(dt):
        if dt not in per_dtype:
            lr = config.lr_at(count, dt)
            eta, rho, gcoef = node_eta(config, topology, lr)
            per_dtype[dt] = (jnp.full_like(eta, 1.0 / lr), eta, rho, gcoef, jnp.asarray(topology.degree, dt))
        return per_dtype[dt]

    scales = fan_in_scales(params) if config.fan_in_scaling else None

    def leaf(w, s=1.0):
        mu, eta, rho, gcoef, deg = (v.astype(w.dtype) for v in constants(constant_dtype(w.dtype)))
        return LeafCoefficients(mu, (s * eta).astype(w.dtype), (s * rho).astype(w.dtype), gcoef, deg)

    return jax.tree_util.tree_map(leaf, params, *(() if scales is None else (scales,)))


def fan_in_scales(params: Any, node_axis: bool = True) -> Any:
    """sqrt(fan_in) per parameter leaf, as the KDD20 code's "vs_metric".

    fan_in of a weight with >= 2 dims is the product of all dims but the output
    (last, Flax convention) one; a 1-D weight (GroupNorm ``scale``) uses its length;
    a ``bias`` uses the fan_in of its layer's ``kernel`` (or ``scale``).
    """
    skip = 1 if node_axis else 0

    def own_fan_in(shape):
        shape = shape[skip:]
        if len(shape) == 0:
            return 1
        if len(shape) == 1:
            return shape[0]
        return int(np.prod(shape[:-1]))

    def visit(tree):
        if isinstance(tree, dict) or hasattr(tree, "items"):
            out = {k: visit(v) for k, v in tree.items()}
            ref = None
            for key in ("kernel", "scale", "embedding"):
                if key in tree and not hasattr(tree[key], "items"):
                    ref = own_fan_in(jnp.shape(tree[key]))
                    break
            if "bias" in tree and not hasattr(tree["bias"], "items"):
                out["bias"] = math.sqrt(ref if ref is not None else own_fan_in(jnp.shape(tree["bias"])))
            return type(tree)(out) if not isinstance(tree, dict) else out
        return jax.tree_util.tree_map(lambda x: math.sqrt(own_fan_in(jnp.shape(x))), tree)

    return visit(params)


def ecl(config: ECLConfig) -> Algorithm:
    """The ECL algorithm for ``config``: the equations of the module docstring, step by step.
    Per-node reading of the same step: ``tests/naive_reference.py`` (``NaiveECL.step``)."""
    theta = config.theta if is_array_value(config.theta) else float(config.theta)
    use_rho = is_array_value(config.rho) or config.rho > 0  # a swept rho: every value > 0 (hyperparams.check_sweep)
    smoothing = config.dual_smoothing

    def init(params, topology: Topology) -> ECLState:
        check_node_stacked(params, topology)
        duals = EdgeDuals.zeros(topology, params)
        zbar0 = gops.tree_broadcast_to_edges(topology, params) if smoothing else None  # zbar_{i|j} = w_i
        received = gops.tree_neighbor_values(topology, params) if use_rho else None
        return ECLState(params, duals, zbar0, received, jnp.zeros((), jnp.int32))

    def step(state: ECLState, grads, topology: Topology, edge_active, node_active) -> ECLState:
        coef = step_coefficients(config, topology, state.count, state.params)  # per leaf: mu, s eta_i, s rho_i, gcoef_i, |N(i)|
        # zbar <- (zbar + z)/2 (the codes' dual smoothing, on directed values), else zbar = z
        zbar = (jax.tree_util.tree_map(lambda a, b: (a + b) / 2, state.smoothed_duals, state.duals.directed())
                if smoothing else None)
        dual_sum = (lambda: gops.tree_sum_edges(topology, zbar, topology.edge_array("sign"))) if smoothing else state.duals.signed_sum
        recv = gops.tree_sum_edges(topology, state.received) if use_rho else None  # sum_j w_j^recv

        def primal(w, g, a, c, r):  # node i; a = sum_j A_{i|j} zbar_{i|j}, r = sum_j w_j^recv (None without rho)
            def leaf(w, g, a, c, r=None):  # w_i <- (mu w_i - gcoef_i g_i + s eta_i a + s rho_i r) / (mu + s |N(i)| (eta_i + rho_i))
                num = w * c.mu - c.gcoef * g + c.s_eta * a + (0.0 if r is None else c.s_rho * r)
                return num / (c.mu + c.degree * (c.s_eta + c.s_rho))
            return jax.tree_util.tree_map(leaf, w, g, a, c, *(() if r is None else (r,)))

        new_w = for_each_node(primal, state.params, grads, dual_sum, coef, recv,
                              node_active=node_active, keep=state.params)
        exchanging = gops.exchanging_edges(topology, edge_active, node_active)
        new_z = state.duals.exchange(new_w, exchanging, theta, node_active)  # z_{i|j} <- (1-theta) z_{i|j} + theta (z_{j|i} - 2 A_{j|i} w_j)
        new_zbar = gops.keep_inactive_edges(topology, zbar, state.smoothed_duals, node_active) if smoothing else None
        new_recv = gops.refresh_received(topology, state.received, new_w, exchanging) if use_rho else None  # w_j^recv <- w_j
        return ECLState(new_w, new_z, new_zbar, new_recv, state.count + 1)

    # one message per exchange and direction: the dual y_{i|j} (shaped like the model), and the
    # model itself with rho > 0 (w_j^recv); a direction sends only with news (EdgeDuals.exchange)
    sent = (lambda w: (w, w)) if use_rho else (lambda w: w)
    return Algorithm(config.name, init, step, lambda s: s.params, config, Messages(sent, one_way=True))


def ecl_pdmm(lr: LearningRate, eta: float = 1.0, **kwargs) -> Algorithm:
    """ECL-PDMM ("PDMM-SGD", KDD20): theta = 1. ``kwargs`` go to :class:`ECLConfig`
    (``theta`` is fixed to 1 here: use :func:`ecl_admm` or :func:`ecl` for others)."""
    if "theta" in kwargs and kwargs["theta"] != 1.0:
        raise ValueError(
            f"ecl_pdmm fixes theta = 1 (Peaceman-Rachford), got theta={kwargs['theta']!r}; "
            "use ecl_admm (theta = 1/2) or ecl(ECLConfig(theta=...)) for another relaxation"
        )
    kwargs.pop("theta", None)
    kwargs.setdefault("name", "ecl-pdmm")
    return ecl(ECLConfig(lr=lr, eta=eta, theta=1.0, **kwargs))


def ecl_admm(lr: LearningRate, eta: float = 1.0, **kwargs) -> Algorithm:
    """ECL-ADMM ("ADMM-SGD", KDD20): theta = 1/2 (Douglas-Rachford, paper form).

    ``dual_smoothing=True`` with ``theta=1.0`` gives the KDD20 code's ADMM instead.
    """
    kwargs.setdefault("name", "ecl-admm")
    kwargs.setdefault("theta", 0.5)
    return ecl(ECLConfig(lr=lr, eta=eta, **kwargs))


def ecl_isvr(
    lr: LearningRate,
    K: int,
    *,
    variant: str = "pdmm",
    eta_rule: str = "paper",
    gradient_coefficient: bool = False,
    **kwargs,
) -> Algorithm:
    """ECL-ISVR (ICML21): PDMM-ISVR (``variant="pdmm"``) or ADMM-ISVR (``"admm"``).

    ``eta_rule="paper"``: eta_i = 1/(lr |N(i)| (K-1)); ADMM-ISVR then averages the dual
    once per exchange (theta = 1/2), as on the poster.
    ``eta_rule="code"``: eta_i = c/(lr (K|N(i)| + K - c|N(i)|)), c = 1 (PDMM) or 2
    (ADMM, with the code's per-step dual smoothing and theta = 1); optional
    gradient coefficient. Pass ``c=1`` for ADMM to get what the shipped script ran.
    rho = 0 and no per-leaf scaling, as in both.
    """
    if variant not in ("pdmm", "admm"):
        raise ValueError(f"variant must be 'pdmm' or 'admm', got {variant!r}")
    if eta_rule not in ("paper", "code"):
        raise ValueError(f"eta_rule must be 'paper' or 'code', got {eta_rule!r}")
    kwargs.setdefault("name", f"{variant}-isvr")
    if eta_rule == "paper":
        kwargs.setdefault("theta", 1.0 if variant == "pdmm" else 0.5)
        return ecl(ECLConfig(lr=lr, K=K, eta_rule="isvr_paper", gradient_coefficient=gradient_coefficient, **kwargs))
    kwargs.setdefault("c", 1.0 if variant == "pdmm" else 2.0)
    kwargs.setdefault("dual_smoothing", variant == "admm")
    kwargs.setdefault("theta", 1.0)
    return ecl(
        ECLConfig(lr=lr, K=K, eta_rule="isvr_code", gradient_coefficient=gradient_coefficient, **kwargs)
    )
