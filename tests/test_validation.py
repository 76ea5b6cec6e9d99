"""Every input-validation rule: the error type and a message that names the bad value
(the offending node, edge, entry or setting) and, where useful, what would be valid.

House rule (preamble): clear errors for bad input that name the bad value and what
would be valid. ``TopologyError`` is a ``ValueError`` subclass.
"""

from __future__ import annotations

import re

import jax
import networkx as nx
import numpy as np
import optax
import pytest

from ecl_jax import engine as eng
from ecl_jax import masks as mk
from ecl_jax import topology as tp
from ecl_jax.algorithms import (
    ECLConfig,
    centralized,
    dsgd,
    ecl_admm,
    ecl_isvr,
    ecl_pdmm,
    gossip,
    gradient_tracking,
    local_sgd,
    pairwise_gossip,
)

TE = tp.TopologyError


def _adj(n, edges):
    a = np.zeros((n, n), int)
    for u, v in edges:
        a[u, v] = a[v, u] = 1
    return a


def _asym():
    a = _adj(4, [(0, 1), (1, 2), (2, 3)])
    a[3, 1] = 1  # (3, 1) set, (1, 3) not
    return a


def _self_loop():
    a = _adj(4, [(0, 1), (1, 2), (2, 3)])
    a[2, 2] = 1
    return a


TOPOLOGY_CASES = {
    # id: (thunk, exception, regex that must appear in the message)
    "adjacency_not_square": (lambda: tp.from_adjacency(np.zeros((3, 4))), TE, r"square.*\(3, 4\)"),
    "adjacency_1d": (lambda: tp.from_adjacency(np.zeros(4)), TE, r"square.*\(4,\)"),
    "adjacency_asymmetric": (lambda: tp.from_adjacency(_asym()), TE, r"not symmetric: entry \((1, 3|3, 1)\) = [01] but \((3, 1|1, 3)\) = [01]"),
    "adjacency_self_loop": (lambda: tp.from_adjacency(_self_loop()), TE, r"self loop at node 2"),
    "adjacency_disconnected": (
        lambda: tp.from_adjacency(_adj(5, [(0, 1), (1, 2), (3, 4)])),
        TE,
        r"not connected.*node 3",
    ),
    "adjacency_isolated_node": (lambda: tp.from_adjacency(_adj(4, [(0, 1), (1, 2)])), TE, r"not connected.*node 3"),
    "adjacency_one_node": (lambda: tp.from_adjacency(np.zeros((1, 1))), TE, r"at least 2 nodes.*1"),
    "adjacency_entry_2": (lambda: tp.from_adjacency(2 * _adj(3, [(0, 1), (1, 2)])), TE, r"entry \(0, 1\) = 2"),
    "adjacency_entry_half": (
        lambda: tp.from_adjacency(np.array([[0, 0.5], [0.5, 0]])),
        TE,
        r"entry \(0, 1\) = .*0\.5.*0/1",
    ),
    "adjacency_strings": (lambda: tp.from_adjacency(np.array([["0", "1"], ["1", "0"]])), TE, r"boolean or 0/1.*dtype"),
    "edges_one_node": (lambda: tp.from_edges(1, []), TE, r"at least 2 nodes.*n_nodes=1"),
    "edges_n_not_int": (lambda: tp.from_edges(4.0, [(0, 1)]), TE, r"n_nodes must be an integer.*4\.0"),
    "edges_out_of_range": (lambda: tp.from_edges(4, [(0, 1), (1, 2), (2, 7)]), TE, r"edge \(2, 7\).*0\.\.3"),
    "edges_negative": (lambda: tp.from_edges(4, [(0, 1), (-1, 2)]), TE, r"edge \(-1, 2\).*0\.\.3"),
    "edges_self_loop": (lambda: tp.from_edges(3, [(0, 1), (1, 1), (1, 2)]), TE, r"self loop at node 1"),
    "edges_duplicate": (lambda: tp.from_edges(3, [(0, 1), (1, 2), (1, 0)]), TE, r"duplicate edge \(0, 1\)"),
    "edges_disconnected": (lambda: tp.from_edges(4, [(0, 1), (2, 3)]), TE, r"not connected.*node 2.*2 connected components"),
    "edges_bad_shape": (lambda: tp.from_edges(3, [(0, 1, 2)]), TE, r"\(u, v\) pairs.*\(1, 3\)"),
    "edges_non_integer": (lambda: tp.from_edges(3, [(0.5, 1), (1, 2)]), TE, r"edge \(0\.5, 1\.0\).*non-integer"),
    "ring_n1": (lambda: tp.ring(1), TE, r"n must be an integer >= 2, got 1"),
    "ring_bool": (lambda: tp.ring(True), TE, r"n must be an integer"),
    "multiplex_hop_too_long": (lambda: tp.multiplex_ring(5, (1, 5)), TE, r"skip length 5.*1\.\.4"),
    # topology's own check or the shared validation.check_int (which words minimum 1 as "positive")
    "multiplex_hops_0": (lambda: tp.multiplex_ring(5, 0), TE, r"hops must be (an integer >= 1|a positive integer), got 0"),
    "torus_rows_1": (lambda: tp.torus(1, 5), TE, r"rows must be an integer >= 2, got 1"),
    "star_bad_center": (lambda: tp.star(4, center=4), TE, r"center.*0\.\.3.*4"),
    "er_bad_p": (lambda: tp.erdos_renyi(5, 0.0), TE, r"p must be in \(0, 1\], got 0\.0"),
    "er_never_connected": (lambda: tp.erdos_renyi(30, 0.01, max_tries=3), TE, r"no connected G\(n=30, p=0\.01\)"),
    "regular_odd": (lambda: tp.random_regular(5, 3), TE, r"n=5, d=3.*n\*d even"),
    "regular_d_too_big": (lambda: tp.random_regular(4, 4), TE, r"n=4, d=4.*d < n"),
    "networkx_directed": (lambda: tp.from_networkx(nx.DiGraph([(0, 1), (1, 0)])), TE, r"directed"),
    "networkx_self_loop": (lambda: tp.from_networkx(nx.Graph([("a", "b"), ("b", "b")])), TE, r"self loop at node 'b'"),
    "networkx_disconnected": (lambda: tp.from_networkx(nx.Graph([(0, 1), (2, 3)])), TE, r"not connected"),
    "bad_layout": (lambda: tp.ring(4, layout="dense"), ValueError, r"layout.*'dense'"),
    "not_an_edge": (lambda: tp.ring(5).directed_index(0, 2), TE, r"\(0, 2\) is not an edge"),
}


