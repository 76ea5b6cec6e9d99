"""Asynchrony as per-step random activation masks (docs/algorithms.md#asynchrony-and-masks).

An *edge schedule* maps ``(key, step, topology)`` to a boolean mask [E] over the
undirected edges: an active edge exchanges in both directions at that step, an
inactive one keeps its stale duals. A *node schedule* maps ``(key, step, n_nodes)``
to a mask [N]: an inactive node skips its update (straggler) and keeps its state.
All schedules are frozen dataclasses, sampled inside ``jit`` from a PRNG key; the
step counter may be traced.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax.topology import Topology
from ecl_jax.validation import check_int

__all__ = [
    "AlwaysEdges",
    "BernoulliEdges",
    "FixedSlotEdges",
    "ICML21_SLOT_TABLES",
    "icml21_slots",
    "RoundRobinEdges",
    "ArrayEdges",
    "FunctionEdges",
    "OnePeerExponential",
    "RandomMatching",
    "ChangingGraph",
    "Activity",
    "computes",
    "answers",
    "AllNodes",
    "BernoulliNodes",
    "ArrayNodes",
    "FunctionNodes",
    "dense_mask",
    "edges_on_clocks",
    "edge_schedule_from_string",
]


def _check_prob(name: str, p, *, allow_zero: bool = False, allow_one: bool = True) -> float:
    ok = isinstance(p, (int, float, np.floating)) and not isinstance(p, bool)
    lo_ok = ok and (p >= 0 if allow_zero else p > 0)
    hi_ok = ok and (p <= 1 if allow_one else p < 1)
    if not (lo_ok and hi_ok):
        lo = "[0" if allow_zero else "(0"
        hi = "1]" if allow_one else "1)"
        raise ValueError(f"{name} must be a probability in {lo}, {hi}, got {p!r}")
    return float(p)


def _failures(mask: jax.Array, key: jax.Array, failure_prob: float) -> jax.Array:
    if failure_prob == 0.0:
        return mask
    return mask & ~jax.random.bernoulli(key, failure_prob, mask.shape)


# --------------------------------------------------------------------------
# Edge schedules
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AlwaysEdges:
    """Every edge exchanges at every step (synchronous PDMM), up to link failures."""

    failure_prob: float = 0.0

    def __post_init__(self):
        _check_prob("failure_prob", self.failure_prob, allow_zero=True, allow_one=False)

    def __call__(self, key: jax.Array, step: jax.Array, topology: Topology) -> jax.Array:
        return _failures(jnp.ones((topology.n_edges,), bool), key, self.failure_prob)

    def on_clocks(self, key, tick, own_step, stepped, topology):
        """Free-running: a node swaps with every neighbour after each of its own steps."""
        e = jnp.asarray(topology.edges)
        return _failures(stepped[e[:, 0]] | stepped[e[:, 1]], key, self.failure_prob)


@dataclasses.dataclass(frozen=True)
class BernoulliEdges:
    """Each undirected edge is active independently with probability ``p``; give
    ``K`` instead for the papers' "about once every K updates" (p = 1/K)."""

    p: float | None = None
    K: int | None = None
    failure_prob: float = 0.0

    def __post_init__(self):
        if (self.p is None) == (self.K is None):
            raise ValueError(f"give exactly one of p or K, got p={self.p!r}, K={self.K!r}")
        if self.K is not None:
            check_int("K", self.K, minimum=1)
        else:
            _check_prob("p", self.p)
        _check_prob("failure_prob", self.failure_prob, allow_zero=True, allow_one=False)

    @property
    def prob(self) -> float:
        return 1.0 / self.K if self.K is not None else float(self.p)

    def __call__(self, key, step, topology):
        k1, k2 = jax.random.split(key)
        mask = jax.random.bernoulli(k1, self.prob, (topology.n_edges,))
        return _failures(mask, k2, self.failure_prob)


#: The official ICML21 code's per-edge slot tables (its three 8-node configs), as data.
ICML21_SLOT_TABLES: tuple[str, ...] = ("doublering", "random", "ring")


