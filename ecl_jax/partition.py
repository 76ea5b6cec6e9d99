"""Non-IID partitioners: split a training set's indices over N nodes.

Every partitioner takes the training labels (a 1-D integer array) and returns a list
of N index arrays (int64, ascending) into the training set. Splits are reproducible
from ``seed``; every node gets at least one sample, otherwise a ``ValueError`` names
the empty node and says what to change.

- :func:`iid`: uniform random split into near-equal shards.
- :func:`by_class_lists`: explicit classes per node (KDD 2020 sample code,
  docs/reproduction_setups.md#kdd20-data-split).
- :func:`icml21_classes`: the ICML 2021 split (``trainer/trainers.py::split_load_datas``
  of nttcslab/ecl-isvr, docs/reproduction_setups.md#icml21-data-split), reproduced exactly.
- :func:`k_classes_per_node`: k of C classes per node, all classes covered when N k >= C.
- :func:`dirichlet`: per-class node shares ~ Dir(alpha) (Hsu, Qi & Brown 2019).
- :func:`quantity_skew`: IID labels, node sizes ~ Dir(alpha) or a power law.

:func:`partition` dispatches by name; :func:`count_table` / :func:`format_count_table`
summarise a split; :func:`node_data` stacks it into :class:`~ecl_jax.node_data.NodeData` for the engine.
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import numpy as np

from ecl_jax.errors import DataError
from ecl_jax.node_data import NodeData, stack_node_data
from ecl_jax.validation import check_int, check_number

__all__ = [
    "KDD20_MNIST_CLASSES",
    "KDD20_CIFAR10_CLASSES",
    "iid",
    "by_class_lists",
    "icml21_class_lists",
    "icml21_classes",
    "k_classes_per_node",
    "dirichlet",
    "quantity_skew",
    "partition",
    "METHODS",
    "count_table",
    "format_count_table",
    "node_data",
]

#: KDD 2020 sample code (``run_mnist.py``), 3 nodes: MELCHIOR, BALTHASAR, CASPER
#: (docs/reproduction_setups.md#kdd20-data-split).
KDD20_MNIST_CLASSES: tuple[tuple[int, ...], ...] = ((6, 7, 8, 9), (3, 4, 5), (0, 1, 2))
#: KDD 2020 sample code (``run_cifar10.py``), 3 nodes; classes 0-3 are shared by all
#: (docs/reproduction_setups.md#kdd20-data-split).
KDD20_CIFAR10_CLASSES: tuple[tuple[int, ...], ...] = ((0, 1, 2, 3, 6, 9), (0, 1, 2, 3, 4, 7), (0, 1, 2, 3, 5, 8))


# --------------------------------------------------------------------------- helpers
def _labels(labels) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of class ids, got shape {y.shape}")
    if y.size == 0:
        raise ValueError("labels is empty: there is nothing to partition")
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating):
            raise DataError(f"labels must be integer class ids, got dtype {y.dtype}")
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if bad.size:
            i = int(bad[0])
            raise DataError(f"labels must be integer class ids, got dtype {y.dtype} with label {y[i].item()!r} "
                            f"at index {i}")
        y = y.astype(np.int64)
    if y.min() < 0:
        i = int(np.argmin(y))
        raise DataError(f"labels must be non-negative class ids, found {int(y[i])} at index {i}")
    return y.astype(np.int64, copy=False)


def _n_nodes(n_nodes, n_samples: int) -> int:
    n_nodes = check_int("n_nodes", n_nodes, minimum=1)
    if n_nodes > n_samples:
        raise ValueError(f"cannot give {n_nodes} nodes at least one sample each from {n_samples} samples; "
                         f"use n_nodes <= {n_samples} or a larger training set")
    return n_nodes


def _finish(parts: list, method: str, hint: str) -> list[np.ndarray]:
    """Sort each node's indices and check that no node is empty."""
    out = [np.sort(np.asarray(p, np.int64)) for p in parts]
    for i, p in enumerate(out):
        if p.size == 0:
            raise ValueError(f"{method}: node {i} received no samples; {hint}")
    return out