@pytest.mark.parametrize("case", list(TOPOLOGY_CASES))
def test_topology_validation(case):
    thunk, exc, pattern = TOPOLOGY_CASES[case]
    with pytest.raises(exc) as info:
        thunk()
    assert re.search(pattern, str(info.value)), f"message {str(info.value)!r} does not match {pattern!r}"


def test_topology_error_is_value_error():
    assert issubclass(TE, ValueError)
    with pytest.raises(ValueError):
        tp.from_edges(3, [(0, 1)])


RING8 = tp.ring(8)
KEY = jax.random.PRNGKey(0)

MASK_CASES = {
    "p_zero": (lambda: mk.BernoulliEdges(p=0.0), ValueError, r"p must be a probability in \(0, 1\], got 0\.0"),
    "p_above_one": (lambda: mk.BernoulliEdges(p=1.5), ValueError, r"p must be .*1\.5"),
    "p_string": (lambda: mk.BernoulliEdges(p="0.5"), ValueError, r"p must be .*'0\.5'"),
    "K_zero": (lambda: mk.BernoulliEdges(K=0), ValueError, r"K must be a positive integer, got 0"),
    "K_float": (lambda: mk.BernoulliEdges(K=2.5), ValueError, r"K must be a positive integer, got 2\.5"),
    "p_and_K": (lambda: mk.BernoulliEdges(p=0.5, K=2), ValueError, r"exactly one of p or K.*p=0\.5, K=2"),
    "neither_p_nor_K": (lambda: mk.BernoulliEdges(), ValueError, r"exactly one of p or K.*p=None, K=None"),
    "failure_one": (lambda: mk.BernoulliEdges(p=0.5, failure_prob=1.0), ValueError, r"failure_prob.*\[0, 1\).*1\.0"),
    "failure_negative": (lambda: mk.AlwaysEdges(failure_prob=-0.1), ValueError, r"failure_prob.*-0\.1"),
    "slots_failure": (lambda: mk.FixedSlotEdges(K=4, failure_prob=2.0), ValueError, r"failure_prob.*2\.0"),
    "rr_failure": (lambda: mk.RoundRobinEdges(failure_prob=1.0), ValueError, r"failure_prob"),
    "slots_K_zero": (lambda: mk.FixedSlotEdges(K=0), ValueError, r"K must be a positive integer, got 0"),
    "slots_out_of_range": (lambda: mk.FixedSlotEdges(K=4, slots=(0, 1, 4)), ValueError, r"slots.*\[0, 4\).*\(0, 1, 4\)"),
    "slots_negative": (lambda: mk.FixedSlotEdges(K=4, slots=(0, -1)), ValueError, r"slots.*\[0, 4\)"),
    "slots_2d": (lambda: mk.FixedSlotEdges(K=4, slots=((0, 1), (1, 2))), ValueError, r"1-D sequence"),
    "slots_non_integer": (lambda: mk.FixedSlotEdges(K=4, slots=(0.5, 1.0)), ValueError, r"integers in \[0, 4\)"),
    "slots_wrong_count": (
        lambda: mk.FixedSlotEdges(K=4, slots=(0, 1, 2))(KEY, 0, RING8),
        ValueError,
        r"slots has 3 entries but ring8 has 16 directed edges",
    ),
    "rr_interval_zero": (lambda: mk.RoundRobinEdges(interval=0), ValueError, r"interval must be a positive integer, got 0"),
    "rr_negative_offset": (lambda: mk.RoundRobinEdges(offsets=(0, -2)), ValueError, r"offsets.*non-negative.*-2"),
    "rr_wrong_offsets": (
        lambda: mk.RoundRobinEdges(offsets=(0, 1, 2))(KEY, 0, RING8),
        ValueError,
        r"offsets has 3 entries.*8",
    ),
    "array_edges_1d": (lambda: mk.ArrayEdges(np.ones(8, bool)), ValueError, r"\[T, E\].*\(8,\)"),
    "array_edges_columns": (
        lambda: mk.ArrayEdges(np.ones((3, 5), bool))(KEY, 0, RING8),
        ValueError,
        r"5 columns but ring8 has 8 edges",
    ),
    "array_nodes_3d": (lambda: mk.ArrayNodes(np.ones((2, 2, 2), bool)), ValueError, r"\[T, N\].*\(2, 2, 2\)"),
    "array_nodes_columns": (
        lambda: mk.ArrayNodes(np.ones((3, 5), bool))(KEY, 0, 8),
        ValueError,
        r"5 columns, expected 8 nodes",
    ),
    "function_edges_shape": (
        lambda: mk.FunctionEdges(lambda k, s, t: np.ones(3, bool))(KEY, 0, RING8),
        ValueError,
        r"shape \(3,\), expected \(8,\)",
    ),
    "function_nodes_shape": (
        lambda: mk.FunctionNodes(lambda k, s, n: np.ones(3, bool))(KEY, 0, 8),
        ValueError,
        r"shape \(3,\), expected \(8,\)",
    ),
    "bernoulli_nodes_p": (lambda: mk.BernoulliNodes(p=0.0), ValueError, r"p must be a probability.*0\.0"),
    "schedule_string_unknown": (lambda: mk.edge_schedule_from_string("gossipy:K=2"), ValueError, r"unknown edge schedule 'gossipy'.*valid"),
    "schedule_string_bad_arg": (lambda: mk.edge_schedule_from_string("always:K=2"), ValueError, r"bad arguments.*'always'"),
}