def icml21_slots(table: str, topology: Topology) -> np.ndarray:
    """Per-directed-edge slots (canonical CSR order) of the official ICML21 code's config
    ``table`` ("doublering" = ``multiplex_ring(8, 2)``, "random" = ``icml21_random()``,
    "ring" = ``ring(8)``), read from ``ecl_jax/data/icml21_slots.json`` (source and meaning
    inside). Raises ValueError when ``topology`` is not that table's graph."""
    if table not in ICML21_SLOT_TABLES:
        raise ValueError(f"unknown ICML21 slot table {table!r}; valid: {', '.join(ICML21_SLOT_TABLES)}")
    data = json.loads(resources.files("ecl_jax").joinpath("data/icml21_slots.json").read_text())
    slots = {(int(i), int(j)): s for i, row in data["slots"][table].items() for j, s in row.items()}
    have = {(int(i), int(j)) for i, j in zip(topology.src, topology.dst)}
    if have != set(slots):
        raise ValueError(
            f"the ICML21 slot table {table!r} is for an 8-node graph with edges "
            f"{sorted({tuple(sorted(e)) for e in slots})}; {topology.name} has other edges"
        )
    return np.array([slots[(int(i), int(j))] for i, j in zip(topology.src, topology.dst)], np.int32)


@dataclasses.dataclass(frozen=True)
class FixedSlotEdges:
    """ICML21 code: each *directed* edge (i -> j) owns a slot in [0, K); at step t the
    edge exchanges (both ends) when t mod K equals the slot of either direction.

    ``slots`` is a per-directed-edge sequence in canonical CSR order; ``table`` names one
    of the official code's tables (:func:`icml21_slots`, K = 8); by default the slots are
    drawn uniformly from ``seed``.
    """

    K: int
    slots: tuple[int, ...] | None = None
    seed: int = 0
    failure_prob: float = 0.0
    table: str | None = None

    def __post_init__(self):
        check_int("K", self.K, minimum=1)
        if self.table is not None:
            if self.table not in ICML21_SLOT_TABLES:
                raise ValueError(f"unknown ICML21 slot table {self.table!r}; valid: {', '.join(ICML21_SLOT_TABLES)}")
            if self.slots is not None or self.K != 8:
                raise ValueError(f"table={self.table!r} fixes the slots and K = 8 (the official round); "
                                 f"got K={self.K}{' and slots' if self.slots is not None else ''}")
        if self.slots is not None:
            s = np.asarray(self.slots)
            if s.ndim != 1 or (s.size and (not np.issubdtype(s.dtype, np.integer) or s.min() < 0 or s.max() >= self.K)):
                raise ValueError(f"slots must be a 1-D sequence of integers in [0, {self.K}), got {self.slots!r}")
        _check_prob("failure_prob", self.failure_prob, allow_zero=True, allow_one=False)

    def directed_slots(self, topology: Topology) -> np.ndarray:
        if self.table is not None:
            return icml21_slots(self.table, topology)
        if self.slots is None:
            return np.random.default_rng(self.seed).integers(0, self.K, topology.n_directed)
        s = np.asarray(self.slots)
        if s.shape != (topology.n_directed,):
            raise ValueError(
                f"slots has {s.size} entries but {topology.name} has {topology.n_directed} directed edges"
            )
        return s

    def __call__(self, key, step, topology):
        return self.on_clocks(key, step, jnp.full((topology.n_nodes,), step, jnp.int32),
                              jnp.ones((topology.n_nodes,), bool), topology)

    def on_clocks(self, key, tick, own_step, stepped, topology):
        """Free-running: node i swaps over its edge to j after its own step c when
        c mod K is the slot of (i -> j) (each end at its own slot)."""
        slots = jnp.asarray(self.directed_slots(topology))
        src = jnp.asarray(topology.src)
        hit = stepped[src] & (slots == own_step[src] % self.K)
        mask = jax.ops.segment_max(
            hit.astype(jnp.int32), jnp.asarray(topology.undirected), num_segments=topology.n_edges
        ).astype(bool)
        return _failures(mask, key, self.failure_prob)


