"""Partitioners: disjointness, coverage, class restrictions, seeds, errors, and the ICML 2021
split against the per-node counts of docs/reproduction_setups.md#icml21-data-split."""

import numpy as np
import pytest

from ecl_jax import partition as P


def _labels(n_per_class=(50,) * 10, seed=0):
    y = np.repeat(np.arange(len(n_per_class)), n_per_class)
    return np.random.default_rng(seed).permutation(y)


def _assert_disjoint_cover(parts, n, cover=True):
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(allidx), "a sample is on two nodes"
    assert allidx.min() >= 0 and allidx.max() < n
    if cover:
        assert len(allidx) == n, "some samples are on no node"


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


# --------------------------------------------------------------------------- iid
def test_iid_disjoint_balanced_reproducible():
    y = _labels()
    parts = P.iid(y, 7, seed=3)
    assert len(parts) == 7
    _assert_disjoint_cover(parts, len(y))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert _same(parts, P.iid(y, 7, seed=3))
    assert not _same(parts, P.iid(y, 7, seed=4))
    assert all(np.all(np.diff(p) > 0) for p in parts)  # ascending indices


def test_iid_too_many_nodes():
    with pytest.raises(ValueError, match="n_nodes <= 5"):
        P.iid(np.arange(5) % 2, 6, seed=0)


# --------------------------------------------------------------------------- explicit class lists
def test_kdd20_mnist_lists_disjoint_and_restricted():
    y = _labels()
    parts = P.by_class_lists(y, P.KDD20_MNIST_CLASSES, seed=0)
    _assert_disjoint_cover(parts, len(y))  # the three lists cover all 10 classes exactly once
    for p, cl in zip(parts, P.KDD20_MNIST_CLASSES):
        assert set(np.unique(y[p])) == set(cl)
        assert len(p) == 50 * len(cl)


def test_kdd20_cifar_shared_classes_split_disjointly():
    y = _labels((60,) * 10)
    parts = P.by_class_lists(y, P.KDD20_CIFAR10_CLASSES, seed=1)
    _assert_disjoint_cover(parts, len(y))
    table = P.count_table(y, parts, 10)
    # classes 0..3 are held by all three nodes: 60 samples -> 20 each
    assert (table[:, :4] == 20).all()
    # classes 4..9 are unique to one node: all 60 samples there
    for node, cl in enumerate(P.KDD20_CIFAR10_CLASSES):
        for c in set(cl) - {0, 1, 2, 3}:
            assert table[node, c] == 60
        assert set(np.flatnonzero(table[node])) == set(cl)
    assert not _same(parts, P.by_class_lists(y, P.KDD20_CIFAR10_CLASSES, seed=2))


def test_class_lists_replace_gives_every_holder_all_samples():
    y = _labels((60,) * 10)
    parts = P.by_class_lists(y, P.KDD20_CIFAR10_CLASSES, replace=True)
    for p, cl in zip(parts, P.KDD20_CIFAR10_CLASSES):
        assert np.array_equal(p, np.flatnonzero(np.isin(y, cl)))


def test_class_lists_samples_per_node():
    y = _labels()
    parts = P.by_class_lists(y, [[0, 1], [2]], seed=0, samples_per_node=30)
    assert [len(p) for p in parts] == [30, 30]
    assert set(np.unique(y[parts[0]])) <= {0, 1} and set(np.unique(y[parts[1]])) == {2}
    assert all(len(np.unique(p)) == 30 for p in parts)
    with pytest.raises(ValueError, match="node 1 has only 50 samples"):
        P.by_class_lists(y, [[0, 1], [2]], samples_per_node=80)
    big = P.by_class_lists(y, [[0, 1], [2]], samples_per_node=80, replace=True)
    assert [len(p) for p in big] == [80, 80] and set(np.unique(y[big[1]])) == {2}