@pytest.mark.parametrize("case", list(MASK_CASES))
def test_mask_validation(case):
    thunk, exc, pattern = MASK_CASES[case]
    with pytest.raises(exc) as info:
        thunk()
    assert re.search(pattern, str(info.value)), f"message {str(info.value)!r} does not match {pattern!r}"


ALGORITHM_CASES = {
    "lr_zero": (lambda: ecl_pdmm(lr=0.0), ValueError, r"lr .*positive.*got 0\.0"),
    "lr_negative": (lambda: ecl_admm(lr=-0.1), ValueError, r"lr .*positive.*-0\.1"),
    "lr_inf": (lambda: ecl_pdmm(lr=float("inf")), ValueError, r"lr .*finite.*inf"),
    "eta_zero": (lambda: ecl_pdmm(lr=0.1, eta=0.0), ValueError, r"eta must be a positive.*0\.0"),
    "eta_negative": (lambda: ecl_admm(lr=0.1, eta=-1.0), ValueError, r"eta must be a positive.*-1\.0"),
    "theta_zero": (lambda: ECLConfig(lr=0.1, theta=0.0), ValueError, r"theta must be in \(0, 1\].*0\.0"),
    "theta_above_one": (lambda: ECLConfig(lr=0.1, theta=1.5), ValueError, r"theta must be in \(0, 1\].*1\.5"),
    "pdmm_theta_not_one": (
        lambda: ecl_pdmm(lr=0.1, theta=0.5),
        ValueError,
        r"ecl_pdmm fixes theta = 1.*theta=0\.5.*ecl_admm",
    ),
    "rho_negative": (lambda: ecl_pdmm(lr=0.1, rho=-0.1), ValueError, r"rho must be >= 0, got -0\.1"),
    "eta_rule_unknown": (lambda: ecl_pdmm(lr=0.1, eta_rule="adaptive"), ValueError, r"eta_rule must be one of.*'adaptive'"),
    "isvr_without_K": (
        lambda: ECLConfig(lr=0.1, eta_rule="isvr_paper"),
        ValueError,
        r"eta_rule='isvr_paper' needs an integer K >= 2.*K=None",
    ),
    "isvr_code_without_K": (lambda: ECLConfig(lr=0.1, eta_rule="isvr_code"), ValueError, r"needs an integer K >= 1.*K=None"),
    "isvr_paper_K1": (lambda: ecl_isvr(lr=0.1, K=1), ValueError, r"K >= 2.*K=1"),
    "isvr_bad_variant": (lambda: ecl_isvr(lr=0.1, K=8, variant="sgd"), ValueError, r"variant must be 'pdmm' or 'admm', got 'sgd'"),
    "isvr_bad_rule": (lambda: ecl_isvr(lr=0.1, K=8, eta_rule="poster"), ValueError, r"eta_rule must be 'paper' or 'code', got 'poster'"),
    "gcoef_wrong_rule": (
        lambda: ecl_pdmm(lr=0.1, gradient_coefficient=True),
        ValueError,
        r"gradient_coefficient=True.*isvr_code.*got eta_rule='constant'",
    ),
    "gcoef_isvr_paper": (
        lambda: ecl_isvr(lr=0.1, K=8, gradient_coefficient=True),
        ValueError,
        r"gradient_coefficient.*eta_rule='isvr_paper'",
    ),
    "c_zero": (lambda: ECLConfig(lr=0.1, c=0.0), ValueError, r"c must be > 0, got 0\.0"),
    "gossip_optimizer_type": (lambda: gossip(optimizer="sgd"), TypeError, r"optax\.GradientTransformation, got str"),
    "dsgd_optimizer_type": (lambda: dsgd(optimizer=optax.sgd), TypeError, r"GradientTransformation, got function"),
    "gt_optimizer_type": (lambda: gradient_tracking(optimizer=0.1), TypeError, r"got float"),
    "gossip_lr_zero": (lambda: gossip(0.0), ValueError, r"lr must be a positive.*0\.0"),
    "local_lr_negative": (lambda: local_sgd(-1.0), ValueError, r"lr must be a positive.*-1\.0"),
    "pairwise_lr_nan": (lambda: pairwise_gossip(float("nan")), ValueError, r"lr must be a positive finite.*nan"),
    "central_no_lr": (lambda: centralized(), ValueError, r"give a learning rate lr or an optax optimizer"),
}


