"""Communication graphs as static edge-list arrays.

A :class:`Topology` holds an undirected connected graph G = (V, E) on N nodes in the
form the vectorised algorithms need (docs/algorithms.md#per-node-and-per-edge-variables;
graph arrays: docs/design.md#topology):

* ``edges`` [E, 2]: undirected edges (u, v) with u < v, sorted;
* directed edges 0..2E-1 in CSR order (sorted by source, then destination) with
  ``src``, ``dst``, ``reverse`` (index of the opposite direction), ``sign``
  (A_{src|dst} = +1 if src < dst else -1) and ``undirected`` (index into ``edges``);
* ``degree`` [N].

Per-edge state (duals z_{i|j}, received models) is stored in a *layout*
(:mod:`ecl_jax.layouts`: ``"shift"``, ``"slots"``, ``"edges"``), an object the topology
holds as :attr:`Topology.layout`; ``layout="auto"`` (the default) picks the fastest correct
one: shift (static rolls) on graphs invariant under translations of the node grid (rings,
tori, circulant graphs), slots when padding adds at most 25 % to 2E, else the edge list
(docs/design.md#per-edge-layouts). Memory is O(N + E) for the index arrays; :meth:`Topology.adjacency` builds the dense [N, N]
view only on request. Every constructor first estimates the graph's size and refuses
one beyond :data:`MAX_NODES` nodes or :data:`MAX_DIRECTED_EDGES` directed edges (a
:class:`TopologyError` with the numbers) before allocating anything.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from ecl_jax import layouts
from ecl_jax.errors import TopologyError
from ecl_jax.validation import check_int

LAYOUTS: tuple[str, ...] = layouts.LAYOUT_NAMES

__all__ = [
    "Topology",
    "TopologyError",
    "from_edges",
    "from_adjacency",
    "from_networkx",
    "ring",
    "multiplex_ring",
    "torus",
    "complete",
    "star",
    "erdos_renyi",
    "random_regular",
    "exponential",
    "icml21_random",
    "ICML21_RANDOM_EDGES",
    "MAX_NODES",
    "MAX_DIRECTED_EDGES",
    "estimate_size",
]


#: Largest graph the constructors build: N nodes ...
MAX_NODES: int = 10**7
#: ... and 2|E| directed edges (each costs ~24 bytes of index arrays: ``edges`` 8 per
#: undirected edge, ``src``/``dst``/``reverse``/``undirected``/``sign`` 4 each, about 3x
#: that while building; the per-edge algorithm state comes on top). Checked before anything
#: is allocated; raise them (``ecl_jax.topology.MAX_NODES = ...``) on a machine with the memory.
MAX_DIRECTED_EDGES: int = 10**8
_BYTES_PER_DIRECTED_EDGE = 24
_BYTES_PER_NODE = 8


def estimate_size(n_nodes: int, n_directed: int) -> int:
    """Bytes of the index arrays of a topology with N nodes and 2|E| directed edges."""
    return _BYTES_PER_DIRECTED_EDGE * int(n_directed) + _BYTES_PER_NODE * int(n_nodes)


def _check_size(what: str, n_nodes: int, n_directed: int, note: str = "") -> None:
    """Refuse, before allocating, a graph beyond :data:`MAX_NODES` / :data:`MAX_DIRECTED_EDGES`."""
    n, d = int(n_nodes), int(n_directed)
    if n <= MAX_NODES and d <= MAX_DIRECTED_EDGES:
        return
    est = estimate_size(n, d)
    raise TopologyError(
        f"{what}: N={n:,} nodes and about {d:,} directed edges{note} would need about {est / 2**30:,.1f} GiB "
        f"({est:,} bytes) of index arrays, over the limit of MAX_NODES={MAX_NODES:,} nodes and "
        f"MAX_DIRECTED_EDGES={MAX_DIRECTED_EDGES:,} directed edges; use a smaller or sparser graph, or raise "
        f"the limits (ecl_jax.topology.MAX_NODES = ..., ecl_jax.topology.MAX_DIRECTED_EDGES = ...) on a "
        f"machine with the memory"
    )


# The ICML21 code's 8-node random graph (node_list.n8.random.round8.json).
ICML21_RANDOM_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 4), (0, 6), (0, 7), (1, 6), (2, 4), (2, 5), (3, 6), (3, 7), (4, 5),
)


@dataclasses.dataclass(frozen=True, eq=False)
class Topology:
    """An undirected connected graph as static NumPy index arrays.

    Build it with a constructor (:func:`ring`, :func:`from_adjacency`, ...), never by
    hand: the constructors validate and fill every derived array. Instances hash by
    identity, so they can be closed over or passed as static arguments to ``jax.jit``.
    """

    n_nodes: int
    edges: np.ndarray  # [E, 2] int32, u < v, lexicographically sorted
    src: np.ndarray  # [2E] int32, CSR order (sorted by src, then dst)
    dst: np.ndarray  # [2E] int32
    reverse: np.ndarray  # [2E] int32
    sign: np.ndarray  # [2E] float32, A_{src|dst}
    undirected: np.ndarray  # [2E] int32, index into edges
    degree: np.ndarray  # [N] int32
    offsets: np.ndarray  # [N + 1] int32, CSR row pointer
    layout: "layouts.EdgeLayout"  # how per-edge state is stored (ecl_jax.layouts)
    name: str = "graph"
    grid: tuple[int, ...] | None = None  # node-index grid for the shift layout; None = (N,)

    # ----------------------------------------------------------------- sizes
    @property
    def n_edges(self) -> int:
        """Number of undirected edges |E|."""
        return int(self.edges.shape[0])

    @property
    def n_directed(self) -> int:
        """Number of directed edges 2|E|."""
        return 2 * self.n_edges

    @property
    def max_degree(self) -> int:
        return int(self.degree.max())

    @property
    def is_regular(self) -> bool:
        return bool(np.all(self.degree == self.degree[0]))

    @property
    def edge_state_shape(self) -> tuple[int, ...]:
        """Leading shape of per-directed-edge arrays in this topology's layout."""
        return self.layout.edge_shape

    def __repr__(self) -> str:
        return (
            f"Topology(name={self.name!r}, n_nodes={self.n_nodes}, n_edges={self.n_edges}, "
            f"degree=[{self.degree.min()}..{self.degree.max()}], layout={self.layout.name!r})"
        )

    def with_layout(self, layout: str) -> "Topology":
        """The same graph with per-edge state stored in ``layout`` (a name of
        :data:`ecl_jax.layouts.LAYOUT_NAMES`; "auto" = the fastest correct choice)."""
        topo = dataclasses.replace(self, layout=None)
        object.__setattr__(topo, "layout", layouts.build(layout, topo))
        return topo

    # ----------------------------------------------------- shift structure
    @property
    def node_grid(self) -> tuple[int, ...]:
        """Shape of the node-index grid used by the shift layout ((N,) unless set)."""
        return tuple(self.grid) if self.grid is not None else (self.n_nodes,)

    @property
    def shift_offsets(self) -> np.ndarray | None:
        """[D, len(node_grid)] offsets o_s with neighbour(i, s) = i + o_s on the grid, or None
        when the graph is not invariant under grid translations (no shift layout)."""
        return _cached(self, "_shift_offsets", lambda: layouts.find_shift_offsets(self))

    @property
    def supports_shift(self) -> bool:
        """Whether the ``"shift"`` layout is available for this graph."""
        return self.shift_offsets is not None

    # --------------------------------------------------- array conversions
    def edge_array(self, name: str) -> np.ndarray:
        """Static per-edge arrays in layout shape (:meth:`ecl_jax.layouts.EdgeLayout.edge_array`)."""
        return self.layout.edge_array(name)

    def to_directed(self, edge_state: jax.Array | np.ndarray) -> np.ndarray:
        """Layout-shaped per-edge values -> canonical [2E, ...] CSR order (NumPy)."""
        return self.layout.to_directed(edge_state)

    def from_directed(self, values: jax.Array | np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Canonical [2E, ...] per-edge values -> this layout (NumPy, padding = fill)."""
        return self.layout.from_directed(np.asarray(values), fill)

    def directed_index(self, i: int, j: int) -> int:
        """Index of directed edge (i -> j) in canonical CSR order."""
        lo, hi = self.offsets[i], self.offsets[i + 1]
        k = lo + np.searchsorted(self.dst[lo:hi], j)
        if k >= hi or self.dst[k] != j:
            raise TopologyError(f"({i}, {j}) is not an edge of {self.name}")
        return int(k)

    def neighbors(self, i: int) -> np.ndarray:
        """Sorted neighbours of node i."""
        return self.dst[self.offsets[i] : self.offsets[i + 1]]

    def adjacency(self) -> np.ndarray:
        """Dense boolean [N, N] adjacency matrix (O(N^2): small graphs only)."""
        a = np.zeros((self.n_nodes, self.n_nodes), bool)
        a[self.src, self.dst] = True
        return a

    def to_networkx(self):
        import networkx as nx

        g = nx.Graph()
        g.add_nodes_from(range(self.n_nodes))
        g.add_edges_from(map(tuple, self.edges.tolist()))
        return g


def _cached(topo: Topology, key: str, build):
    cache = topo.__dict__.setdefault("_cache", {})
    if key not in cache:
        cache[key] = build()
    return cache[key]


# --------------------------------------------------------------------------
# Construction and validation
# --------------------------------------------------------------------------


def from_edges(
    n_nodes: int,
    edges,
    *,
    name: str = "graph",
    layout: str = "auto",
    allow_duplicates: bool = False,
    grid: tuple[int, ...] | None = None,
) -> Topology:
    """Build a validated topology from N and a list of undirected edges (u, v).

    Raises :class:`TopologyError` naming the offending node or edge for: N < 2, an
    endpoint outside [0, N), a self loop, a duplicate edge (unless
    ``allow_duplicates``) and a disconnected graph. ``grid`` (e.g. (rows, cols) for a
    torus) is the node-index grid the ``"shift"`` layout translates on; default (N,).
    """
    n = check_int("n_nodes", n_nodes, error=TopologyError)
    if n < 2:
        raise TopologyError(f"a communication graph needs at least 2 nodes, got n_nodes={n}")
    try:
        n_given = len(edges)
    except TypeError:
        raise TopologyError(f"edges must be a sequence of (u, v) pairs, got {type(edges).__name__}") from None
    _check_size(f"from_edges(n_nodes={n}, {n_given} edges, name={name!r})", n, 2 * n_given)
    try:
        raw = np.asarray(edges) if len(edges) else np.zeros((0, 2), np.int64)
    except ValueError:  # ragged
        raw = np.asarray(edges, dtype=object)
    if raw.ndim != 2 or raw.shape[1] != 2:
        raise TopologyError(f"edges must be a sequence of (u, v) pairs, shape [E, 2]; got shape {raw.shape}")
    if raw.size and not np.issubdtype(raw.dtype, np.integer):
        floating = np.issubdtype(raw.dtype, np.floating)
        bad = np.flatnonzero((np.mod(raw, 1) != 0).any(1)) if floating else np.arange(len(raw))
        if bad.size:
            raise TopologyError(
                f"edge {tuple(raw[bad[0]].tolist())} has a non-integer endpoint; nodes are integers 0..{n - 1}"
            )
    e = raw.astype(np.int64)
    if e.size and (e.min() < 0 or e.max() >= n):
        bad = e[(e < 0).any(1) | (e >= n).any(1)][0]
        raise TopologyError(
            f"edge ({bad[0]}, {bad[1]}) has an endpoint outside the valid nodes 0..{n - 1}"
        )
    loops = e[:, 0] == e[:, 1]
    if loops.any():
        node = int(e[loops][0, 0])
        raise TopologyError(f"self loop at node {node}: edge ({node}, {node}) is not allowed")
    e = np.sort(e, axis=1)
    uniq, counts = np.unique(e, axis=0, return_counts=True)
    if not allow_duplicates and (counts > 1).any():
        u, v = uniq[counts > 1][0]
        raise TopologyError(f"duplicate edge ({u}, {v})")
    e = uniq.astype(np.int32)
    degree = np.bincount(e.reshape(-1), minlength=n).astype(np.int32)
    if (degree == 0).any():
        node = int(np.flatnonzero(degree == 0)[0])
        raise TopologyError(f"graph is not connected: node {node} has no edges")
    comp = _components(n, e)
    if comp.max() > 0:
        node = int(np.flatnonzero(comp != 0)[0])
        raise TopologyError(
            f"graph is not connected: node {node} cannot reach node 0 "
            f"({comp.max() + 1} connected components)"
        )
    # Directed edges in CSR order.
    m = e.shape[0]
    src = np.concatenate([e[:, 0], e[:, 1]])
    dst = np.concatenate([e[:, 1], e[:, 0]])
    und = np.concatenate([np.arange(m), np.arange(m)])
    order = np.lexsort((dst, src))
    src, dst, und = src[order], dst[order], und[order]
    inv = np.empty_like(order)
    inv[order] = np.arange(2 * m)
    # Opposite direction of directed edge k (pre-sort index k <-> k +- m).
    pre_rev = np.concatenate([np.arange(m, 2 * m), np.arange(m)])
    reverse = inv[pre_rev[order]]
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(degree, out=offsets[1:])
    topo = Topology(
        n_nodes=n,
        edges=e,
        src=src.astype(np.int32),
        dst=dst.astype(np.int32),
        reverse=reverse.astype(np.int32),
        sign=np.where(src < dst, 1.0, -1.0).astype(np.float32),
        undirected=und.astype(np.int32),
        degree=degree,
        offsets=offsets.astype(np.int32),
        layout=None,
        name=name,
        grid=None if grid is None else tuple(int(g) for g in grid),
    )
    if topo.grid is not None and int(np.prod(topo.grid)) != n:
        raise TopologyError(f"grid {topo.grid} has {int(np.prod(topo.grid))} cells but the graph has {n} nodes")
    return topo.with_layout(layout)


def _components(n: int, edges: np.ndarray) -> np.ndarray:
    """Connected-component label per node (0 = the component of node 0), union-find."""
    parent = np.arange(n)

    def find(x):
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for u, v in edges:
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[max(ru, rv)] = min(ru, rv)
    roots = np.array([find(i) for i in range(n)])
    _, labels = np.unique(roots, return_inverse=True)
    return labels


def from_adjacency(adjacency, *, name: str = "adjacency", layout: str = "auto") -> Topology:
    """Build a topology from a dense symmetric 0/1 (or boolean) adjacency matrix.

    Errors name the offending entry: not 2-D square, an entry other than 0/1/True/False,
    an asymmetric pair (i, j), a self loop (nonzero diagonal), N < 2, disconnected.
    """
    a = np.asarray(adjacency)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise TopologyError(f"adjacency must be a square 2-D matrix, got shape {a.shape}")
    _check_size(f"from_adjacency({name!r})", a.shape[0], np.count_nonzero(a) if a.shape[0] <= MAX_NODES else 0)
    if a.dtype != bool:
        if not (np.issubdtype(a.dtype, np.number)):
            raise TopologyError(f"adjacency must be boolean or 0/1 numbers, got dtype {a.dtype}")
        bad = ~np.isin(a, (0, 1))
        if bad.any():
            i, j = map(int, np.argwhere(bad)[0])
            raise TopologyError(
                f"adjacency entry ({i}, {j}) = {a[i, j].item()!r}; entries must be 0/1 or boolean"
            )
        a = a.astype(bool)
    if a.shape[0] < 2:
        raise TopologyError(f"a communication graph needs at least 2 nodes, got n_nodes={a.shape[0]}")
    diag = np.flatnonzero(np.diag(a))
    if diag.size:
        raise TopologyError(f"self loop at node {diag[0]}: adjacency[{diag[0]}, {diag[0]}] is nonzero")
    asym = np.argwhere(a != a.T)
    if asym.size:
        i, j = map(int, asym[0])
        raise TopologyError(
            f"adjacency is not symmetric: entry ({i}, {j}) = {int(a[i, j])} but ({j}, {i}) = {int(a[j, i])}"
        )
    iu, ju = np.nonzero(np.triu(a, 1))
    return from_edges(a.shape[0], np.stack([iu, ju], 1), name=name, layout=layout)


def from_networkx(graph, *, name: str | None = None, layout: str = "auto") -> Topology:
    """Build a topology from an undirected ``networkx`` graph (nodes relabelled 0..N-1
    in ``graph.nodes`` order)."""
    if graph.is_directed():
        raise TopologyError("networkx graph is directed; ECL needs an undirected graph")
    _check_size(f"from_networkx({name or 'graph'!r})", graph.number_of_nodes(), 2 * graph.number_of_edges())
    nodes = list(graph.nodes)
    index = {v: k for k, v in enumerate(nodes)}
    edges = [(index[u], index[v]) for u, v in graph.edges]
    for u, v in graph.edges:
        if u == v:
            raise TopologyError(f"self loop at node {u!r}")
    return from_edges(len(nodes), edges, name=name or "networkx", layout=layout)


def _check_int(name: str, value, minimum: int) -> int:
    return check_int(name, value, minimum=minimum, error=TopologyError)


def ring(n: int, *, layout: str = "auto") -> Topology:
    """Cycle 0-1-...-(N-1)-0 (N = 2 gives a single edge)."""
    n = _check_int("n", n, 2)
    _check_size(f"ring({n})", n, 2 * n if n > 2 else 2)
    edges = [(i, (i + 1) % n) for i in range(n)] if n > 2 else [(0, 1)]
    return from_edges(n, edges, name=f"ring{n}", layout=layout, allow_duplicates=False)


def multiplex_ring(n: int, hops: int | tuple[int, ...] = 2, *, layout: str = "auto") -> Topology:
    """Ring plus skip links: node i is joined to i +- h for every h in 1..hops (or in
    the given tuple). ``multiplex_ring(8, 2)`` is the ICML21 4-regular 16-edge graph."""
    n = _check_int("n", n, 2)
    if isinstance(hops, tuple):
        hs = hops
    else:
        h_max = _check_int("hops", hops, 1)
        if h_max >= n:
            raise TopologyError(f"skip length {h_max} must be in 1..{n - 1} for n={n}")
        hs = tuple(range(1, h_max + 1))
    _check_size(f"multiplex_ring({n}, hops={max(hs) if hs else hops})", n, 2 * n * len(hs))
    for h in hs:
        if not 1 <= h < n:
            raise TopologyError(f"skip length {h} must be in 1..{n - 1} for n={n}")
    edges = {tuple(sorted((i, (i + h) % n))) for i in range(n) for h in hs}
    edges.discard(None)
    edges = {e for e in edges if e[0] != e[1]}
    return from_edges(n, sorted(edges), name=f"multiplex_ring{n}x{max(hs)}", layout=layout)


def torus(rows: int, cols: int, *, layout: str = "auto") -> Topology:
    """2-D torus (grid with wrap-around), node index r * cols + c."""
    rows = _check_int("rows", rows, 2)
    cols = _check_int("cols", cols, 2)
    _check_size(f"torus({rows}, {cols})", rows * cols, 4 * rows * cols)
    edges = set()
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            for j in (r * cols + (c + 1) % cols, ((r + 1) % rows) * cols + c):
                if i != j:
                    edges.add(tuple(sorted((i, j))))
    return from_edges(rows * cols, sorted(edges), name=f"torus{rows}x{cols}", layout=layout, grid=(rows, cols))


def complete(n: int, *, layout: str = "auto") -> Topology:
    """Fully connected graph."""
    n = _check_int("n", n, 2)
    _check_size(f"complete({n})", n, n * (n - 1))
    iu, ju = np.triu_indices(n, 1)
    return from_edges(n, np.stack([iu, ju], 1), name=f"complete{n}", layout=layout)


def star(n: int, *, center: int = 0, layout: str = "auto") -> Topology:
    """Star: node ``center`` joined to every other node (picks the edge layout)."""
    n = _check_int("n", n, 2)
    _check_size(f"star({n})", n, 2 * (n - 1))
    if not 0 <= center < n:
        raise TopologyError(f"center must be a node in 0..{n - 1}, got {center}")
    return from_edges(n, [(center, j) for j in range(n) if j != center], name=f"star{n}", layout=layout)


def erdos_renyi(n: int, p: float, *, seed: int = 0, max_tries: int = 1000, layout: str = "auto") -> Topology:
    """G(N, p) resampled (with successive seeds) until connected."""
    n = _check_int("n", n, 2)
    if not 0.0 < p <= 1.0:
        raise TopologyError(f"edge probability p must be in (0, 1], got {p!r}")
    # Every one of the n(n-1)/2 candidate pairs is drawn (and held as index arrays).
    _check_size(f"erdos_renyi({n}, p={p:g})", n, n * (n - 1),
                f" (all n(n-1)/2 = {n * (n - 1) // 2:,} candidate pairs are drawn, whatever p)")
    rng = np.random.default_rng(seed)
    iu, ju = np.triu_indices(n, 1)
    for _ in range(max_tries):
        keep = rng.random(iu.size) < p
        e = np.stack([iu[keep], ju[keep]], 1)
        if e.shape[0] >= n - 1 and _components(n, e).max() == 0:
            return from_edges(n, e, name=f"erdos_renyi{n}_p{p:g}", layout=layout)
    raise TopologyError(
        f"no connected G(n={n}, p={p}) in {max_tries} draws; raise p above ~log(n)/n = {math.log(n) / n:.3g}"
    )


def random_regular(n: int, d: int, *, seed: int = 0, max_tries: int = 1000, layout: str = "auto") -> Topology:
    """Connected random d-regular graph (pairing model, resampled until simple and connected)."""
    n = _check_int("n", n, 3)
    d = _check_int("d", d, 2)
    if d >= n or (n * d) % 2:
        raise TopologyError(f"no d-regular graph with n={n}, d={d}: need d < n and n*d even")
    _check_size(f"random_regular({n}, d={d})", n, n * d)
    import networkx as nx

    for t in range(max_tries):
        g = nx.random_regular_graph(d, n, seed=seed + t)
        if nx.is_connected(g):
            return from_edges(n, list(g.edges), name=f"random_regular{n}_d{d}", layout=layout)
    raise TopologyError(f"no connected {d}-regular graph on {n} nodes in {max_tries} draws")


def exponential(n: int, *, layout: str = "auto") -> Topology:
    """Static exponential graph: node i is joined to i +- 2^k (mod N) for 2^k < N
    (undirected version of Ying et al. 2021)."""
    n = _check_int("n", n, 2)
    hops, h = [], 1
    while h < n:
        hops.append(h)
        h *= 2
    _check_size(f"exponential({n})", n, 2 * n * len(hops))
    edges = {tuple(sorted((i, (i + h) % n))) for i in range(n) for h in hops}
    edges = {e for e in edges if e[0] != e[1]}
    return from_edges(n, sorted(edges), name=f"exponential{n}", layout=layout)


def icml21_random(*, layout: str = "auto") -> Topology:
    """The ICML21 code's 8-node random graph (10 edges, degrees 4,2,2,2,3,2,3,2)."""
    return from_edges(8, ICML21_RANDOM_EDGES, name="icml21_random8", layout=layout)
