"""ecl_jax: edge-consensus learning (ECL-PDMM/ADMM/ISVR) and decentralised baselines in JAX.

All nodes live on a leading array axis; asynchrony is a per-step random mask over the
graph's edges (and nodes); a whole run is one compiled ``lax.scan``.
"""

# before anything can start JAX's backend: XLA reads XLA_FLAGS once (docs/performance.md)
from ecl_jax import tuning

tuning.apply_xla_flags()

from ecl_jax import algorithms, graph_ops, masks, topology
from ecl_jax.algorithms import (
    Algorithm,
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
from ecl_jax.engine import Carry, Engine, ExecutionPlan, consensus_distance, mean_params
from ecl_jax.node_data import NodeData, stack_node_data
from ecl_jax.topology import Topology, TopologyError

__version__ = "0.1.0"

__all__ = [
    "algorithms", "graph_ops", "masks", "topology", "tuning",
    "Algorithm", "centralized", "dsgd", "ecl", "ecl_admm", "ecl_isvr", "ecl_pdmm", "gossip",
    "gradient_tracking", "local_sgd", "pairwise_gossip",
    "Carry", "Engine", "ExecutionPlan", "NodeData", "consensus_distance", "mean_params", "stack_node_data",
    "Topology", "TopologyError",
    "__version__",
]