@pytest.mark.parametrize("case", list(ALGORITHM_CASES))
def test_algorithm_config_validation(case):
    thunk, exc, pattern = ALGORITHM_CASES[case]
    with pytest.raises(exc) as info:
        thunk()
    assert re.search(pattern, str(info.value)), f"message {str(info.value)!r} does not match {pattern!r}"


def test_valid_configs_pass():
    # the boundaries that are allowed
    ECLConfig(lr=0.1, theta=1.0)
    assert ecl_pdmm(lr=0.1, theta=1.0).config.theta == 1.0  # the runner may pass theta=1 through
    ECLConfig(lr=0.1, rho=0.0)
    ECLConfig(lr=lambda t: 0.1)  # schedule
    ECLConfig(lr=0.1, eta_rule="isvr_code", K=1)
    ecl_isvr(lr=0.1, K=8, eta_rule="code", gradient_coefficient=True)
    gossip(optimizer=optax.sgd(0.1))
    mk.BernoulliEdges(p=1.0)
    mk.AlwaysEdges(failure_prob=0.0)


@pytest.mark.parametrize(
    "make", [lambda: ecl_pdmm(lr=0.1), lambda: ecl_isvr(lr=0.1, K=4), lambda: gossip(0.1), lambda: dsgd(0.1),
             lambda: pairwise_gossip(0.1), lambda: gradient_tracking(0.1), lambda: local_sgd(0.1),
             lambda: centralized(0.1)]
)
def test_params_without_node_axis(make):
    alg = make()
    topo = tp.ring(4)
    with pytest.raises(ValueError, match=r"\['w'\] has shape \(3, 2\).*node axis first, of size N=4"):
        alg.init({"b": np.zeros((4,), np.float32), "w": np.zeros((3, 2), np.float32)}, topo)
    with pytest.raises(ValueError, match=r"shape \(\).*N=4"):
        alg.init({"s": np.float32(1.0)}, topo)
    alg.init({"b": np.zeros((4,), np.float32), "w": np.zeros((4, 2), np.float32)}, topo)  # correct shapes pass


