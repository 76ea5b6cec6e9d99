"""The engine's execution plan and its public lower / callbacks
(docs/design.md#engine-execution-plan, #engine-chunks-and-the-loop): the plan is a pure
function of the settings, the backend, N and the shapes; explicit settings are kept; the
KDD20-CNN path (python loop, unrolled gradients) is chosen on CPU; ``Engine.lower``
compiles either plan; callbacks run in order and a raising one stops the run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecl_jax import engine as eng
from ecl_jax import topology as tp
from ecl_jax.algorithms import ecl_pdmm, local_sgd

N, P = 4, 3
ON_CPU = jax.default_backend() == "cpu"


def _dense_loss(w, x, y, rng):
    return 0.5 * (x @ w - y) ** 2


def _conv_loss(w, x, y, rng):  # a 1-D convolution of each row with the weights
    out = jax.vmap(lambda r: jnp.convolve(r, w, mode="valid"))(x)
    return 0.5 * (out.sum(1) - y) ** 2


def _data(n=N, m=6):
    rng = np.random.default_rng(0)
    return eng.NodeData(rng.normal(size=(n, m, P)).astype(np.float32), rng.normal(size=(n, m)).astype(np.float32),
                        np.full(n, m, np.int32))


def _engine(loss=_dense_loss, n=N, **kw):
    kw = {"batch_size": 2, "eval_every": 5, **kw}
    return eng.Engine(local_sgd(0.01), tp.ring(n), loss, **kw)


def _plan(engine, n=N):
    carry = engine.init(np.zeros((n, P), np.float32), jax.random.PRNGKey(0))
    return engine.plan(carry, engine.check_data(_data(n)))


# ------------------------------------------------------------------ the plan
def test_dense_model_plans_scan_and_vmap():
    plan = _plan(_engine())
    assert (plan.loop, plan.node_grads) == ("scan", "vmap")
    assert isinstance(plan, eng.ExecutionPlan) and plan.reason
    text = str(plan)
    assert "\n" not in text and text.startswith("scan loop, vmapped node gradients (")
    if ON_CPU:
        assert "dense model" in plan.reason


def test_conv_model_plans_python_loop_and_unrolled_gradients_on_cpu():
    plan = _plan(_engine(_conv_loss))
    if not ON_CPU:
        assert (plan.loop, plan.node_grads) == ("scan", "vmap")
        return
    assert (plan.loop, plan.node_grads) == ("python", "unrolled")
    assert "convolutions" in plan.reason and "jax-ml/jax#12868" in plan.reason and f"N = {N} <= 128" in plan.reason
    assert str(plan).startswith("python loop, unrolled node gradients (")


def test_explicit_settings_are_kept():
    assert _plan(_engine(_conv_loss, loop="scan"))[:2] == ("scan", "vmap")
    assert _plan(_engine(_conv_loss, node_grads="vmap"))[:2] == ("python" if ON_CPU else "scan", "vmap")
    assert _plan(_engine(loop="python"))[:2] == ("python", "unrolled")  # auto grads follow the python loop
    assert _plan(_engine(loop="python", node_grads="vmap"))[:2] == ("python", "vmap")
    assert _plan(_engine(node_grads="unrolled"))[:2] == ("scan", "unrolled")
    assert "loop='scan' set explicitly" in _plan(_engine(_conv_loss, loop="scan")).reason


@pytest.mark.parametrize(
    "loop, grads, backend, n, conv, want",
    [
        ("auto", "auto", "cpu", 8, True, ("python", "unrolled")),
        ("auto", "auto", "cpu", 128, True, ("python", "unrolled")),
        ("auto", "auto", "cpu", 129, True, ("python", "vmap")),
        ("auto", "auto", "cpu", 8, False, ("scan", "vmap")),
        ("auto", "auto", "gpu", 8, None, ("scan", "vmap")),
        ("auto", "auto", "tpu", 8, True, ("scan", "vmap")),  # has_convolutions is only read on CPU
        ("scan", "auto", "cpu", 8, True, ("scan", "vmap")),
        ("python", "auto", "gpu", 8, None, ("python", "unrolled")),
        ("python", "vmap", "cpu", 8, True, ("python", "vmap")),
        ("auto", "unrolled", "cpu", 500, False, ("scan", "unrolled")),
    ],
)
def test_make_plan_is_a_pure_function_of_the_settings(loop, grads, backend, n, conv, want):
    plan = eng.make_plan(loop, grads, backend=backend, n_nodes=n, has_convolutions=conv)
    assert plan[:2] == want
    assert plan == eng.make_plan(loop, grads, backend=backend, n_nodes=n, has_convolutions=conv)
    if n == 129:
        assert "N = 129 > 128" in plan.reason


def test_make_plan_refuses_unknown_settings():
    with pytest.raises(ValueError, match="loop must be 'auto', 'scan' or 'python', got 'fori'"):
        eng.make_plan("fori", "auto", backend="cpu", n_nodes=4, has_convolutions=False)
    with pytest.raises(ValueError, match="node_grads must be 'auto', 'vmap' or 'unrolled', got 'pmap'"):
        eng.make_plan("auto", "pmap", backend="cpu", n_nodes=4, has_convolutions=False)


def test_plan_reads_only_shapes_and_is_recomputable():
    engine = _engine(_conv_loss)
    data = engine.check_data(_data())
    carry = engine.init(np.zeros((N, P), np.float32), jax.random.PRNGKey(0))
    first = engine.plan(carry, data)
    abstract = jax.eval_shape(engine.init, np.zeros((N, P), np.float32), jax.random.PRNGKey(0))
    assert engine.plan(abstract, data) == first  # ShapeDtypeStructs are enough
    assert _engine(_conv_loss).plan(carry, data) == first  # a fresh engine (empty memo) agrees
    done, _ = engine.run(None, data, 5, None, carry=carry)  # donates carry
    assert engine.plan(carry, data) == first == engine.plan(done, data)


# ------------------------------------------------------------------ lower
@pytest.mark.parametrize("loop", ["scan", "python"])
def test_lower_compiles_either_plan(loop):
    engine = eng.Engine(ecl_pdmm(0.05), tp.ring(N), _dense_loss, batch_size=2, eval_every=5, loop=loop)
    data = engine.check_data(_data())
    carry = engine.init(np.zeros((N, P), np.float32), jax.random.PRNGKey(0))
    lowered = engine.lower(carry, data, 12)
    assert isinstance(lowered, jax.stages.Lowered)
    text = lowered.compile().as_text()
    assert "HloModule" in text
    # the scan plan lowers the chunk (carry and metrics), the python plan the single step (carry)
    out = lowered.out_info
    if loop == "scan":
        assert isinstance(out[0], eng.Carry) and "consensus_distance" in out[1]
    else:
        assert isinstance(out, eng.Carry)
    # lowering reads shapes only: the carry is still usable, and lowering then running traces once
    assert engine.trace_count == 1
    _, hist = engine.run(None, data, 12, None, carry=carry)
    assert hist["step"].tolist() == [5, 10, 12]
    engine.lower(carry, data, 40)  # another total_steps (and a donated carry) reuses the trace
    assert engine.trace_count == 1


# ------------------------------------------------------------------ callbacks
def test_callbacks_run_in_order_after_every_chunk():
    calls = []
    engine = _engine()
    carry, hist = engine.run(
        np.zeros((N, P), np.float32), _data(), 12, jax.random.PRNGKey(0),
        callbacks=[lambda c, m: calls.append(("a", int(c.step), int(m["step"]))),
                   lambda c, m: calls.append(("b", int(c.step), int(m["step"])))],
    )
    assert calls == [("a", 5, 5), ("b", 5, 5), ("a", 10, 10), ("b", 10, 10), ("a", 12, 12), ("b", 12, 12)]
    assert hist["step"].tolist() == [5, 10, 12]


def test_a_raising_callback_stops_the_run():
    seen = []

    def stop(carry, metrics):
        if int(carry.step) >= 10:
            raise KeyboardInterrupt("enough")

    with pytest.raises(KeyboardInterrupt, match="enough"):
        _engine().run(np.zeros((N, P), np.float32), _data(), 100, jax.random.PRNGKey(0),
                      callbacks=[stop, lambda c, m: seen.append(int(c.step))])
    assert seen == [5]  # later callbacks of the raising chunk do not run, and no further chunk


def test_callbacks_must_be_a_sequence_of_callables():
    engine = _engine()
    with pytest.raises(TypeError, match="callbacks must be a sequence of callables"):
        engine.run(np.zeros((N, P), np.float32), _data(), 5, jax.random.PRNGKey(0), callbacks=lambda c, m: None)
    with pytest.raises(TypeError, match="callbacks must be a sequence of callables"):
        engine.run(np.zeros((N, P), np.float32), _data(), 5, jax.random.PRNGKey(0), callbacks=[3])


def test_engine_has_no_hidden_mode_state():
    engine = _engine()
    for name in ("_mode", "loop_mode", "_chunk"):
        assert not hasattr(engine, name), name


# ------------------------------------------------------------------ timing a chunk before a run
@pytest.mark.parametrize("loop", ["scan", "python"])
def test_time_chunk_compiles_once_and_leaves_the_run_unchanged(loop):
    """Engine.time_chunk (the runner's up-front estimate) runs on a copy: the run that follows
    compiles nothing more and ends bit-identical to a run without it."""
    data = _data()
    params0 = np.zeros((N, P), np.float32)
    results = []
    for timed in (False, True):
        engine = eng.Engine(ecl_pdmm(lr=0.05, eta=1.0), tp.ring(N), _dense_loss, batch_size=2, eval_every=5, loop=loop)
        carry = engine.init(params0, jax.random.PRNGKey(0))
        if timed:
            seconds = engine.time_chunk(carry, data, 20)
            assert 0 < seconds < 60 and engine.trace_count == 1
        carry, metrics = engine.run(params0, data, 20, jax.random.PRNGKey(0), carry=carry)
        assert engine.trace_count == 1  # the timed program is the one the run used
        results.append(([np.asarray(x) for x in jax.tree_util.tree_leaves(carry.state)], metrics["consensus_distance"]))
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(results[0][1], results[1][1])