def test_class_lists_errors():
    y = _labels()
    with pytest.raises(ValueError, match="node 1 has an empty class list"):
        P.by_class_lists(y, [[0], []])
    with pytest.raises(ValueError, match=r"node 0 lists class\(es\) \[12\]"):
        P.by_class_lists(y, [[12], [1]])
    # one sample of class 9 shared by two nodes: the second holder gets nothing
    y1 = np.array([0, 0, 9])
    with pytest.raises(ValueError, match="node 1 received no samples.*replace=True"):
        P.by_class_lists(y1, [[9], [9]])


# --------------------------------------------------------------------------- ICML 2021
# docs/reproduction_setups.md#icml21-data-split: per-node training samples and missing classes,
# re-run of split_load_datas
ICML_CIFAR = [6136, 6091, 6139, 6537, 6742, 6172, 6090, 6093]
ICML_FASHION = [7365, 7308, 7369, 7845, 8092, 7407, 7307, 7307]
ICML_MISSING = [{0, 9}, {2, 6}, {1, 3}, {7, 8}, {4, 5}, {0, 9}, {2, 6}, {1, 3}]


def test_icml21_class_lists_match_papers():
    lists = P.icml21_class_lists()
    assert lists[0] == [7, 8, 2, 6, 4, 5, 1, 3]  # shuffled order [7,8,2,6,4,5,1,3,0,9], start 0
    assert lists[1] == [4, 5, 1, 3, 0, 9, 7, 8]  # start 4
    assert lists[3] == [2, 6, 4, 5, 1, 3, 0, 9]  # start 12 mod 10 = 2
    for cl, missing in zip(lists, ICML_MISSING):
        assert set(range(10)) - set(cl) == missing


@pytest.mark.parametrize("per_class,expected", [(6000, ICML_FASHION), (5000, ICML_CIFAR)])
def test_icml21_counts_match_papers_exactly(per_class, expected):
    y = _labels((per_class,) * 10, seed=5)
    parts = P.icml21_classes(y)
    assert [len(p) for p in parts] == expected
    _assert_disjoint_cover(parts, len(y))
    table = P.count_table(y, parts, 10)
    for node, missing in enumerate(ICML_MISSING):
        assert set(np.flatnonzero(table[node] == 0)) == missing
    # classes 4, 5, 7, 8 are held by 7 nodes, the others by 6 (docs/reproduction_setups.md#icml21-data-split)
    assert list((table > 0).sum(0)) == [6, 6, 6, 6, 7, 7, 6, 7, 7, 6]
    # weights U(0.8, 1): with h holders a share lies in [0.8/(0.8+h-1), 1/(1+0.8(h-1))]
    for c in range(10):
        h = int((table[:, c] > 0).sum())
        share = table[table[:, c] > 0, c] / per_class
        tol = h / per_class  # flooring; the remainder goes to the last holder
        assert share.min() >= 0.8 / (0.8 + h - 1) - tol and share.max() <= 1 / (1 + 0.8 * (h - 1)) + tol


def test_icml21_chunks_are_contiguous_in_dataset_order():
    y = _labels((300,) * 10, seed=2)
    parts = P.icml21_classes(y)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        holders = [n for n in range(8) if np.isin(idx, parts[n]).any()]
        pos = [np.flatnonzero(np.isin(idx, parts[n])) for n in holders]
        # holder k (ascending node index) holds the k-th contiguous block
        assert np.array_equal(np.concatenate(pos), np.arange(len(idx)))


def test_icml21_validation():
    with pytest.raises(ValueError, match="classes_per_node"):
        P.icml21_classes(_labels(), classes_per_node=10)
    with pytest.raises(ValueError, match="num_classes=5"):
        P.icml21_classes(_labels(), num_classes=5, classes_per_node=3)