def _loss(w, x, y, rng):
    return 0.5 * (x @ w - y) ** 2


def _engine(**kw):
    return eng.Engine(local_sgd(0.1), tp.ring(4), _loss, **kw)


ENGINE_CASES = {
    "batch_zero": (lambda: _engine(batch_size=0), ValueError, r"batch_size must be a positive integer or None.*got 0"),
    "batch_float": (lambda: _engine(batch_size=2.5), ValueError, r"batch_size.*2\.5"),
    "batch_bool": (lambda: _engine(batch_size=True), ValueError, r"batch_size.*True"),
    "eval_every_zero": (lambda: _engine(eval_every=0), ValueError, r"eval_every must be a positive integer, got 0"),
    "eval_every_float": (lambda: _engine(eval_every=10.0), ValueError, r"eval_every.*10\.0"),
    "steps_negative": (
        lambda: _engine().run(np.zeros((4, 2)), _data(4), -1, KEY),
        ValueError,
        r"steps must be a non-negative integer, got -1",
    ),
    "steps_float": (lambda: _engine().run(np.zeros((4, 2)), _data(4), 10.0, KEY), ValueError, r"steps.*10\.0"),
    "data_wrong_nodes": (
        lambda: _engine().run(np.zeros((4, 2)), _data(3), 10, KEY),
        ValueError,
        r"data\.x has leading size 3, expected N=4 nodes",
    ),
    "data_count_wrong_nodes": (
        lambda: _engine().run(np.zeros((4, 2)), _data(4)._replace(count=np.full(5, 6, np.int32)), 10, KEY),
        ValueError,
        r"data\.count has leading size 5, expected N=4",
    ),
    "data_rows_mismatch": (
        lambda: _engine().run(np.zeros((4, 2)), _data(4)._replace(y=np.zeros((4, 5))), 10, KEY),
        ValueError,
        r"6 rows per node but data\.y has 5",
    ),
    "params_wrong_nodes": (
        lambda: _engine().run(np.zeros((3, 2)), _data(4), 10, KEY),
        ValueError,
        r"shape \(3, 2\).*N=4",
    ),
    "stack_empty_node": (
        lambda: eng.stack_node_data([np.zeros((2, 2)), np.zeros((0, 2))], [np.zeros(2), np.zeros(0)]),
        ValueError,
        r"node 1 has no data",
    ),
    "stack_length_mismatch": (
        lambda: eng.stack_node_data([np.zeros((2, 2)), np.zeros((3, 2))], [np.zeros(2), np.zeros(2)]),
        ValueError,
        r"node 1: 3 inputs but 2 labels",
    ),
    "stack_node_count": (
        lambda: eng.stack_node_data([np.zeros((2, 2))], [np.zeros(2), np.zeros(2)]),
        ValueError,
        r"one x and one y array per node, got 1 and 2",
    ),
}


