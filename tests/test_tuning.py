"""ecl_jax/tuning.py: the speed settings are on by default, each has a switch that turns it
off, and training gives the same results with and without each (docs/performance.md).

The settings change how XLA computes, never what: Eigen instead of YNNPACK convolutions
(float rounding), max-pool as reshape + max instead of reduce-window (the same values and,
after a ReLU, the same gradients), tcmalloc instead of glibc's malloc (nothing).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from ecl_jax import models as M
from ecl_jax import tuning

ROOT = pathlib.Path(__file__).resolve().parents[1]
HAS_TCMALLOC = tuning.find_tcmalloc() is not None
SWITCHES = [f"ECL_JAX_{s.upper()}" for s in tuning.SETTINGS] + ["ECL_JAX_TUNING"]


@pytest.fixture
def clean_switches(monkeypatch):
    for var in SWITCHES:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_every_setting_is_on_by_default_and_each_switch_turns_off_only_its_own(clean_switches):
    assert all(tuning.enabled(s) for s in tuning.SETTINGS)
    for setting in tuning.SETTINGS:
        for value in ("0", "off", " OFF ", "false", "no"):
            env = {f"ECL_JAX_{setting.upper()}": value}
            assert [tuning.enabled(s, env) for s in tuning.SETTINGS] == [s != setting for s in tuning.SETTINGS]
        assert tuning.enabled(setting, {f"ECL_JAX_{setting.upper()}": "1"})
    assert not any(tuning.enabled(s, {"ECL_JAX_TUNING": "0"}) for s in tuning.SETTINGS)
    with pytest.raises(ValueError, match=r"'eigen'.*eigen_conv, reduce_pool, tcmalloc"):
        tuning.enabled("eigen")


def test_this_jaxlib_knows_the_convolution_flag():
    """jaxlib 0.10 has the flag (the speed-up was measured with it); a later jaxlib that drops it
    must be noticed here, not by a user's run aborting or silently slowing down."""
    import jaxlib

    if tuple(int(x) for x in jaxlib.__version__.split(".")[:2]) == (0, 10):
        assert tuning.jaxlib_knows_eigen_conv_flag()


# --------------------------------------------------------------------------
# max-pool as reshape / strided slices + max
# --------------------------------------------------------------------------

POOLS = [  # window, stride, padding, input shape (NHWC); odd sizes drop the last row/column
    (2, 2, 0, (3, 24, 24, 4)),
    (2, 2, 0, (2, 7, 9, 3)),
    (3, 2, 1, (2, 16, 16, 5)),
    (3, 2, 1, (1, 7, 9, 2)),
]


def _flax_pool(x, window, stride, padding):
    return nn.max_pool(x, (window, window), strides=(stride, stride), padding=((padding, padding),) * 2)


@pytest.mark.parametrize("window,stride,padding,shape", POOLS)
@pytest.mark.parametrize("after_relu", [False, True])
def test_max_pool_equals_flax_in_values_and_gradients(clean_switches, window, stride, padding, shape, after_relu):
    k1, k2 = jax.random.split(jax.random.PRNGKey(sum(shape) + window))
    x = jax.random.normal(k1, shape)
    pre = (lambda v: jax.nn.relu(v - 1.0)) if after_relu else (lambda v: v)  # after a ReLU: ties at 0 in windows

    def f(pool):
        def loss(x):
            out = pool(pre(x), window, stride, padding)
            return jnp.sum(out * jax.random.normal(k2, out.shape)), out
        return jax.jit(jax.value_and_grad(loss, has_aux=True))(x)

    (_, got), g_got = f(M.max_pool)
    (_, want), g_want = f(_flax_pool)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    np.testing.assert_array_equal(np.asarray(g_got), np.asarray(g_want))
    if after_relu:
        assert float((got == 0).mean()) > 0.01  # the tie case really occurred


def test_the_switch_selects_the_formulation(clean_switches):
    x = jnp.ones((1, 8, 8, 1))
    on = str(jax.make_jaxpr(lambda v: M.max_pool(v, 2, 2))(x))
    clean_switches.setenv("ECL_JAX_REDUCE_POOL", "0")
    off = str(jax.make_jaxpr(lambda v: M.max_pool(v, 2, 2))(x))
    assert "reduce_window_max" in off and "reduce_window_max" not in on
    assert "reduce_max" in on