def _split_counts(n: int, weights: np.ndarray) -> np.ndarray:
    """Integer sizes summing to n, proportional to weights (largest-remainder rounding)."""
    w = np.asarray(weights, np.float64)
    raw = w / w.sum() * n
    sizes = np.floor(raw).astype(np.int64)
    rest = n - sizes.sum()
    if rest:
        sizes[np.argsort(-(raw - sizes), kind="stable")[:rest]] += 1
    return sizes


def _split_by_sizes(idx: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    return np.split(idx, np.cumsum(sizes)[:-1])


# --------------------------------------------------------------------------- partitioners
def iid(labels, n_nodes: int, seed: int = 0) -> list[np.ndarray]:
    """Uniformly random, disjoint, near-equal shards (sizes differ by at most one)."""
    y = _labels(labels)
    n = _n_nodes(n_nodes, y.size)
    perm = np.random.default_rng(seed).permutation(y.size)
    return _finish(np.array_split(perm, n), "iid", "use fewer nodes")


def by_class_lists(
    labels,
    class_lists: Sequence[Sequence[int]],
    seed: int = 0,
    samples_per_node: int | None = None,
    replace: bool = False,
) -> list[np.ndarray]:
    """Node i gets samples of the classes in ``class_lists[i]`` only (KDD 2020 splits).

    replace=False: the samples of a class held by several nodes are shuffled and split
    disjointly (near-equally) among its holders. replace=True: every holder gets all
    samples of its classes (overlapping shards), as the KDD sample code, which samples
    each node's classes with replacement from the whole training set
    (docs/reproduction_setups.md#kdd20-data-split).
    samples_per_node: draw this many indices from each node's pool, without replacement
    (with replacement if replace=True and the pool is smaller).
    """
    y = _labels(labels)
    if isinstance(class_lists, (str, bytes)) or not len(class_lists):
        raise ValueError(f"class_lists must be a non-empty list of class lists (one per node), got {class_lists!r}")
    lists = []
    present = np.unique(y)
    for i, cl in enumerate(class_lists):
        cl = [int(c) for c in np.atleast_1d(np.asarray(cl, dtype=np.int64))] if len(cl) else []
        if not cl:
            raise ValueError(f"by_class_lists: node {i} has an empty class list; give every node at least one class")
        if len(set(cl)) != len(cl):
            raise ValueError(f"by_class_lists: node {i} lists a class twice: {cl}")
        bad = [c for c in cl if c not in present]
        if bad:
            raise ValueError(f"by_class_lists: node {i} lists class(es) {bad} that have no samples; "
                             f"classes present in labels: {present.tolist()}")
        lists.append(cl)
    n = len(lists)
    rng = np.random.default_rng(seed)
    pools: list[list[np.ndarray]] = [[] for _ in range(n)]
    for c in present:
        holders = [i for i, cl in enumerate(lists) if c in cl]
        if not holders:
            continue
        idx = np.flatnonzero(y == c)
        if replace:
            for i in holders:
                pools[i].append(idx)
        else:
            for i, chunk in zip(holders, np.array_split(rng.permutation(idx), len(holders))):
                pools[i].append(chunk)
    parts = [np.concatenate(p) if p else np.zeros(0, np.int64) for p in pools]
    parts = _finish(parts, "by_class_lists",
                    "a class shared by more nodes than it has samples leaves some holders empty; "
                    "use replace=True or fewer nodes per class")
    if samples_per_node is not None:
        if isinstance(samples_per_node, bool) or int(samples_per_node) != samples_per_node or samples_per_node < 1:
            raise ValueError(f"samples_per_node must be a positive integer or None, got {samples_per_node!r}")
        out = []
        for i, p in enumerate(parts):
            if samples_per_node > p.size and not replace:
                raise ValueError(f"by_class_lists: node {i} has only {p.size} samples of classes {lists[i]} but "
                                 f"samples_per_node={samples_per_node}; lower it or pass replace=True")
            out.append(rng.choice(p, int(samples_per_node), replace=samples_per_node > p.size))
        parts = [np.sort(p) for p in out]
    return parts


def icml21_class_lists(
    n_nodes: int = 8, classes_per_node: int = 8, num_classes: int = 10, seed: int = 11, shift: int = 4
) -> list[list[int]]:
    """Classes per node of the ICML 2021 split: ``num_classes`` classes shuffled with
    ``np.random.RandomState(seed)``; node n takes ``classes_per_node`` consecutive
    classes of the shuffled list from position (shift * n) mod C, wrapping
    (docs/reproduction_setups.md#icml21-data-split)."""
    lists, _ = _icml21_plan(n_nodes, classes_per_node, num_classes, seed, shift, 0.2)
    return lists


def _icml21_plan(n_nodes, classes_per_node, num_classes, seed, shift, imbalance):
    check_int("n_nodes", n_nodes, minimum=1)
    if not 0 < classes_per_node < num_classes:
        raise ValueError(f"icml21: classes_per_node must be in 1..num_classes-1 = 1..{num_classes - 1} "
                         f"(the reference code asserts it), got {classes_per_node}")
    if shift < 1:
        raise ValueError(f"icml21: shift must be >= 1, got {shift}")
    if not 0 <= imbalance <= 1:
        raise ValueError(f"icml21: imbalance must be in [0, 1], got {imbalance}")
    # The reference seeds the global numpy RNG (np.random.seed(data_init_seed)) and
    # shuffles a Python list; a RandomState with the same seed draws the same numbers.
    rs = np.random.RandomState(seed)
    order = list(range(num_classes))
    rs.shuffle(order)
    lists = []
    class_to_nodes: list[list[int]] = [[] for _ in range(num_classes)]
    for n in range(n_nodes):
        s = (n * shift) % num_classes
        cls = (order + order)[s:s + classes_per_node]
        lists.append(cls)
        for c in cls:
            class_to_nodes[c].append(n)
    # Weights per class over its holders (ascending node index): U(1-imbalance, 1), normalised.
    weights = []
    for holders in class_to_nodes:
        w = rs.rand(len(holders)) * imbalance + (1.0 - imbalance)
        weights.append(w / w.sum() if len(holders) else w)
    return lists, (class_to_nodes, weights)


def icml21_classes(
    labels,
    n_nodes: int = 8,
    classes_per_node: int = 8,
    num_classes: int = 10,
    seed: int = 11,
    shift: int = 4,
    imbalance: float = 0.2,
) -> list[np.ndarray]:
    """The ICML 2021 (ECL-ISVR) split, as ``split_load_datas`` of nttcslab/ecl-isvr.

    Classes per node from :func:`icml21_class_lists`; then, in class order 0..C-1, the
    holders of class c draw weights w = U(0,1) * imbalance + (1 - imbalance) from the same
    RandomState, normalised; holder k (ascending node index) gets the k-th contiguous chunk
    of the class's samples in data-set order, of size floor(w_k * n_c), the last holder
    also the remainder. With the default arguments and 6,000 (Fashion-MNIST) / 5,000
    (CIFAR-10) samples per class this gives exactly the per-node counts of
    docs/reproduction_setups.md#icml21-data-split (e.g. node 4: 8,092 / 6,742). Classes
    held by no node are left out.
    """
    y = _labels(labels)
    if y.max() >= num_classes:
        raise ValueError(f"icml21: labels contain class {int(y.max())} but num_classes={num_classes}")
    _n_nodes(n_nodes, y.size)
    lists, (class_to_nodes, weights) = _icml21_plan(n_nodes, classes_per_node, num_classes, seed, shift, imbalance)
    pools: list[list[np.ndarray]] = [[] for _ in range(n_nodes)]
    for c in range(num_classes):
        holders = class_to_nodes[c]
        if not holders:
            continue
        idx = np.flatnonzero(y == c)
        ends = np.cumsum((weights[c] * idx.size).astype(np.int64))
        ends[-1] = idx.size
        start = 0
        for node, end in zip(holders, ends):
            pools[node].append(idx[start:end])
            start = end
    parts = [np.concatenate(p) if p else np.zeros(0, np.int64) for p in pools]
    return _finish(parts, "icml21",
                   "its classes have too few samples; use fewer nodes or more data")


def k_classes_per_node(labels, n_nodes: int, k: int, seed: int = 0) -> list[np.ndarray]:
    """Each node holds k distinct classes; classes are assigned greedily to the least-held
    ones (random tie-breaks), so every class is held when n_nodes * k >= C and holder
    counts differ by at most one. A class's samples are split disjointly and near-equally
    among its holders; classes held by no node (n_nodes * k < C) are left out."""
    y = _labels(labels)
    n = _n_nodes(n_nodes, y.size)
    classes = np.unique(y)
    c = classes.size
    k = check_int("k_classes_per_node: k", k, minimum=1, maximum=c, note="classes present")
    rng = np.random.default_rng(seed)
    held = np.zeros(c, np.int64)
    lists = []
    for _ in range(n):
        pick = np.lexsort((rng.random(c), held))[:k]  # least-held first, random ties
        held[pick] += 1
        lists.append(classes[np.sort(pick)])
    pools: list[list[np.ndarray]] = [[] for _ in range(n)]
    for j, cls in enumerate(classes):
        holders = [i for i in range(n) if cls in lists[i]]
        if not holders:
            continue
        idx = rng.permutation(np.flatnonzero(y == cls))
        for i, chunk in zip(holders, np.array_split(idx, len(holders))):
            pools[i].append(chunk)
    parts = [np.concatenate(p) for p in pools]
    return _finish(parts, "k_classes_per_node",
                   "some class has fewer samples than nodes holding it; use a smaller k or fewer nodes")


def dirichlet(labels, n_nodes: int, alpha: float, seed: int = 0, min_size: int = 1,
              max_tries: int = 1000) -> list[np.ndarray]:
    """Label-skew split: for every class c, node shares p_c ~ Dir(alpha 1_N) and the
    class's shuffled samples are cut in those proportions (Hsu, Qi & Brown 2019,
    arXiv:1909.06335). Redrawn (up to ``max_tries`` times) until every node has at least
    ``min_size`` samples. Small alpha: few classes per node; alpha -> inf: IID."""
    y = _labels(labels)
    n = _n_nodes(n_nodes, y.size)
    alpha = check_number("dirichlet: alpha", alpha, minimum=0, minimum_open=True)
    min_size = check_int("dirichlet: min_size", min_size, minimum=1, maximum=y.size // n,
                         note=f"for {n} nodes and {y.size} samples")
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    for _ in range(max_tries):
        pools: list[list[np.ndarray]] = [[] for _ in range(n)]
        for idx in by_class:
            p = rng.dirichlet(np.full(n, float(alpha)))
            for i, chunk in enumerate(_split_by_sizes(rng.permutation(idx), _split_counts(idx.size, p))):
                pools[i].append(chunk)
        parts = [np.concatenate(p) for p in pools]
        if min(p.size for p in parts) >= min_size:
            return _finish(parts, "dirichlet", "")
    sizes = [p.size for p in parts]
    worst = int(np.argmin(sizes))
    raise ValueError(f"dirichlet: after {max_tries} draws some node still had fewer than min_size={min_size} "
                     f"samples (last draw: node {worst} got {sizes[worst]}); increase alpha (got {alpha}), "
                     f"lower min_size or use fewer nodes")


def quantity_skew(labels, n_nodes: int, alpha: float | None = None, seed: int = 0, *,
                  power: float | None = None, min_size: int = 1) -> list[np.ndarray]:
    """Quantity skew with IID labels: shuffled samples cut into node shards of sizes
    min_size + (n - N min_size) q_i, with q ~ Dir(alpha 1_N) or, given ``power``,
    q_i proportional to r_i^(-power) for a random rank permutation r of 1..N."""
    y = _labels(labels)
    n = _n_nodes(n_nodes, y.size)
    if (alpha is None) == (power is None):
        raise ValueError(f"quantity_skew: give exactly one of alpha (Dirichlet) or power (power law), "
                         f"got alpha={alpha!r}, power={power!r}")
    min_size = check_int("quantity_skew: min_size", min_size, minimum=1, maximum=y.size // n,
                         note=f"for {n} nodes and {y.size} samples")
    rng = np.random.default_rng(seed)
    if alpha is not None:
        alpha = check_number("quantity_skew: alpha", alpha, minimum=0, minimum_open=True)
        q = rng.dirichlet(np.full(n, float(alpha)))
    else:
        power = check_number("quantity_skew: power", power, minimum=0)
        q = rng.permutation(np.arange(1, n + 1)).astype(np.float64) ** (-float(power))
    sizes = min_size + _split_counts(y.size - min_size * n, q)
    parts = _split_by_sizes(rng.permutation(y.size), sizes)
    return _finish(parts, "quantity_skew", "raise min_size")


# --------------------------------------------------------------------------- dispatcher
def _class_lists_method(labels, n_nodes, seed=0, class_lists=None, samples_per_node=None, replace=False):
    if class_lists is None:
        raise ValueError("partition 'classes' needs class_lists=[[...], ...] (one list of class ids per node), "
                         "e.g. KDD20_MNIST_CLASSES = [[6,7,8,9],[3,4,5],[0,1,2]]")
    if len(class_lists) != n_nodes:
        raise ValueError(f"partition 'classes': {len(class_lists)} class lists given for n_nodes={n_nodes}; "
                         f"give one list per node")
    return by_class_lists(labels, class_lists, seed=seed, samples_per_node=samples_per_node, replace=replace)


def _kdd(lists):
    def method(labels, n_nodes, seed=0, samples_per_node=None, replace=False):
        if n_nodes != len(lists):
            raise ValueError(f"the KDD 2020 split has {len(lists)} nodes, got n_nodes={n_nodes}")
        return by_class_lists(labels, lists, seed=seed, samples_per_node=samples_per_node, replace=replace)
    return method


def _icml(labels, n_nodes, seed=11, classes_per_node=8, num_classes=None, shift=4, imbalance=0.2):
    y = _labels(labels)
    c = int(y.max()) + 1 if num_classes is None else num_classes
    return icml21_classes(y, n_nodes, classes_per_node, c, seed, shift, imbalance)


#: name -> (function(labels, n_nodes, seed, **kwargs), description)
METHODS: dict[str, tuple[Callable, str]] = {
    "iid": (lambda labels, n_nodes, seed=0: iid(labels, n_nodes, seed), "uniform random shards"),
    "classes": (_class_lists_method, "explicit class lists per node: class_lists=[[...], ...]"),
    "kdd20_mnist": (_kdd(KDD20_MNIST_CLASSES), "KDD 2020 MNIST split, 3 nodes"),
    "kdd20_cifar10": (_kdd(KDD20_CIFAR10_CLASSES), "KDD 2020 CIFAR-10 split, 3 nodes"),
    "icml21": (_icml, "ICML 2021 split (8 of 10 classes per node, U(0.8,1) shares)"),
    "k_classes": (lambda labels, n_nodes, seed=0, k=2: k_classes_per_node(labels, n_nodes, k, seed),
                  "k of C classes per node: k=2"),
    "dirichlet": (lambda labels, n_nodes, seed=0, alpha=0.5, min_size=1:
                  dirichlet(labels, n_nodes, alpha, seed, min_size), "label skew Dir(alpha): alpha=0.5"),
    "quantity_skew": (lambda labels, n_nodes, seed=0, alpha=None, power=None, min_size=1:
                      quantity_skew(labels, n_nodes, alpha, seed, power=power, min_size=min_size),
                      "node sizes ~ Dir(alpha) or power law: alpha=... or power=..."),
}
_ALIASES = {"class_lists": "classes", "by_class_lists": "classes", "k_classes_per_node": "k_classes",
            "icml21_classes": "icml21", "quantity": "quantity_skew"}


def partition(labels, n_nodes: int, method: str = "iid", seed: int | None = None, **kwargs) -> list[np.ndarray]:
    """Split ``labels``' indices over ``n_nodes`` nodes with the partitioner named ``method``
    (see :data:`METHODS`); ``kwargs`` go to it. seed=None: the method's default seed."""
    name = _ALIASES.get(method, method)
    if name not in METHODS:
        valid = "\n".join(f"  {k}: {d}" for k, (_, d) in METHODS.items())
        raise ValueError(f"unknown partition method {method!r}; valid methods:\n{valid}")
    fn = METHODS[name][0]
    params = inspect.signature(fn).parameters
    allowed = [p for p in params if p not in ("labels", "n_nodes", "seed")]
    bad = sorted(set(kwargs) - set(allowed))
    if bad:
        raise ValueError(f"partition method {name!r} got unexpected argument(s) {bad}; "
                         f"it accepts: {allowed or 'no extra arguments'}")
    if seed is not None:
        kwargs["seed"] = seed
    return fn(labels, n_nodes, **kwargs)


# --------------------------------------------------------------------------- summaries
def count_table(labels, parts: Sequence[np.ndarray], num_classes: int | None = None) -> np.ndarray:
    """Samples per node and class: int64 array [N, C]."""
    y = _labels(labels)
    c = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.max() >= c:
        i = int(np.argmax(y))
        raise DataError(f"labels contain class {int(y[i])} (at index {i}) but num_classes={c}: "
                        f"valid class ids are 0..{c - 1}")
    return np.stack([np.bincount(y[np.asarray(p, np.int64)], minlength=c) for p in parts]).astype(np.int64)


def format_count_table(table, class_names: Sequence[str] | None = None) -> str:
    """Readable text table: one row per node, one column per class, plus totals."""
    t = np.asarray(table, np.int64)
    if t.ndim != 2:
        raise ValueError(f"count table must be 2-D [nodes, classes], got shape {t.shape}")
    n, c = t.shape
    heads = [str(s) for s in (class_names if class_names is not None else range(c))]
    if len(heads) != c:
        raise ValueError(f"{len(heads)} class names for {c} classes")
    rows = [["node"] + heads + ["total"]]
    rows += [[str(i)] + [str(v) for v in t[i]] + [str(t[i].sum())] for i in range(n)]
    rows.append(["total"] + [str(v) for v in t.sum(0)] + [str(t.sum())])
    widths = [max(len(r[j]) for r in rows) for j in range(c + 2)]
    lines = [" ".join(s.rjust(w) for s, w in zip(r, widths)) for r in rows]
    rule = "-" * len(lines[0])
    return "\n".join([lines[0], rule, *lines[1:-1], rule, lines[-1]])


def node_data(x, y, parts: Sequence[np.ndarray]) -> NodeData:
    """Node-stacked (zero-padded) training data for the engine, via ``stack_node_data``;
    checked with :meth:`NodeData.validate` (every node has 1..M rows)."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
    out = []
    for i, p in enumerate(parts):
        p = np.asarray(p)
        if p.ndim != 1 or (p.size and (not np.issubdtype(p.dtype, np.integer) or p.min() < 0 or p.max() >= len(y))):
            raise ValueError(f"parts[{i}] must be a 1-D array of row indices in 0..{len(y) - 1}, "
                             f"got {p.dtype} {p.shape} {np.ravel(p)[:5].tolist()}...")
        out.append(p.astype(np.int64))
    return stack_node_data([x[p] for p in out], [y[p] for p in out]).validate()