def _data(n):
    return eng.NodeData(np.ones((n, 6, 2), np.float32), np.zeros((n, 6), np.float32), np.full(n, 6, np.int32))


@pytest.mark.parametrize("case", list(ENGINE_CASES))
def test_engine_validation(case):
    thunk, exc, pattern = ENGINE_CASES[case]
    with pytest.raises(exc) as info:
        thunk()
    assert re.search(pattern, str(info.value)), f"message {str(info.value)!r} does not match {pattern!r}"


# ------------------------------------------------------------ the shared integer rule
def test_is_int_accepts_python_and_numpy_integers_never_bools():
    from ecl_jax.validation import is_int

    for v in (0, -3, 7, np.int32(4), np.int64(-1), np.uint8(2)):
        assert is_int(v), v
    for v in (True, False, np.bool_(True), 2.0, np.float32(2), "2", None, [1], np.array(3)):
        assert not is_int(v), v
    assert not is_int(np.int64(3), allow_numpy=False) and is_int(3, allow_numpy=False)


@pytest.mark.parametrize(
    "kwargs, value, pattern",
    [
        (dict(minimum=1), 0, r"^x must be a positive integer, got 0$"),
        (dict(minimum=0), -1, r"^x must be a non-negative integer, got -1$"),
        (dict(minimum=2), 1, r"^x must be an integer >= 2, got 1$"),
        (dict(minimum=1, maximum=10), 11, r"^x must be an integer in 1\.\.10, got 11$"),
        (dict(maximum=5), 6, r"^x must be an integer <= 5, got 6$"),
        (dict(), 2.5, r"^x must be an integer, got 2\.5$"),
        (dict(minimum=1), True, r"^x must be a positive integer, got True$"),
        (dict(minimum=1, allow_none=True, note="full batch"), 0,
         r"^x must be a positive integer or None \(full batch\), got 0$"),
        (dict(minimum=1, allow_numpy=False), np.int64(3), r"^x must be a positive integer, got np\.int64\(3\)$"),
        (dict(minimum=1), "3", r"^x must be a positive integer, got '3'$"),
    ],
)
def test_check_int_names_the_setting_the_range_and_the_value(kwargs, value, pattern):
    from ecl_jax.validation import check_int

    with pytest.raises(ValueError) as info:
        check_int("x", value, **kwargs)
    assert re.search(pattern, str(info.value)), str(info.value)


def test_check_int_returns_python_ints_and_raises_the_callers_class():
    from ecl_jax.config import ConfigError
    from ecl_jax.errors import DataError
    from ecl_jax.validation import check_int

    out = check_int("n", np.int64(5), minimum=1, maximum=5)
    assert out == 5 and type(out) is int
    assert check_int("n", None, allow_none=True) is None
    assert check_int("n", 0, minimum=0) == 0
    for error in (ConfigError, DataError, TE):
        with pytest.raises(error, match="n must be an integer >= 2, got 1"):
            check_int("n", 1, minimum=2, error=error)
    with pytest.raises(ValueError, match="got None"):
        check_int("n", None, minimum=1)


@pytest.mark.parametrize(
    "thunk, exc, pattern",
    [
        (lambda: mk.FixedSlotEdges(K=np.int64(0)), ValueError, r"K must be a positive integer, got np\.int64\(0\)"),
        (lambda: _engine(eval_every=np.int32(0)), ValueError, r"eval_every must be a positive integer"),
        (lambda: _engine().run(np.zeros((4, 2)), _data(4), True, KEY), ValueError, r"steps must be .*True"),
    ],
)
def test_call_sites_use_the_shared_rule(thunk, exc, pattern):
    with pytest.raises(exc, match=pattern):
        thunk()


def test_numpy_integer_settings_become_python_ints():
    engine = _engine(batch_size=np.int64(3), eval_every=np.int32(7))
    assert (engine.batch_size, engine.eval_every) == (3, 7)
    assert type(engine.batch_size) is int and type(engine.eval_every) is int
