"""ecl_jax: edge-consensus learning (ECL-PDMM/ADMM/ISVR) and decentralised baselines in JAX.

All nodes live on a leading array axis; asynchrony is a per-step random mask over the
graph's edges (and nodes); a whole run is one compiled ``lax.scan``.
"""

# before anything can start JAX's backend: XLA reads XLA_FLAGS once (docs/performance.md)
from ecl_jax import tuning

tuning.apply_xla_flags()

import importlib

# The public names, imported on first use (PEP 562), so that ``import ecl_jax`` (and the
# command line, which re-executes itself with tcmalloc and installs its Ctrl-C handler
# first) does not pay for JAX until something needs it.
_SUBMODULES = ("algorithms", "graph_ops", "masks", "topology")
_NAMES = {
    "ecl_jax.algorithms": ("Algorithm", "centralized", "dsgd", "ecl", "ecl_admm", "ecl_isvr", "ecl_pdmm", "gossip",
                           "gradient_tracking", "local_sgd", "pairwise_gossip"),
    "ecl_jax.engine": ("Carry", "Engine"),
    "ecl_jax.execution": ("ExecutionPlan",),
    "ecl_jax.metrics": ("consensus_distance", "mean_params"),
    "ecl_jax.participation": ("Participation", "step_keys"),
    "ecl_jax.node_data": ("NodeData", "stack_node_data"),
    "ecl_jax.topology": ("Topology", "TopologyError"),
}
_HOME = {name: module for module, names in _NAMES.items() for name in names}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"ecl_jax.{name}")
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ecl_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"

__all__ = [
    "algorithms", "graph_ops", "masks", "topology", "tuning",
    "Algorithm", "centralized", "dsgd", "ecl", "ecl_admm", "ecl_isvr", "ecl_pdmm", "gossip",
    "gradient_tracking", "local_sgd", "pairwise_gossip",
    "Carry", "Engine", "ExecutionPlan", "NodeData", "Participation", "consensus_distance", "mean_params",
    "stack_node_data", "step_keys",
    "Topology", "TopologyError",
    "__version__",
]