@dataclasses.dataclass(frozen=True)
class RoundRobinEdges:
    """KDD20 code: node i counts its updates from ``offsets[i]``; after update t
    (0-based) it swaps with one neighbour when (offsets[i] + t + 1) mod interval == 0,
    cycling through its neighbours in increasing order. A swap updates both ends.

    Default offsets: 1, 3, 5, ... (mod interval), as the KDD20 samples' three nodes.
    """

    interval: int = 6
    offsets: tuple[int, ...] | None = None
    failure_prob: float = 0.0

    def __post_init__(self):
        check_int("interval", self.interval, minimum=1)
        if self.offsets is not None and any(int(o) < 0 for o in self.offsets):
            raise ValueError(f"offsets must be non-negative integers, got {self.offsets!r}")
        _check_prob("failure_prob", self.failure_prob, allow_zero=True, allow_one=False)

    def node_offsets(self, topology: Topology) -> np.ndarray:
        if self.offsets is None:
            return (1 + 2 * np.arange(topology.n_nodes)) % self.interval
        o = np.asarray(self.offsets, np.int64)
        if o.shape != (topology.n_nodes,):
            raise ValueError(f"offsets has {o.size} entries, expected one per node ({topology.n_nodes})")
        return o

    def __call__(self, key, step, topology):
        return self.on_clocks(key, step, jnp.full((topology.n_nodes,), step, jnp.int32),
                              jnp.ones((topology.n_nodes,), bool), topology)

    def on_clocks(self, key, tick, own_step, stepped, topology):
        """Free-running: the same rule on each node's own step counter ``own_step``."""
        off = jnp.asarray(self.node_offsets(topology))
        count = off + own_step + 1
        initiates = stepped & (count % self.interval == 0)
        k = count // self.interval - 1
        deg = jnp.asarray(topology.degree)
        pos = jnp.mod(k, deg)
        directed = jnp.asarray(topology.offsets[:-1]) + pos
        und = jnp.asarray(topology.undirected)[directed]
        mask = jnp.zeros((topology.n_edges,), jnp.int32).at[und].max(initiates.astype(jnp.int32))
        return _failures(mask.astype(bool), key, self.failure_prob)


@dataclasses.dataclass(frozen=True)
class ArrayEdges:
    """User-given table [T, E] of edge masks; step t uses row t mod T."""

    table: np.ndarray

    def __post_init__(self):
        t = np.asarray(self.table)
        if t.ndim != 2:
            raise ValueError(f"edge mask table must have shape [T, E], got shape {t.shape}")
        object.__setattr__(self, "table", t.astype(bool))

    def __hash__(self):
        return id(self)

    def __call__(self, key, step, topology):
        if self.table.shape[1] != topology.n_edges:
            raise ValueError(
                f"edge mask table has {self.table.shape[1]} columns but {topology.name} has {topology.n_edges} edges"
            )
        return jnp.asarray(self.table)[jnp.asarray(step) % self.table.shape[0]]


# --------------------------------------------------------------------------
# Graphs that change: which edges of the union graph exist at a step
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class OnePeerExponential:
    """The one-peer exponential graph (Ying et al. 2021), undirected: at step t the edges
    {i, i + 2^m mod N}, m = t mod tau, 2^m < N <= 2^tau, of the static exponential graph
    (:func:`~ecl_jax.topology.exponential`, the union); each node meets i +- 2^m, so 2 peers
    (1 for 2^m = N/2). Cycles through the offsets; draws nothing."""

    def table(self, topology: Topology) -> np.ndarray:
        """[tau, E] bool: the edges of each offset 2^m among the union's edges."""
        n, hops = topology.n_nodes, [1 << m for m in range(max(1, (topology.n_nodes - 1).bit_length()))]
        index = {tuple(e): k for k, e in enumerate(topology.edges.tolist())}
        out = np.zeros((len(hops), topology.n_edges), bool)
        for m, h in enumerate(hops):
            for i in range(n):
                e = tuple(sorted((i, (i + h) % n)))
                if e[0] == e[1]:
                    continue
                if e not in index:
                    raise ValueError(f"one-peer exponential needs the exponential graph's edges; {topology.name} "
                                     f"lacks edge {e} (offset {h}); build it on topology.exponential({n})")
                out[m, index[e]] = True
        return out

    def __call__(self, key, step, topology: Topology) -> jax.Array:
        table = self.table(topology)
        return jnp.asarray(table)[jnp.asarray(step) % table.shape[0]]