# --------------------------------------------------------------------------- k classes per node
@pytest.mark.parametrize("n_nodes,k", [(5, 2), (8, 2), (4, 3), (3, 1)])
def test_k_classes_per_node(n_nodes, k):
    y = _labels()
    parts = P.k_classes_per_node(y, n_nodes, k, seed=7)
    table = P.count_table(y, parts, 10)
    assert ((table > 0).sum(1) == k).all(), "every node must hold exactly k classes"
    held = (table > 0).sum(0)
    if n_nodes * k >= 10:
        assert (held >= 1).all(), "every class must be held"
        _assert_disjoint_cover(parts, len(y))
    else:
        assert held.sum() == n_nodes * k and held.max() == 1
        _assert_disjoint_cover(parts, len(y), cover=False)
    assert held.max() - held.min() <= 1 or n_nodes * k < 10
    assert _same(parts, P.k_classes_per_node(y, n_nodes, k, seed=7))
    assert not _same(parts, P.k_classes_per_node(y, n_nodes, k, seed=8))


def test_k_classes_errors():
    with pytest.raises(ValueError, match=r"k must be an integer in 1..10"):
        P.k_classes_per_node(_labels(), 4, 11)
    # 4 nodes, 1 class each, 2 classes: each class has 2 holders; class 0 has 1 sample
    y = np.array([0] + [1] * 10)
    with pytest.raises(ValueError, match="node [0-3] received no samples.*smaller k or fewer nodes"):
        P.k_classes_per_node(y, 4, 1)


# --------------------------------------------------------------------------- Dirichlet
def _skew(y, parts, c=10):
    """Mean total-variation distance between node label histograms and the global one."""
    glob = np.bincount(y, minlength=c) / len(y)
    t = P.count_table(y, parts, c)
    return np.mean(0.5 * np.abs(t / t.sum(1, keepdims=True) - glob).sum(1))


def test_dirichlet_properties_and_skew_grows_as_alpha_shrinks():
    y = _labels((200,) * 10)
    parts = P.dirichlet(y, 6, 0.3, seed=1, min_size=5)
    _assert_disjoint_cover(parts, len(y))
    assert min(len(p) for p in parts) >= 5
    assert _same(parts, P.dirichlet(y, 6, 0.3, seed=1, min_size=5))
    assert not _same(parts, P.dirichlet(y, 6, 0.3, seed=2, min_size=5))
    skews = [np.mean([_skew(y, P.dirichlet(y, 6, a, seed=s)) for s in range(5)]) for a in (0.05, 0.5, 5.0, 500.0)]
    assert skews[0] > skews[1] > skews[2] > skews[3]
    assert skews[0] > 0.5 and skews[3] < 0.05


def test_dirichlet_error_names_node_and_remedy():
    y = _labels((2,) * 10)
    with pytest.raises(ValueError, match=r"node \d+ got .*increase alpha"):
        P.dirichlet(y, 10, 0.001, seed=0, min_size=2, max_tries=3)
    with pytest.raises(ValueError, match="alpha must be a positive"):
        P.dirichlet(y, 2, 0.0)


# --------------------------------------------------------------------------- quantity skew
def test_quantity_skew_dirichlet_and_power_law():
    y = _labels((100,) * 10)
    parts = P.quantity_skew(y, 8, alpha=0.5, seed=0, min_size=10)
    _assert_disjoint_cover(parts, len(y))
    assert min(len(p) for p in parts) >= 10
    assert _same(parts, P.quantity_skew(y, 8, alpha=0.5, seed=0, min_size=10))
    assert not _same(parts, P.quantity_skew(y, 8, alpha=0.5, seed=1, min_size=10))

    def cv(a):
        return np.mean([np.std(s := [len(p) for p in P.quantity_skew(y, 8, alpha=a, seed=k)]) / np.mean(s)
                        for k in range(10)])
    assert cv(0.2) > cv(2.0) > cv(200.0)

    pw = P.quantity_skew(y, 5, power=1.0, seed=3, min_size=1)
    _assert_disjoint_cover(pw, len(y))
    sizes = np.sort([len(p) for p in pw])[::-1]
    expect = 1 + (1000 - 5) * (1 / np.arange(1, 6)) / np.sum(1 / np.arange(1, 6))
    assert np.all(np.abs(sizes - expect) <= 1)


