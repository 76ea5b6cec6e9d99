"""The training engine (docs/design.md#engine-one-step, #engine-chunks-and-the-loop,
#run-folders-and-checkpoints):
one compilation per run whatever T, bit-identical resumption from a saved carry,
metrics with the documented shapes and values, and minibatches that never touch the
padding rows of a node-stacked data set.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ecl_jax import engine as eng
from ecl_jax import masks as mk
from ecl_jax import topology as tp
from ecl_jax.algorithms import ECLConfig, ecl, ecl_pdmm, gradient_tracking, local_sgd

N, P = 4, 3


def _sq_loss(w, x, y, rng):
    """Per-example squared error; with an rng, a random per-example weight (dropout-like)."""
    losses = 0.5 * (x @ w - y) ** 2
    if rng is not None:
        losses = losses * (1.0 + 0.5 * jax.random.uniform(rng, losses.shape))
    return losses


def _regression_data(counts, m=None, seed=0, pad=0.0):
    rng = np.random.default_rng(seed)
    m = m or max(counts)
    x = np.full((len(counts), m, P), pad, np.float32)
    y = np.full((len(counts), m), pad, np.float32)
    for i, c in enumerate(counts):
        x[i, :c] = rng.normal(size=(c, P))
        y[i, :c] = x[i, :c] @ rng.normal(size=P) + 0.1 * rng.normal(size=c)
    return eng.NodeData(x, y, np.asarray(counts, np.int32))


def _init(seed=1):
    return np.random.default_rng(seed).normal(size=(N, P)).astype(np.float32)


# ------------------------------------------------------------- compilation
@pytest.mark.slow
@pytest.mark.parametrize(
    "steps, again, loop",
    [(10, 37, "auto"), (1000, 20, "auto"), (23, 1000, "auto"), (23, 40, "python")],
)
def test_one_compilation_per_run_whatever_T(steps, again, loop):
    data = _regression_data([6, 6, 6, 6])
    engine = eng.Engine(ecl_pdmm(lr=0.05), tp.ring(N), _sq_loss, batch_size=4,
                        edge_schedule=mk.BernoulliEdges(p=0.5), eval_every=10, loop=loop)
    assert engine.trace_count == 0
    carry, hist = engine.run(_init(), data, steps, jax.random.PRNGKey(0))
    assert engine.trace_count == 1
    assert int(carry.step) == steps
    expected_points = list(range(10, steps, 10)) + [steps]
    np.testing.assert_array_equal(hist["step"], expected_points)
    carry2, hist2 = engine.run(_init(), data, again, jax.random.PRNGKey(1))
    assert engine.trace_count == 1  # a different T reuses the compiled chunk
    assert int(carry2.step) == again and hist2["step"][-1] == again
    # continuing a carry does not retrace either
    carry3, _ = engine.run(None, data, again + 15, jax.random.PRNGKey(1), carry=carry2)
    assert engine.trace_count == 1 and int(carry3.step) == again + 15
    # the counter does count: new data shapes force a second trace
    assert engine.plan(carry, engine.check_data(data)).loop == ("python" if loop == "python" else "scan")
    if steps == 10:
        engine.run(_init(), _regression_data([7, 7, 7, 7], m=8), 5, jax.random.PRNGKey(0))
        assert engine.trace_count == 2


@pytest.mark.slow
def test_auto_plan_picks_python_for_convolutions_on_cpu():
    def conv_loss(w, x, y, rng):  # 1-D convolution of each row with the weights
        out = jax.vmap(lambda r: jnp.convolve(r, w, mode="valid"))(x)
        return 0.5 * (out.sum(1) - y) ** 2

    data = _regression_data([6, 6, 6, 6])
    dense = eng.Engine(local_sgd(0.01), tp.ring(N), _sq_loss, batch_size=2, eval_every=5)
    conv = eng.Engine(local_sgd(0.01), tp.ring(N), conv_loss, batch_size=2, eval_every=5)
    c_dense, _ = dense.run(_init(), data, 12, jax.random.PRNGKey(0))
    c_conv, h = conv.run(_init(), data, 12, jax.random.PRNGKey(0))
    assert dense.plan(c_dense, dense.check_data(data)).loop == "scan"
    expected = "python" if jax.default_backend() == "cpu" else "scan"
    assert conv.plan(c_conv, conv.check_data(data)).loop == expected
    assert int(c_conv.step) == 12 and conv.trace_count == 1
    np.testing.assert_array_equal(h["step"], [5, 10, 12])


@pytest.mark.slow
def test_scan_and_python_loops_agree():
    data = _regression_data([5, 8, 3, 8])
    kw = dict(batch_size=3, edge_schedule=mk.BernoulliEdges(p=0.5), node_schedule=mk.BernoulliNodes(p=0.7),
              eval_every=6)
    runs = {}
    for loop in ("scan", "python"):
        engine = eng.Engine(ecl_pdmm(lr=0.05, rho=0.1), tp.ring(N), _sq_loss, loop=loop, **kw)
        runs[loop] = engine.run(_init(), data, 20, jax.random.PRNGKey(5))
    (cs, hs), (cp, hp) = runs["scan"], runs["python"]
    for a, b in zip(jax.tree_util.tree_leaves(cs), jax.tree_util.tree_leaves(cp)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for k in hs:
        np.testing.assert_allclose(hs[k], hp[k], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- resumption
def _tree_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


RESUME_CASES = {
    # every kind of state: duals, smoothed duals, received models, step counter, optax state
    "ecl_admm_rho_smoothing": lambda: ecl(ECLConfig(lr=0.05, eta=1.0, theta=0.5, rho=0.1, dual_smoothing=True)),
    "gradient_tracking_momentum": lambda: gradient_tracking(optimizer=optax.sgd(0.05, momentum=0.9)),
}


@pytest.mark.slow
@pytest.mark.parametrize("case, loop", [(c, "auto") for c in RESUME_CASES] + [("ecl_admm_rho_smoothing", "python")])
def test_resume_is_bit_identical(case, loop):
    data = _regression_data([5, 8, 3, 8])
    engine = eng.Engine(RESUME_CASES[case](), tp.ring(N), _sq_loss, batch_size=4,
                        edge_schedule=mk.BernoulliEdges(p=0.4), node_schedule=mk.BernoulliNodes(p=0.8),
                        eval_every=10, loop=loop)
    key = jax.random.PRNGKey(42)
    full, hist_full = engine.run(_init(), data, 45, key)
    part, _ = engine.run(_init(), data, 17, key)
    # checkpoint round trip through host memory
    saved = jax.device_get(part)
    restored = jax.tree_util.tree_map(jnp.asarray, saved)
    resumed, hist_res = engine.run(None, data, 45, key, carry=restored)
    assert int(resumed.step) == 45
    assert _tree_equal(full, resumed)
    for k in hist_full:
        np.testing.assert_array_equal(hist_full[k][-1], hist_res[k][-1])
    assert not _tree_equal(part.state, full.state)  # the comparison is not vacuous
    # a separately built engine with the same settings gives the same run
    other = eng.Engine(RESUME_CASES[case](), tp.ring(N), _sq_loss, batch_size=4,
                       edge_schedule=mk.BernoulliEdges(p=0.4), node_schedule=mk.BernoulliNodes(p=0.8),
                       eval_every=7, loop=loop)
    again, _ = other.run(_init(), data, 45, key)
    assert _tree_equal(full.state, again.state)
    # and a different key gives a different run
    diff, _ = engine.run(_init(), data, 45, jax.random.PRNGKey(43))
    assert not _tree_equal(full.state, diff.state)
    assert engine.trace_count == 1


# ------------------------------------------------------------------- metrics
@pytest.mark.slow
def test_metrics_shapes_and_values():
    counts = [5, 8, 3, 8]
    data = _regression_data(counts, seed=3)
    calls = []
    engine = eng.Engine(
        local_sgd(0.05), tp.ring(N), _sq_loss, batch_size=2, eval_every=10,
        eval_fn=lambda params, ev: {"norm": jnp.sum(params**2, axis=1) * ev},
    )
    carry, hist = engine.run(_init(), data, 25, jax.random.PRNGKey(0), eval_data=2.0,
                             callbacks=[lambda c, m: calls.append(int(c.step))])
    assert calls == [10, 20, 25]
    assert set(hist) == {"step", "node_loss", "mean_model_loss", "consensus_distance", "norm", "messages_sent",
                         "messages_received"}
    assert hist["messages_sent"].shape == (3, N) and not hist["messages_sent"].any()  # local SGD sends nothing
    assert hist["step"].shape == (3,)
    assert hist["node_loss"].shape == (3, N)
    assert hist["mean_model_loss"].shape == (3,)
    assert hist["consensus_distance"].shape == (3,)
    assert hist["norm"].shape == (3, N)
    # values at the last point, recomputed in NumPy on the valid rows only
    w = np.asarray(carry.state.params, np.float64)
    x, y = np.asarray(data.x, np.float64), np.asarray(data.y, np.float64)
    node_loss = [np.mean(0.5 * (x[i, :c] @ w[i] - y[i, :c]) ** 2) for i, c in enumerate(counts)]
    np.testing.assert_allclose(hist["node_loss"][-1], node_loss, rtol=1e-5)
    wbar = w.mean(0)
    pooled = np.concatenate([0.5 * (x[i, :c] @ wbar - y[i, :c]) ** 2 for i, c in enumerate(counts)])
    np.testing.assert_allclose(hist["mean_model_loss"][-1], pooled.mean(), rtol=1e-5)
    np.testing.assert_allclose(hist["consensus_distance"][-1], np.mean(np.sum((w - wbar) ** 2, 1)), rtol=1e-5)
    np.testing.assert_allclose(hist["norm"][-1], 2.0 * np.sum(w**2, 1), rtol=1e-5)
    assert hist["consensus_distance"][-1] > 0
    # direct call matches the recorded metrics
    direct = engine.metrics(carry, engine.check_data(data), 2.0)
    np.testing.assert_allclose(direct["node_loss"], hist["node_loss"][-1], rtol=1e-6)
    # zero steps: no metric points, carry unchanged
    c0, h0 = engine.run(_init(), data, 0, jax.random.PRNGKey(0))
    assert h0 == {} and int(c0.step) == 0


def test_consensus_distance_and_mean_params_on_pytrees():
    params = {"a": jnp.array([[1.0, 2.0], [3.0, 4.0]]), "b": jnp.array([0.0, 2.0])}
    np.testing.assert_allclose(eng.mean_params(params)["a"], [2.0, 3.0])
    # node 0: (1-2)^2 + (2-3)^2 + (0-1)^2 = 3, node 1 the same -> mean 3
    np.testing.assert_allclose(eng.consensus_distance(params), 3.0)


# ------------------------------------------------------------------- padding
PAD_COUNTS = [5, 2, 9, 1]


def _nan_padded_data():
    """Row index in feature 0 of the valid rows; NaN everywhere in the padding."""
    data = _regression_data(PAD_COUNTS, pad=np.nan, seed=5)
    x = np.array(data.x)
    for i, c in enumerate(PAD_COUNTS):
        x[i, :c, 0] = np.arange(c)
    return eng.NodeData(x, data.y, data.count)


@pytest.mark.slow
def test_minibatch_never_samples_padding_and_is_uniform():
    data = _nan_padded_data()
    engine = eng.Engine(local_sgd(0.01), tp.ring(N), _sq_loss, batch_size=16)
    keys = jax.random.split(jax.random.PRNGKey(0), 500)
    xb, yb, wb = jax.jit(jax.vmap(lambda k: engine.sample_batch(engine.check_data(data), k)))(keys)
    xb, yb, wb = np.asarray(xb), np.asarray(yb), np.asarray(wb)
    assert xb.shape == (500, N, 16, P) and yb.shape == (500, N, 16)
    assert np.isfinite(xb).all() and np.isfinite(yb).all()
    np.testing.assert_allclose(wb, 1.0 / 16)
    for i, c in enumerate(PAD_COUNTS):
        idx = xb[:, i, :, 0].astype(int).ravel()
        freq = np.bincount(idx, minlength=c)
        assert freq.size == c  # nothing beyond the node's count
        expected = idx.size / c
        assert np.all(np.abs(freq - expected) < 0.15 * expected), (i, freq)


@pytest.mark.slow
def test_epoch_sampling_walks_a_fresh_permutation_per_node_and_epoch():
    """epoch_samples = L: node i's own steps e S .. (e + 1) S - 1 (S = L / B) take a
    permutation of 0..L-1 modulo count_i, a different one for each node and epoch, drawn
    when the node enters the epoch (its own step counter, as under a free-running runtime)."""
    counts = np.array(PAD_COUNTS)
    length, b, per_epoch = 12, 4, 3
    key = jax.random.PRNGKey(3)
    order = eng.EpochOrder(jnp.tile(jnp.arange(length, dtype=jnp.int32), (N, 1)), jnp.zeros(N, jnp.int32))
    own0 = np.array([0, 3, 7, 2])  # per-node own steps
    rows, perms = {}, {}
    for t in range(9):
        own = own0 + t
        order = eng.next_epoch_order(order, key, own, per_epoch)
        np.testing.assert_array_equal(order.epoch, own // per_epoch)
        idx = np.asarray(eng.epoch_rows(order, own, jnp.asarray(counts), b))
        for i in range(N):
            e = int(own[i] // per_epoch)
            rows.setdefault((i, e), []).extend(idx[i])
            perms[i, e] = tuple(np.asarray(order.perm[i]))
    full = [ie for ie in rows if len(rows[ie]) == length]
    assert len(full) >= 2 * N
    for i, e in full:
        assert sorted(perms[i, e]) == list(range(length))
        got = np.bincount(rows[i, e], minlength=counts[i])
        want = np.bincount(np.arange(length) % counts[i], minlength=counts[i])
        np.testing.assert_array_equal(got, want)  # each of 0..L-1 exactly once, modulo the count
    assert len({perms[ie] for ie in full}) == len(full)  # fresh for every node and epoch


@pytest.mark.slow
def test_epoch_sampled_run_resumes_bit_identical_and_changes_the_batches():
    data = _regression_data([16] * N, seed=2)
    common = dict(batch_size=4, eval_every=5)
    base = eng.Engine(local_sgd(0.05), tp.ring(N), _sq_loss, **common)
    epochs = eng.Engine(local_sgd(0.05), tp.ring(N), _sq_loss, epoch_samples=16, **common)
    key = jax.random.PRNGKey(0)
    full, _ = epochs.run(_init(), data, 20, key)
    half, _ = epochs.run(_init(), data, 10, key)
    resumed, _ = epochs.run(None, data, 20, key, carry=half)
    assert _tree_equal(full, resumed)
    other, _ = base.run(_init(), data, 20, key)
    assert not np.allclose(np.asarray(full.state.params), np.asarray(other.state.params))
    np.testing.assert_array_equal(full.order.epoch, np.full(N, 19 // 4))


def test_epoch_samples_must_be_a_multiple_of_the_batch():
    with pytest.raises(ValueError, match="epoch_samples=10 must be a multiple of batch_size=4"):
        eng.Engine(local_sgd(0.01), tp.ring(N), _sq_loss, batch_size=4, epoch_samples=10)


@pytest.mark.slow
def test_training_with_exploding_padding_stays_finite():
    data = _nan_padded_data()
    engine = eng.Engine(local_sgd(0.01), tp.ring(N), _sq_loss, batch_size=8, eval_every=25)
    carry, hist = engine.run(np.zeros((N, P), np.float32), data, 100, jax.random.PRNGKey(0))
    assert np.isfinite(np.asarray(carry.state.params)).all()
    for k in ("node_loss", "mean_model_loss", "consensus_distance"):
        assert np.isfinite(hist[k]).all(), k


def test_full_batch_gradient_is_the_mean_over_valid_rows_only():
    """batch_size=None: one step of local SGD is w - lr * (1/count_i) sum_{valid rows} grad;
    the NaN padding rows must not leak into the gradient (0 * NaN) or the metrics."""
    data = _nan_padded_data()
    lr = 0.1
    engine = eng.Engine(local_sgd(lr), tp.ring(N), lambda w, x, y, r: _sq_loss(w, x, y, None),
                        batch_size=None, eval_every=1)
    w0 = _init()
    carry, hist = engine.run(w0, data, 1, jax.random.PRNGKey(0))
    w1 = np.asarray(carry.state.params)
    x, y = np.asarray(data.x, np.float64), np.asarray(data.y, np.float64)
    for i, c in enumerate(PAD_COUNTS):
        g = x[i, :c].T @ (x[i, :c] @ w0[i] - y[i, :c]) / c
        np.testing.assert_allclose(w1[i], w0[i] - lr * g, rtol=1e-5, atol=1e-6)
    assert np.isfinite(hist["node_loss"]).all() and np.isfinite(hist["mean_model_loss"]).all()


# ------------------------------------------------------------------ donation
@pytest.mark.slow
@pytest.mark.parametrize("loop", ["scan", "python"])
def test_donated_carry_gives_the_same_run_and_leaves_callers_arrays_alone(loop):
    data = _regression_data([6, 6, 6, 6])
    params = jnp.asarray(_init())
    runs = {}
    for donate in (True, False):
        engine = eng.Engine(gradient_tracking(lr=0.05), tp.ring(N), _sq_loss, batch_size=4,
                            edge_schedule=mk.BernoulliEdges(p=0.5), eval_every=5, loop=loop, donate=donate)
        carry0 = engine.init(params, jax.random.PRNGKey(3))  # DSGT's state holds one zeros tree twice
        carry, _ = engine.run_chunk(carry0, data, 20)
        carry, _ = engine.run_chunk(carry, data, 20)
        runs[donate] = carry
        assert carry0.state.params.is_deleted() == donate  # the consumed carry is gone ...
    assert not params.is_deleted()  # ... the caller's params never are
    jax.tree_util.tree_map(np.testing.assert_array_equal, runs[True], runs[False])
    with pytest.raises(ValueError, match="donate must be True or False, got 'yes'"):
        eng.Engine(ecl_pdmm(lr=0.05), tp.ring(N), _sq_loss, donate="yes")