@pytest.mark.parametrize("name,shape", [
    ("kdd20_mnist_cnn", (28, 28, 1)),
    ("kdd20_cifar_cnn", (32, 32, 3)),
    pytest.param("icml21_resnet", (32, 32, 3), marks=pytest.mark.slow),
])
def test_every_pooling_model_has_the_same_loss_and_gradient_either_way(clean_switches, name, shape):
    model = M.get_model(name)
    loss = M.classification_loss(model)
    params = jax.tree_util.tree_map(lambda a: a[0], M.init_node_params(model, jax.random.PRNGKey(0), 1, shape))
    x = jax.random.uniform(jax.random.PRNGKey(1), (6,) + shape)
    y = jnp.arange(6) % 10
    out = {}
    for flag in ("1", "0"):
        clean_switches.setenv("ECL_JAX_REDUCE_POOL", flag)
        # a new function each time: traced anew, so the switch is read anew
        out[flag] = jax.jit(jax.value_and_grad(lambda p: loss(p, x, y, jax.random.PRNGKey(2)).mean()))(params)
    (l_on, g_on), (l_off, g_off) = out["1"], out["0"]
    np.testing.assert_allclose(float(l_on), float(l_off), rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(g_on), jax.tree_util.tree_leaves(g_off)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# the allocator: re-execution of the command line
# --------------------------------------------------------------------------


def test_reexec_preloads_tcmalloc_once_and_otherwise_leaves_a_hint(clean_switches):
    calls = []
    lib = "/opt/x/libtcmalloc_minimal.so.4"
    clean_switches.setattr(tuning, "_tcmalloc_loaded", lambda: False)
    clean_switches.setattr(tuning, "find_tcmalloc", lambda: lib)
    clean_switches.setattr(tuning.os, "execve", lambda exe, argv, env: calls.append((exe, argv, env)))
    clean_switches.setattr(tuning, "_allocator_missing", False)
    clean_switches.setenv("LD_PRELOAD", "/opt/other.so")
    clean_switches.delenv(tuning._REEXEC_MARK, raising=False)

    tuning.reexec_with_tcmalloc(["run", "cfg.py", "--set", "lr=0.1"])
    if not sys.platform.startswith("linux"):
        assert calls == []
        return
    (exe, argv, env), = calls
    assert exe == sys.executable and argv == [sys.executable, "-m", "ecl_jax", "run", "cfg.py", "--set", "lr=0.1"]
    assert env["LD_PRELOAD"] == f"/opt/other.so {lib}" and env[tuning._REEXEC_MARK] == "1"
    assert tuning.allocator_hint() is None

    clean_switches.setenv(tuning._REEXEC_MARK, "1")  # the re-executed process: no loop
    tuning.reexec_with_tcmalloc(["run"])
    clean_switches.delenv(tuning._REEXEC_MARK)
    clean_switches.setenv("ECL_JAX_TCMALLOC", "0")  # switched off
    tuning.reexec_with_tcmalloc(["run"])
    clean_switches.delenv("ECL_JAX_TCMALLOC")
    clean_switches.setattr(tuning, "_tcmalloc_loaded", lambda: True)  # already preloaded by the user
    tuning.reexec_with_tcmalloc(["run"])
    assert len(calls) == 1

    clean_switches.setattr(tuning, "_tcmalloc_loaded", lambda: False)
    clean_switches.setattr(tuning, "find_tcmalloc", lambda: None)  # not installed: no exec, a hint
    tuning.reexec_with_tcmalloc(["run"])
    assert len(calls) == 1
    hint = tuning.allocator_hint()
    assert "apt-get install libtcmalloc-minimal4" in hint and "ECL_JAX_TCMALLOC=0" in hint
    assert "\n" not in hint


def test_preload_env_adds_the_library_for_a_child_unless_switched_off(clean_switches):
    clean_switches.setattr(tuning, "find_tcmalloc", lambda: "/l/libtcmalloc.so.4")
    assert tuning.preload_env({"A": "1"})["LD_PRELOAD"] == "/l/libtcmalloc.so.4"
    assert "LD_PRELOAD" not in tuning.preload_env({"ECL_JAX_TCMALLOC": "off"})
    assert tuning.preload_env({"LD_PRELOAD": "/l/libtcmalloc.so.4"})["LD_PRELOAD"] == "/l/libtcmalloc.so.4"


# --------------------------------------------------------------------------
# in real processes: XLA_FLAGS at import, the CLI's re-execution, training results
# --------------------------------------------------------------------------


def _python(code: str, env: dict) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in SWITCHES and k not in ("XLA_FLAGS", "LD_PRELOAD")}
    full.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_importing_ecl_jax_sets_the_flag_before_jax_starts_and_warns_when_too_late():
    probe = "import os, ecl_jax, jax; jax.numpy.ones(1); print(repr(os.environ.get('XLA_FLAGS', '')))"
    flag = tuning.EIGEN_CONV_FLAG
    res = _python(probe, {})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == repr(flag)
    assert "import ecl_jax before" not in res.stderr
    assert _python(probe, {"ECL_JAX_EIGEN_CONV": "0"}).stdout.strip() == repr("")
    own = "--xla_force_host_platform_device_count=2"
    res = _python(probe + "; print(jax.device_count())", {"XLA_FLAGS": own})
    assert res.stdout.splitlines() == [repr(f"{own} {flag}"), "2"]  # the user's flag kept and in effect
    late = _python("import os, jax; jax.numpy.ones(1); import ecl_jax; print(repr(os.environ.get('XLA_FLAGS', '')))",
                   {})
    assert late.returncode == 0 and late.stdout.strip() == repr("")
    assert "import ecl_jax before the first JAX computation" in late.stderr and flag in late.stderr


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TCMALLOC or not sys.platform.startswith("linux"),
                    reason="tcmalloc is not installed (apt-get install libtcmalloc-minimal4; scripts/test.sh does)")