def test_quantity_skew_needs_exactly_one_law():
    with pytest.raises(ValueError, match="exactly one of alpha"):
        P.quantity_skew(_labels(), 3, seed=0)
    with pytest.raises(ValueError, match="exactly one of alpha"):
        P.quantity_skew(_labels(), 3, alpha=1.0, power=1.0)


# --------------------------------------------------------------------------- dispatcher, tables
def test_partition_dispatcher():
    y = _labels()
    assert _same(P.partition(y, 4, "iid", seed=2), P.iid(y, 4, 2))
    assert _same(P.partition(y, 4, "dirichlet", seed=2, alpha=0.7), P.dirichlet(y, 4, 0.7, 2))
    assert _same(P.partition(y, 4, "k_classes", seed=2, k=3), P.k_classes_per_node(y, 4, 3, 2))
    assert _same(P.partition(y, 3, "kdd20_mnist", seed=1), P.by_class_lists(y, P.KDD20_MNIST_CLASSES, seed=1))
    assert _same(P.partition(y, 2, "classes", class_lists=[[0], [1, 2]]), P.by_class_lists(y, [[0], [1, 2]]))
    assert _same(P.partition(y, 8, "icml21"), P.icml21_classes(y))  # default seed 11
    with pytest.raises(ValueError, match=r"(?s)unknown partition method .zipf.*iid.*dirichlet.*quantity_skew"):
        P.partition(y, 4, "zipf")
    with pytest.raises(ValueError, match=r"unexpected argument\(s\) \['beta'\].*alpha"):
        P.partition(y, 4, "dirichlet", beta=1.0)
    with pytest.raises(ValueError, match="2 class lists given for n_nodes=3"):
        P.partition(y, 3, "classes", class_lists=[[0], [1]])
    with pytest.raises(ValueError, match="KDD 2020 split has 3 nodes"):
        P.partition(y, 4, "kdd20_cifar10")


def test_count_table_and_format():
    y = np.array([0, 1, 1, 2, 2, 2, 0])
    parts = [np.array([0, 1, 2]), np.array([3, 4, 5, 6])]
    t = P.count_table(y, parts, 4)
    expect = np.zeros((2, 4), int)
    for i, p in enumerate(parts):
        for j in p:
            expect[i, y[j]] += 1
    assert np.array_equal(t, expect) and t.shape == (2, 4)
    text = P.format_count_table(t)
    lines = text.splitlines()
    assert lines[0].split() == ["node", "0", "1", "2", "3", "total"]
    assert lines[2].split() == ["0", "1", "2", "0", "0", "3"]
    assert lines[3].split() == ["1", "1", "0", "3", "0", "4"]
    assert lines[-1].split() == ["total", "2", "2", "3", "0", "7"]
    with pytest.raises(ValueError, match="num_classes=2"):
        P.count_table(y, parts, 2)


def test_node_data_stacks_and_pads():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3, 3, 1)).astype(np.float32)
    y = _labels((4,) * 10)
    parts = P.quantity_skew(y, 3, alpha=1.0, seed=0)
    nd = P.node_data(x, y, parts)
    m = max(len(p) for p in parts)
    assert nd.x.shape == (3, m, 3, 3, 1) and nd.y.shape == (3, m)
    assert list(nd.count) == [len(p) for p in parts]
    for i, p in enumerate(parts):
        assert np.array_equal(nd.x[i, : len(p)], x[p]) and np.array_equal(nd.y[i, : len(p)], y[p])
        assert not nd.x[i, len(p):].any()


def test_bad_labels():
    with pytest.raises(ValueError, match="1-D"):
        P.iid(np.zeros((3, 2), int), 2)
    with pytest.raises(ValueError, match="non-negative"):
        P.iid(np.array([0, -1, 2]), 2)
    with pytest.raises(ValueError, match="n_nodes must be a positive integer"):
        P.iid(np.arange(4), 0)
