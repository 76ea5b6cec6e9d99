"""Spread the node axis over devices with ``jax.sharding`` (docs/design.md#sharding).

Every node-stacked array (models [N, ...], optimiser state, per-edge state in the
``"shift"``/``"slots"`` layouts [N, D, ...], ECL's :class:`~ecl_jax.duals.EdgeDuals` in the
shift layout [N, S, 2, ...], node data [N, M, ...]) is split along its leading node axis
over a 1-D device mesh (per-edge arrays of the edge-list layout [2E, ...] and pair-stored
duals of the slots/edges layouts [E, 2, ...] along their edge axis when it divides evenly); everything else (step counter, PRNG key,
edge masks [E]) is replicated. The compiled run is then partitioned by XLA's SPMD
partitioner: per-node work (gradients, primal updates) runs where the node lives, and
only the graph primitives communicate.

How much they communicate depends on the per-edge layout:

* ``"shift"`` (rings, tori, circulant graphs): neighbour values and the dual exchange
  are static rolls of the node axis; a roll of a block-sharded axis is partitioned into
  a ``collective-permute`` of the boundary rows (a halo of |offset| nodes per slot), so
  a ring exchanges 2 node models per device boundary per step, not the model stack.
  :func:`collective_report` lists the collectives of a compiled step to check this.
* ``"slots"``/``"edges"`` (arbitrary graphs): neighbour values are gathers with static
  index arrays, which the partitioner implements with an all-gather of the gathered
  operand: correct, but O(N P) traffic per step. ``layout="auto"`` (the default) picks
  the shift layout wherever the graph allows it.

Usage::

    mesh = node_mesh()                                   # all devices
    carry = shard_carry(engine.init(params, key), engine.topology, mesh)
    data = shard_node_data(data, mesh)
    carry, hist = engine.run(None, data, steps, key, carry=carry)

N (and 2E for the edges layout) must be divisible by the number of devices; the torus
shift layout additionally wants ``rows`` divisible by it (the node axis is viewed as
[rows, cols] for the rolls).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ecl_jax.duals import EdgeDuals
from ecl_jax.topology import Topology

__all__ = [
    "NODE_AXIS",
    "node_mesh",
    "node_sharding",
    "replicated",
    "shard_nodes",
    "shard_carry",
    "shard_node_data",
    "check_shardable",
    "collective_report",
]

NODE_AXIS = "nodes"


def node_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = NODE_AXIS) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices of the default backend)."""
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("node_mesh needs at least one device")
    return Mesh(np.array(devs), (axis_name,))


def node_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that splits an array's leading (node) axis over the mesh."""
    return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def _n_devices(mesh: Mesh) -> int:
    return int(mesh.devices.size)


def check_shardable(topology: Topology, mesh: Mesh) -> None:
    """Raise ValueError, naming the sizes, when the node axis (and the layout's per-edge
    axes) cannot be split evenly over the mesh (:meth:`ecl_jax.layouts.EdgeLayout.check_shardable`)."""
    topology.layout.check_shardable(_n_devices(mesh))


def shard_nodes(tree: Any, mesh: Mesh, *, topology: Topology | None = None, n_nodes: int | None = None) -> Any:
    """Place ``tree`` on ``mesh``: node-stacked leaves split along their leading axis, the rest
    (scalars, keys, [1, ...] central models) replicated. Give ``topology`` or ``n_nodes``.

    With ``topology``, :class:`~ecl_jax.duals.EdgeDuals` are recognised by type (their leaves
    lead with the layout's pair axes) and other leaves by the layout
    (:meth:`~ecl_jax.layouts.EdgeLayout.shards_leading`: the node axis, and the per-edge axes
    of the layout); with ``n_nodes`` only leaves of leading size N are split.
    """
    if topology is None and n_nodes is None:
        raise ValueError("shard_nodes needs topology= or n_nodes= to recognise the node axis")
    k = _n_devices(mesh)
    split, full = node_sharding(mesh), replicated(mesh)
    splits = topology.layout.shards_leading if topology is not None else (lambda size: size == int(n_nodes))

    def place(leaf, is_split):
        if leaf is None:
            return None
        shape = np.shape(leaf)
        return jax.device_put(leaf, split if len(shape) >= 1 and is_split(shape[0]) and shape[0] % k == 0 else full)

    def visit(x):
        if isinstance(x, EdgeDuals):
            pairs = x.layout.pair_shape[0]
            return jax.tree_util.tree_map(lambda leaf: place(leaf, lambda size: size == pairs), x)
        return place(x, splits)

    return jax.tree_util.tree_map(visit, tree, is_leaf=lambda x: isinstance(x, EdgeDuals))


def shard_carry(carry: Any, topology: Topology, mesh: Mesh) -> Any:
    """An engine :class:`~ecl_jax.engine.Carry` (or any algorithm state) with its node
    axis split over ``mesh``; checks divisibility first."""
    check_shardable(topology, mesh)
    return shard_nodes(carry, mesh, topology=topology)


def shard_node_data(data: Any, mesh: Mesh) -> Any:
    """Node-stacked :class:`~ecl_jax.engine.NodeData` split over ``mesh`` along N."""
    n = int(np.shape(jax.tree_util.tree_leaves(data)[0])[0])
    if n % _n_devices(mesh):
        raise ValueError(f"data for N={n} nodes cannot be split evenly over {_n_devices(mesh)} devices")
    return shard_nodes(data, mesh, n_nodes=n)


_COLLECTIVE = re.compile(
    r"=\s*(?P<shape>[a-z0-9]+\[[0-9,]*\])\S*\s+(?P<op>all-gather|all-reduce|collective-permute|all-to-all|reduce-scatter)(?:-start)?\("
)


def collective_report(compiled_text: str) -> list[tuple[str, str, int]]:
    """Collectives in compiled HLO text: (op, shape, element count) per instruction.

    ``jax.jit(f).lower(*args).compile().as_text()`` gives the text; a ring exchange on
    the shift layout shows only ``collective-permute`` of halo rows, while a gather
    over a sharded node axis shows an ``all-gather`` of the whole [N, ...] operand.
    """
    out = []
    for m in _COLLECTIVE.finditer(compiled_text):
        shape = m.group("shape")
        dims = shape[shape.index("[") + 1 : -1]
        count = int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
        out.append((m.group("op"), shape, count))
    return out