def test_the_cli_run_reexecutes_itself_with_tcmalloc(tmp_path):
    probe = tmp_path / "probe.json"
    cfg = tmp_path / "probe_config.py"
    # the config file runs in the process that trains; it records what is in effect there
    cfg.write_text(f"import json\nfrom ecl_jax import tuning\nopen({str(probe)!r}, 'w').write(json.dumps("
                   "tuning.summary()))\n")
    for env, want in (({}, True), ({"ECL_JAX_TCMALLOC": "0"}, False)):
        probe.unlink(missing_ok=True)
        full = {k: v for k, v in os.environ.items() if k not in SWITCHES and k != "LD_PRELOAD"}
        full.update(env)
        res = subprocess.run([sys.executable, "-m", "ecl_jax", "run", str(cfg)], cwd=tmp_path, env=full,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 2 and "must define CONFIG" in res.stderr, res.stderr  # a config error, one line
        assert "tcmalloc is not installed" not in res.stderr
        seen = json.loads(probe.read_text())
        assert seen == {"eigen_conv": True, "reduce_pool": True, "tcmalloc": want}


TRAIN = """
import json, sys
import ecl_jax
import jax, jax.numpy as jnp, numpy as np
from ecl_jax import engine as eng, models as M, topology as tp, tuning
model = M.get_model("kdd20_mnist_cnn")
n, m = 3, 16
x = jax.random.uniform(jax.random.PRNGKey(0), (n, m, 28, 28, 1))
y = jax.random.randint(jax.random.PRNGKey(1), (n, m), 0, 10)
params = M.init_node_params(model, jax.random.PRNGKey(2), n, (28, 28, 1))
engine = eng.Engine(ecl_jax.ecl_pdmm(lr=0.05), tp.ring(n), M.classification_loss(model), batch_size=8,
                    eval_every=4, train_metrics=False)
carry, _ = engine.run(params, eng.NodeData(x, y, jnp.full((n,), m)), 4, jax.random.PRNGKey(3))
start = engine.init(params, jax.random.PRNGKey(3)).state
leaves = {str(i): np.asarray(v) for i, v in enumerate(jax.tree_util.tree_leaves(carry.state))}
leaves.update({"init" + str(i): np.asarray(v) for i, v in enumerate(jax.tree_util.tree_leaves(start))})
np.savez(sys.argv[1], **leaves)
print(json.dumps(tuning.summary()))
"""


@pytest.mark.slow
def test_training_gives_the_same_models_with_and_without_each_setting(tmp_path):
    """Four ECL-PDMM steps of the KDD20 CNN on 3 nodes, in a fresh process per variant: every
    setting off in turn gives the default's models to float tolerance (Eigen and YNNPACK
    convolutions round differently), and the switch really took effect in that process."""
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    variants = {"default": {}, "eigen_conv": {"ECL_JAX_EIGEN_CONV": "0"}, "reduce_pool": {"ECL_JAX_REDUCE_POOL": "0"}}
    with_tcmalloc = HAS_TCMALLOC and sys.platform.startswith("linux")
    if with_tcmalloc:  # preloaded as the CLI does, except in the variant without it
        for env in variants.values():
            env["LD_PRELOAD"] = tuning.find_tcmalloc()
        variants["tcmalloc"] = {}
    runs = {}
    for name, env in variants.items():
        out = tmp_path / f"{name}.npz"
        full = {k: v for k, v in os.environ.items() if k not in SWITCHES and k not in ("XLA_FLAGS", "LD_PRELOAD")}
        full.update(env)
        res = subprocess.run([sys.executable, str(script), str(out)], cwd=ROOT, env=full, capture_output=True,
                             text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
        seen = json.loads(res.stdout.strip().splitlines()[-1])
        want = {"eigen_conv": True, "reduce_pool": True, "tcmalloc": with_tcmalloc}
        if name != "default":
            want[name] = False
        assert seen == want, (name, seen)
        runs[name] = dict(np.load(out))
    base = runs.pop("default")
    moved = max(np.abs(base[k].astype(float) - base["init" + k]).max() for k in base if not k.startswith("init"))
    assert moved > 1e-3
    for name, got in runs.items():
        for k in base:
            np.testing.assert_allclose(got[k], base[k], rtol=1e-4, atol=2e-6, err_msg=f"{name} off: leaf {k}")
        if name == "tcmalloc":  # the allocator changes nothing the program computes
            assert all(np.array_equal(got[k], base[k]) for k in base)
