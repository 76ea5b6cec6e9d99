"""Names a config can use: topologies and algorithms, each algorithm with its own options.

``build_topology(config)`` and ``build_algorithm(name, config)`` turn a
:class:`~ecl_jax.config.RunConfig` into objects; :data:`ALGORITHMS` says, per algorithm,
which per-algorithm options (``--set ALGO.OPTION=value``) it takes and of what type, so
an option that an algorithm would ignore is refused instead of dropped.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import numpy as np

from ecl_jax import algorithms as algs
from ecl_jax import topology as topo_mod
from ecl_jax.errors import ConfigError
from ecl_jax.validation import is_array_value

__all__ = [
    "TOPOLOGY_NAMES",
    "ALGORITHMS",
    "ALGORITHM_NAMES",
    "ALGORITHM_ALIASES",
    "AlgorithmSpec",
    "build_topology",
    "graph_schedule",
    "CHANGING_GRAPHS",
    "build_algorithm",
    "check_options",
]

TOPOLOGY_NAMES = (
    "ring", "multiplex_ring", "torus", "complete", "star", "erdos_renyi",
    "random_regular", "exponential", "icml21_random", "one_peer_exponential", "random_matching", "sequence",
)
CHANGING_GRAPHS = ("one_peer_exponential", "random_matching", "sequence")
"""Topologies that change from step to step, each run on its union graph with
:func:`graph_schedule` saying which union edges exist (docs/algorithms.md#graphs-that-change)."""


def build_topology(config) -> topo_mod.Topology:
    """The communication graph named by ``config.topology``, its per-edge state in
    ``config.layout`` (:mod:`ecl_jax.layouts`; "auto" = the fastest correct one)."""
    n, name, lay = config.n_nodes, config.topology, getattr(config, "layout", "auto")
    try:
        if name == "ring":
            return topo_mod.ring(n, layout=lay)
        if name == "multiplex_ring":
            return topo_mod.multiplex_ring(n, config.hops, layout=lay)
        if name == "torus":
            rows = int(math.isqrt(n))
            while n % rows:
                rows -= 1
            if rows < 2:
                raise ConfigError(f"torus needs n_nodes = rows * cols with rows, cols >= 2; {n} is prime")
            return topo_mod.torus(rows, n // rows, layout=lay)
        if name == "complete":
            return topo_mod.complete(n, layout=lay)
        if name == "star":
            return topo_mod.star(n, layout=lay)
        if name == "erdos_renyi":
            return topo_mod.erdos_renyi(n, config.edge_prob, seed=config.seed, layout=lay)
        if name == "random_regular":
            return topo_mod.random_regular(n, config.degree, seed=config.seed, layout=lay)
        if name == "exponential":
            return topo_mod.exponential(n, layout=lay)
        if name in ("one_peer_exponential", "random_matching"):  # the union; graph_schedule: the step's edges
            union = topo_mod.exponential(n) if name == "one_peer_exponential" else topo_mod.complete(n)
            return topo_mod.from_edges(n, union.edges, name=f"{name}{n}", layout=lay)
        if name == "sequence":  # the union of the user's graphs (graph_schedule: which exist per step)
            union = sorted({tuple(sorted(map(int, e))) for graph in config.graphs for e in graph})
            try:
                return topo_mod.from_edges(n, union, name=f"sequence{len(config.graphs)}x{n}", layout=lay)
            except (ValueError, TypeError) as err:
                raise ConfigError(f"topology=sequence: the union of the {len(config.graphs)} graphs must connect "
                                  f"all {n} nodes ({err})") from None
        if name == "icml21_random":
            if n != 8:
                raise ConfigError(f"topology icml21_random has 8 nodes; set n_nodes=8 (got {n})")
            return topo_mod.icml21_random(layout=lay)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"topology {name!r} with n_nodes={n}: {err}") from None
    raise ConfigError(f"unknown topology {name!r}; valid: {', '.join(TOPOLOGY_NAMES)}")


def graph_schedule(config):
    """For a topology that changes (:data:`CHANGING_GRAPHS`), the schedule of which union
    edges exist at each step (:mod:`ecl_jax.masks`); None for a fixed graph."""
    from ecl_jax import masks

    if config.topology == "one_peer_exponential":
        return masks.OnePeerExponential()
    if config.topology == "random_matching":
        return masks.RandomMatching()
    if config.topology == "sequence":  # row t: the edges of graph t, over the union's sorted edges
        union = build_topology(config)
        index = {tuple(e): k for k, e in enumerate(union.edges.tolist())}
        table = np.zeros((len(config.graphs), union.n_edges), bool)
        for t, graph in enumerate(config.graphs):
            table[t, [index[tuple(sorted(map(int, e)))] for e in graph]] = True
        return masks.ArrayEdges(table)
    return None


# --------------------------------------------------------------------------
# Algorithms
# --------------------------------------------------------------------------

_ECL_OPTIONS = {
    "lr": float, "eta": float, "theta": float, "rho": float, "eta_rule": str, "K": int, "c": float,
    "fan_in_scaling": bool, "dual_smoothing": bool, "gradient_coefficient": bool, "eta_follows_lr": bool,
}
_ISVR_OPTIONS = {
    "lr": float, "K": int, "isvr_rule": str, "c": float, "theta": float,
    "dual_smoothing": bool, "gradient_coefficient": bool, "eta_follows_lr": bool,
}
_SGD_OPTIONS = {"lr": float, "momentum": float}
_MIXING_OPTIONS = {**_SGD_OPTIONS, "mixing": str}  # gossip, gradient tracking: MH weights of the graph or the step


class AlgorithmSpec(NamedTuple):
    """How a run builds one algorithm: ``build(lr, **options)`` and the options it takes."""

    build: Callable[..., algs.Algorithm]
    options: dict
    doc: str


def _sgd(builder):
    def build(lr, momentum=None, name=None, **mixing):
        import optax

        swept = is_array_value(momentum)  # a swept momentum: every value > 0 (hyperparams.check_sweep)
        if momentum is not None and not swept and not (0 <= momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        tx = optax.sgd(lr, momentum=momentum) if swept or momentum else optax.sgd(lr)
        return builder(lr, optimizer=tx, **mixing)

    return build


def _isvr(variant):
    def build(lr, K, isvr_rule="paper", name=None, **opts):
        return algs.ecl_isvr(lr=lr, K=K, variant=variant, eta_rule=isvr_rule, **opts)

    return build


def _isvr_shipped(lr, K, name=None, **opts):
    """What the ICML21 script run_AdmmISVR.sh ran: ``--piw`` left at 1, so no running-mean dual
    and c = 1: the PDMM-ISVR update with the code's eta rule (docs/official_codes.md, I4)."""
    for key, want in (("isvr_rule", "code"), ("c", 1.0), ("dual_smoothing", False), ("theta", 1.0)):
        if key in opts and opts[key] != want:
            raise ValueError(f"admm-isvr-shipped is fixed to {key}={want!r} (the shipped script's setting), got "
                             f"{opts[key]!r}; use admm-isvr or pdmm-isvr with isvr_rule=code for other settings")
        opts.pop(key, None)
    return algs.ecl_isvr(lr=lr, K=K, variant="pdmm", eta_rule="code", c=1.0, dual_smoothing=False, theta=1.0,
                         name="admm-isvr-shipped", **opts)


ALGORITHMS: dict[str, AlgorithmSpec] = {
    "ecl-pdmm": AlgorithmSpec(algs.ecl_pdmm, _ECL_OPTIONS, "ECL-PDMM (KDD20), theta = 1"),
    "ecl-admm": AlgorithmSpec(algs.ecl_admm, _ECL_OPTIONS, "ECL-ADMM (KDD20), theta = 1/2"),
    "pdmm-sgd": AlgorithmSpec(algs.ecl_pdmm, _ECL_OPTIONS, "ICML21's name for ECL-PDMM"),
    "admm-sgd": AlgorithmSpec(algs.ecl_admm, _ECL_OPTIONS, "ICML21's name for ECL-ADMM"),
    "pdmm-isvr": AlgorithmSpec(_isvr("pdmm"), _ISVR_OPTIONS, "ECL-ISVR, PDMM form (ICML21)"),
    "admm-isvr": AlgorithmSpec(_isvr("admm"), _ISVR_OPTIONS, "ECL-ISVR, ADMM form (ICML21)"),
    "admm-isvr-shipped": AlgorithmSpec(_isvr_shipped, _ISVR_OPTIONS,
                                       "the ICML21 script's ADMM-ISVR as shipped (= PDMM-ISVR, code eta, c = 1)"),
    "gossip": AlgorithmSpec(_sgd(algs.gossip), _MIXING_OPTIONS, "gossip SGD / D-PSGD, Metropolis-Hastings weights"),
    "pairwise-gossip": AlgorithmSpec(_sgd(algs.pairwise_gossip), _SGD_OPTIONS, "pairwise gossip averaging"),
    "dsgd": AlgorithmSpec(_sgd(algs.dsgd), _SGD_OPTIONS, "the ICML21 code's DSGD"),
    "gradient-tracking": AlgorithmSpec(_sgd(algs.gradient_tracking), _MIXING_OPTIONS, "gradient tracking"),
    "local": AlgorithmSpec(_sgd(algs.local_sgd), _SGD_OPTIONS, "local SGD, no communication"),
    "centralized": AlgorithmSpec(_sgd(algs.centralized), _SGD_OPTIONS, "one model on all data (reference)"),
}
ALGORITHM_NAMES = tuple(ALGORITHMS)
ALGORITHM_ALIASES = {"pdmm-sgd": "ecl-pdmm", "admm-sgd": "ecl-admm"}
"""ICML21's "PDMM-SGD" / "ADMM-SGD" are the KDD20 updates under their own name, so both
can run side by side with their own options."""

ALL_OPTIONS: dict[str, type] = {k: v for spec in ALGORITHMS.values() for k, v in spec.options.items()}
"""Every per-algorithm option name with its type (the union over :data:`ALGORITHMS`)."""


def _closest(word: str, choices) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_options(config) -> None:
    """Every ``options[ALGO][OPTION]`` names a known algorithm and an option it takes.

    Options of an algorithm that the run does not include are allowed in a config (an
    experiment file keeps the options of all its algorithms, a run may pick a few);
    :func:`ecl_jax.config.apply_overrides` refuses them on the command line. Raises
    ConfigError naming the algorithm/option and listing what is valid.
    """
    for algo, opts in config.options.items():
        if algo not in ALGORITHMS:
            raise ConfigError(
                f"options for unknown algorithm {algo!r}{_closest(algo, ALGORITHMS)}; valid: {', '.join(ALGORITHMS)}"
            )
        valid = ALGORITHMS[algo].options
        for k, v in opts.items():
            if k not in valid:
                raise ConfigError(
                    f"{algo} has no option {k!r}{_closest(k, valid)}; {algo} takes: {', '.join(sorted(valid))}"
                )
            want = valid[k]
            ok = (isinstance(v, bool) if want is bool else
                  isinstance(v, str) if want is str else
                  isinstance(v, int) and not isinstance(v, bool) if want is int else
                  isinstance(v, (int, float)) and not isinstance(v, bool))
            if not ok:
                raise ConfigError(f"{algo}.{k} must be of type {want.__name__}, got {v!r}")
            if k == "lr" and not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{algo}.lr must be a positive finite number, got {v!r}")


def build_algorithm(name: str, config, values: dict | None = None) -> algs.Algorithm:
    """An algorithm by name with the config's hyperparameters and ``options[name]``;
    an invalid hyperparameter becomes a :class:`ConfigError` naming the algorithm.
    ``values``: {option: value} of one point of a sweep, replacing the config's (a value
    may be a traced JAX scalar, checked as a number before: docs/design.md#sweeps)."""
    if name not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {name!r}{_closest(name, ALGORITHMS)}; valid: {', '.join(ALGORITHM_NAMES)}")
    spec = ALGORITHMS[name]
    opts = dict(config.options.get(name, {}))
    bad = sorted(set(opts) - set(spec.options))
    if bad:
        raise ConfigError(f"options {bad} do not apply to {name}; it takes {', '.join(sorted(spec.options))}")
    values = dict(values or {})
    if "eta" in spec.options:
        opts.setdefault("eta", config.eta)
    if "mixing" in spec.options and config.topology in CHANGING_GRAPHS:
        opts.setdefault("mixing", "step")  # MH weights of the step's graph, W_t = MH(G_t)
    lr = values.pop("lr", opts.pop("lr", config.lr))
    opts.update(values)
    if not is_array_value(lr) and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"{name}: lr must be a positive finite number, got {lr!r}")
    if config.lr_decay != 1.0 and config.lr_decay_every > 0:
        # Step decay lr * decay^floor(step / every) (KDD20 CIFAR: x0.95 every 10 epochs).
        import optax

        lr = optax.exponential_decay(lr, config.lr_decay_every, config.lr_decay, staircase=True)
    if "K" in spec.options and name in ("pdmm-isvr", "admm-isvr", "admm-isvr-shipped"):
        opts.setdefault("K", config.K)
    if "K" in opts and "eta_rule" in spec.options and not str(opts.get("eta_rule", "constant")).startswith("isvr"):
        raise ConfigError(f"{name}.K is used only with eta_rule='isvr_paper' or 'isvr_code' "
                          f"(eta_rule is {opts.get('eta_rule', 'constant')!r}); drop it or set the eta rule")
    try:
        if spec.build in (algs.ecl_pdmm, algs.ecl_admm):
            return spec.build(lr=lr, name=name, **opts)
        return spec.build(lr, **opts)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{name}: {err}") from None


def algorithm_settings(algorithm: algs.Algorithm) -> dict:
    """A printable summary of an algorithm's static hyperparameters."""
    cfg = algorithm.config
    if cfg is None:
        return {}
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = v if isinstance(v, (int, float, str, bool, type(None))) else type(v).__name__
    return out
