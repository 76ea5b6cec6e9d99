"""Hostile input through the Python API: data with NaN or inf in a valid row, booleans
where numbers are meant (data, Dirichlet alpha, power law), non-finite evaluation data.
Each is refused before anything is compiled, with a message naming the value and where
it is; NaN in padding rows, which are never sampled, stays allowed."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ecl_jax import engine as eng
from ecl_jax import partition as P
from ecl_jax import topology as tp
from ecl_jax.algorithms import local_sgd
from ecl_jax.errors import DataError
from ecl_jax.node_data import NodeData, check_finite
from ecl_jax.validation import check_number, is_number

COUNTS = [3, 2, 4, 1]


def _data(pad=0.0):
    rng = np.random.default_rng(0)
    x = np.full((4, 4, 2), pad, np.float32)
    y = np.full((4, 4), pad, np.float32)
    for i, c in enumerate(COUNTS):
        x[i, :c] = rng.normal(size=(c, 2))
        y[i, :c] = rng.normal(size=c)
    return x, y, np.asarray(COUNTS, np.int32)


def _loss(w, x, y, rng):
    return 0.5 * (x @ w - y) ** 2


def _engine():
    return eng.Engine(local_sgd(0.1), tp.ring(4), _loss, batch_size=2, eval_every=5)


@pytest.mark.parametrize("where, value", [("x", np.nan), ("x", np.inf), ("y", -np.inf), ("y", np.nan)])
def test_a_nan_or_inf_in_a_valid_row_is_refused_naming_node_and_row(where, value):
    x, y, count = _data()
    (x if where == "x" else y)[2, 3, ...] = value  # node 2's last valid row
    with pytest.raises(DataError, match=rf"NodeData\.{where} holds NaN or inf: node 2, row 3 \(one of its 4 valid rows\)"):
        NodeData.checked(x, y, count)
    engine = _engine()
    with pytest.raises(DataError, match=rf"NodeData\.{where} holds NaN or inf: node 2, row 3"):
        engine.run(np.zeros((4, 2), np.float32), NodeData(x, y, count), 5, jax.random.PRNGKey(0))
    assert engine.trace_count == 0  # refused before compiling


def test_nan_in_padding_rows_is_allowed_and_never_reaches_the_loss():
    x, y, count = _data(pad=np.nan)
    carry, hist = _engine().run(np.zeros((4, 2), np.float32), NodeData.checked(x, y, count), 10,
                                jax.random.PRNGKey(0))
    assert np.isfinite(np.asarray(carry.state.params)).all() and np.isfinite(hist["node_loss"]).all()


@pytest.mark.parametrize("where", ["x", "y"])
def test_boolean_data_is_refused(where):
    x, y, count = _data()
    arrays = {"x": x, "y": y}
    arrays[where] = arrays[where] > 0
    with pytest.raises(DataError, match=rf"NodeData\.{where} holds booleans \(dtype bool\); give numbers"):
        NodeData.checked(arrays["x"], arrays["y"], count)


def test_non_finite_evaluation_data_is_refused_naming_the_leaf():
    check_finite("eval_data", {"x": np.ones(3), "y": np.arange(3)})  # fine
    with pytest.raises(DataError, match=r"eval_data\['x'\] holds NaN or inf"):
        check_finite("eval_data", {"x": np.array([1.0, np.nan]), "y": np.arange(2)})
    x, y, count = _data()
    engine = _engine()
    with pytest.raises(DataError, match=r"eval_data\[1\] holds NaN or inf"):
        engine.run(np.zeros((4, 2), np.float32), NodeData(x, y, count), 5, jax.random.PRNGKey(0),
                   eval_data=(np.ones(2), np.array([np.inf])))
    assert engine.trace_count == 0


LABELS = np.arange(200) % 10


@pytest.mark.parametrize("call, needle", [
    (lambda a: P.dirichlet(LABELS, 4, a), "dirichlet: alpha must be a positive finite number"),
    (lambda a: P.quantity_skew(LABELS, 4, alpha=a), "quantity_skew: alpha must be a positive finite number"),
    (lambda a: P.quantity_skew(LABELS, 4, power=a), "quantity_skew: power must be a non-negative finite number"),
])
@pytest.mark.parametrize("bad", [True, np.bool_(True), np.nan, np.inf, "1", -1])
def test_partition_numbers_refuse_bools_and_non_finite_values(call, needle, bad):
    with pytest.raises(ValueError, match=needle) as err:
        call(bad)
    if isinstance(bad, (bool, np.bool_)):
        assert "a bool is not a number" in str(err.value)


def test_partition_numbers_accept_numpy_scalars():
    assert sum(p.size for p in P.dirichlet(LABELS, 4, np.float32(0.5))) == LABELS.size
    assert sum(p.size for p in P.quantity_skew(LABELS, 4, power=np.int64(1))) == LABELS.size


def test_the_number_rule():
    for v in (1, 1.5, np.float32(2), np.int8(-3), 0.0):
        assert is_number(v)
    for v in (True, np.bool_(False), np.nan, -np.inf, "1", None, [1], 1j):
        assert not is_number(v)
    assert check_number("a", 2, minimum=0, minimum_open=True) == 2.0
    with pytest.raises(ValueError, match=r"^a must be a positive finite number, got 0$"):
        check_number("a", 0, minimum=0, minimum_open=True)
    with pytest.raises(ValueError, match=r"^p must be a finite number > 0 and <= 1 \(a probability\), got 1\.5$"):
        check_number("p", 1.5, minimum=0, minimum_open=True, maximum=1, note="a probability")
    with pytest.raises(ValueError, match=r"got True \(a bool is not a number\)"):
        check_number("a", True)