@dataclasses.dataclass(frozen=True, eq=False)
class RandomMatching:
    """A random perfect matching of the N nodes at every step (with N odd one node sits out),
    drawn from the step's key: the edges {p[2k], p[2k+1]} of a random permutation p, on the
    complete graph (:func:`~ecl_jax.topology.complete`, the union)."""

    def __call__(self, key, step, topology: Topology) -> jax.Array:
        n = topology.n_nodes
        if topology.n_edges != n * (n - 1) // 2:
            raise ValueError(f"random matchings need the complete graph as the union; {topology.name} has "
                             f"{topology.n_edges} of {n * (n - 1) // 2} edges; build it on topology.complete({n})")
        perm = jax.random.permutation(key, n)
        a, b = perm[0: n - 1: 2], perm[1: n: 2]
        lo, hi = jnp.minimum(a, b), jnp.maximum(a, b)
        index = lo * n - lo * (lo + 1) // 2 + (hi - lo - 1)  # (lo, hi) in the complete graph's sorted edge list
        return jnp.zeros((topology.n_edges,), bool).at[index].set(True)


@dataclasses.dataclass(frozen=True, eq=False)
class ChangingGraph:
    """An edge schedule on a graph that changes: an edge exchanges when the step's graph has
    it (``graph``: :class:`OnePeerExponential`, :class:`RandomMatching`, :class:`ArrayEdges`
    with one row per graph of a user's sequence) and ``schedule`` opens it (the asynchrony on
    top). The graph follows the global step (the tick under a free runtime) and draws from
    its own stream of the key; ``schedule`` keeps its clocks (:func:`edges_on_clocks`)."""

    graph: Callable
    schedule: Callable

    def __call__(self, key, step, topology: Topology) -> jax.Array:
        return self.graph(jax.random.fold_in(key, 0x6A7), step, topology) & self.schedule(key, step, topology)

    def on_clocks(self, key, tick, own_step, stepped, topology: Topology) -> jax.Array:
        present = self.graph(jax.random.fold_in(key, 0x6A7), tick, topology)
        return present & edges_on_clocks(self.schedule, key, tick, own_step, stepped, topology)


@dataclasses.dataclass(frozen=True)
class FunctionEdges:
    """User function ``fn(key, step, topology) -> bool[E]`` (must be jit-traceable)."""

    fn: Callable

    def __call__(self, key, step, topology):
        mask = jnp.asarray(self.fn(key, step, topology))
        if mask.shape != (topology.n_edges,):
            raise ValueError(f"edge schedule function returned shape {mask.shape}, expected ({topology.n_edges},)")
        return mask.astype(bool)


# --------------------------------------------------------------------------
# Node schedules
# --------------------------------------------------------------------------


class Activity(NamedTuple):
    """What each node does in one step: ``computes`` [N] (makes a local step) and ``answers``
    [N] (takes part in the exchanges of its edges). A paused node (evaluating, say) computes
    nothing but answers, so a swap still refreshes both ends' received copies / duals with
    its current values; a failed node does neither. A plain bool [N] node mask means
    computes = answers (docs/algorithms.md#mask-semantics)."""

    computes: jax.Array
    answers: jax.Array


def computes(node_active) -> jax.Array:
    """The nodes that make a local step (``node_active``: a bool [N] mask or an :class:`Activity`)."""
    return node_active.computes if isinstance(node_active, Activity) else node_active


def answers(node_active) -> jax.Array:
    """The nodes that take part in exchanges (``node_active``: a bool [N] mask or an :class:`Activity`)."""
    return node_active.answers if isinstance(node_active, Activity) else node_active


@dataclasses.dataclass(frozen=True)
class AllNodes:
    """Every node computes at every step."""

    def __call__(self, key, step, n_nodes: int):
        return jnp.ones((n_nodes,), bool)


@dataclasses.dataclass(frozen=True)
class BernoulliNodes:
    """Each node computes with probability ``p``. ``idle="stops"`` (default): a node that skips
    the step also skips its exchanges (a bool mask); ``idle="answers"``: it still answers them
    (an :class:`Activity`, a paused node)."""

    p: float
    idle: str = "stops"

    def __post_init__(self):
        _check_prob("p", self.p)
        if self.idle not in ("stops", "answers"):
            raise ValueError(f"idle must be 'stops' (an idle node does not exchange) or 'answers' (it still "
                             f"answers swaps), got {self.idle!r}")

    def __call__(self, key, step, n_nodes: int):
        on = jax.random.bernoulli(key, self.p, (n_nodes,))
        return on if self.idle == "stops" else Activity(on, jnp.ones((n_nodes,), bool))


