"""Decentralised training rules as ``init``/``step`` pairs (see :mod:`ecl_jax.algorithms.base`)."""

from ecl_jax.algorithms.base import Algorithm, for_each_node, keep_inactive, materialized
from ecl_jax.algorithms.baselines import (
    centralized,
    dsgd,
    gossip,
    gradient_tracking,
    local_sgd,
    metropolis_hastings,
    pairwise_gossip,
)
from ecl_jax.algorithms.hyperparams import HyperState, check_sweep, inject_hyperparams, set_hyperparams
from ecl_jax.algorithms.edge_consensus import (
    ECLConfig,
    ECLState,
    ecl,
    ecl_admm,
    ecl_isvr,
    ecl_pdmm,
    fan_in_scales,
    node_eta,
    step_coefficients,
)

__all__ = [
    "Algorithm",
    "keep_inactive",
    "for_each_node",
    "materialized",
    "ECLConfig",
    "ECLState",
    "ecl",
    "ecl_pdmm",
    "ecl_admm",
    "ecl_isvr",
    "fan_in_scales",
    "node_eta",
    "step_coefficients",
    "gossip",
    "pairwise_gossip",
    "dsgd",
    "gradient_tracking",
    "local_sgd",
    "centralized",
    "metropolis_hastings",
    "HyperState",
    "inject_hyperparams",
    "set_hyperparams",
    "check_sweep",
]