@dataclasses.dataclass(frozen=True)
class ArrayNodes:
    """User-given table [T, N] of node masks; step t uses row t mod T."""

    table: np.ndarray

    def __post_init__(self):
        t = np.asarray(self.table)
        if t.ndim != 2:
            raise ValueError(f"node mask table must have shape [T, N], got shape {t.shape}")
        object.__setattr__(self, "table", t.astype(bool))

    def __hash__(self):
        return id(self)

    def __call__(self, key, step, n_nodes: int):
        if self.table.shape[1] != n_nodes:
            raise ValueError(f"node mask table has {self.table.shape[1]} columns, expected {n_nodes} nodes")
        return jnp.asarray(self.table)[jnp.asarray(step) % self.table.shape[0]]


@dataclasses.dataclass(frozen=True)
class FunctionNodes:
    """User function ``fn(key, step, n_nodes) -> bool[N]`` (must be jit-traceable)."""

    fn: Callable

    def __call__(self, key, step, n_nodes: int):
        mask = jnp.asarray(self.fn(key, step, n_nodes))
        if mask.shape != (n_nodes,):
            raise ValueError(f"node schedule function returned shape {mask.shape}, expected ({n_nodes},)")
        return mask.astype(bool)


def edges_on_clocks(schedule, key: jax.Array, tick: jax.Array, own_step: jax.Array, stepped: jax.Array,
                    topology: Topology) -> jax.Array:
    """The edge mask [E] of ``schedule`` in one tick of a free-running runtime
    (:mod:`ecl_jax.runtime`): ``own_step`` [N] is each node's own step counter, ``stepped``
    [N] which nodes completed a local step in this tick. Schedules that count steps
    (``RoundRobinEdges``, ``FixedSlotEdges``, ``AlwaysEdges``) read the node's own counter
    (their ``on_clocks``); the others (``BernoulliEdges``, tables, functions) are drawn per
    tick, as in lockstep."""
    if hasattr(schedule, "on_clocks"):
        return schedule.on_clocks(key, tick, own_step, stepped, topology)
    return schedule(key, tick, topology)


def dense_mask(topology: Topology, edge_active: jax.Array) -> jax.Array:
    """Symmetric [N, N] boolean view of an edge mask [E] (small N only)."""
    e = jnp.asarray(topology.edges)
    m = jnp.zeros((topology.n_nodes, topology.n_nodes), bool)
    m = m.at[e[:, 0], e[:, 1]].set(edge_active)
    return m | m.T


def edge_schedule_from_string(spec: str):
    """Parse ``"always"``, ``"bernoulli:K=8"``, ``"bernoulli:p=0.2"``, ``"slots:K=8"``,
    ``"slots:K=8,table=ring"`` (the official ICML21 slots, :func:`icml21_slots`),
    ``"round_robin:interval=6"``, ``"round_robin:interval=6,offsets=5/1/3"`` (one offset per
    node, in node order, separated by ``/``); append ``",fail=0.1"`` for link failures."""
    name, _, rest = spec.partition(":")
    kwargs: dict = {}
    for part in filter(None, rest.split(",")):
        k, _, v = part.partition("=")
        k, v = {"fail": "failure_prob"}.get(k.strip(), k.strip()), v.strip()
        try:
            if k == "offsets":
                kwargs[k] = tuple(int(o) for o in v.split("/"))
            else:
                kwargs[k] = float(v) if k in ("p", "failure_prob") else v if k == "table" else int(v)
        except ValueError:
            want = "integers separated by '/', e.g. offsets=5/1/3" if k == "offsets" else "a number"
            raise ValueError(f"edge schedule option {k} in {spec!r} must be {want}, got {v!r}") from None
    table = {
        "always": AlwaysEdges,
        "bernoulli": BernoulliEdges,
        "slots": FixedSlotEdges,
        "round_robin": RoundRobinEdges,
    }
    if name not in table:
        raise ValueError(f"unknown edge schedule {name!r}; valid: {sorted(table)}")
    try:
        return table[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments for edge schedule {name!r}: {err}") from None
