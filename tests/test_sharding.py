"""Sharding the node axis over devices gives the same run as one device.

The checks run in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
(the device count is fixed when JAX starts). For ECL-PDMM (random edge activation) and
gossip on a ring and a torus in the shift layout, and ECL-PDMM on a ring in the slots
layout, a run of 12 steps through :class:`~ecl_jax.engine.Engine` with the carry and the
node data sharded over 4 devices must end in the same models and duals as the same run
on one device, with every node-stacked leaf actually split over the 4 devices. On the
shift layout the compiled chunk must exchange by collective-permute of halo rows and
contain no all-gather of a node-stacked array (the whole model stack).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

# slow: one subprocess or set of runs for the module; grouped: that fixture is built once, on one worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("sharding")]

SCRIPT = textwrap.dedent(
    r"""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from ecl_jax import topology as tp
    from ecl_jax.algorithms import ecl_pdmm, gossip
    from ecl_jax.engine import Engine, NodeData
    from ecl_jax.masks import BernoulliEdges
    from ecl_jax.sharding import (check_shardable, collective_report, node_mesh, shard_carry,
                                  shard_node_data)

    assert len(jax.devices()) == 4, jax.devices()
    N, D_IN, C = 16, 12, 5

    def loss(p, x, y, rng):
        logits = jnp.tanh(x @ p["w1"]) @ p["w2"] + p["b"]
        return -jax.nn.log_softmax(logits)[jnp.arange(x.shape[0]), y]

    key = jax.random.PRNGKey(0)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    params = {"w1": 0.3 * jax.random.normal(k1, (N, D_IN, 8)), "w2": 0.3 * jax.random.normal(k2, (N, 8, C)),
              "b": jnp.zeros((N, C))}
    data = NodeData(jax.random.normal(k3, (N, 24, D_IN)), jax.random.randint(k4, (N, 24), 0, C),
                    jnp.full((N,), 24, jnp.int32))
    cases = {
        "ring-shift-pdmm": (tp.ring(N, layout="shift"), ecl_pdmm(0.1, eta=0.5)),
        "torus-shift-pdmm": (tp.torus(4, 4, layout="shift"), ecl_pdmm(0.1, eta=0.5)),
        "torus-shift-gossip": (tp.torus(4, 4, layout="shift"), gossip(0.1)),
        "ring-slots-pdmm": (tp.ring(N, layout="slots"), ecl_pdmm(0.1, eta=0.5)),
    }
    out = {}
    mesh = node_mesh()
    for name, (topo, alg) in cases.items():
        def make():
            return Engine(alg, topo, loss, batch_size=6, eval_every=6, edge_schedule=BernoulliEdges(p=0.5))
        one, hist1 = make().run(params, data, 12, jax.random.PRNGKey(1))
        eng = make()
        carry = shard_carry(eng.init(params, jax.random.PRNGKey(1)), topo, mesh)
        sdata = shard_node_data(data, mesh)
        four, hist4 = eng.run(None, sdata, 12, jax.random.PRNGKey(1), carry=carry)
        leaves1 = jax.tree_util.tree_leaves(one.state)
        leaves4 = jax.tree_util.tree_leaves(four.state)
        # bool leaves (the duals' news flags) compare through float: a mismatch counts as 1
        diff = max(float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
                   for a, b in zip(leaves1, leaves4))
        scale = max(float(jnp.max(jnp.abs(a.astype(jnp.float32)))) for a in leaves1)
        split = [len(leaf.sharding.device_set) == 4 and leaf.addressable_shards[0].data.shape[0] == leaf.shape[0] // 4
                 for leaf in leaves4 if leaf.ndim >= 1 and leaf.shape[0] == N]
        text = eng.lower(carry, sdata, 12).compile().as_text()
        coll = collective_report(text)
        out[name] = dict(
            diff=diff, scale=scale, n_split=len(split), all_split=all(split),
            loss_diff=float(np.max(np.abs(np.asarray(hist1["consensus_distance"]) - np.asarray(hist4["consensus_distance"])))),
            all_gather_elems=max([c for op, _, c in coll if op == "all-gather"], default=0),
            permute_elems=max([c for op, _, c in coll if op == "collective-permute"], default=0),
            stack_elems=N * D_IN * 8,  # the largest model leaf (w1) stacked over the N nodes
        )
    try:
        check_shardable(tp.ring(18, layout="shift"), mesh)
        out["bad_n"] = "no error"
    except ValueError as err:
        out["bad_n"] = str(err)
    try:
        check_shardable(tp.torus(6, 4, layout="shift"), mesh)
        out["bad_grid"] = "no error"
    except ValueError as err:
        out["bad_grid"] = str(err)
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def sharded_results():
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + ["--xla_force_host_platform_device_count=4"])
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"subprocess failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.parametrize("case", ["ring-shift-pdmm", "torus-shift-pdmm", "torus-shift-gossip", "ring-slots-pdmm"])
def test_four_devices_match_one_device(sharded_results, case):
    r = sharded_results[case]
    assert r["scale"] > 1e-3  # the state is not trivially zero
    assert r["diff"] <= 1e-5 * max(1.0, r["scale"]), r
    assert r["loss_diff"] <= 1e-5, r
    # every node-stacked leaf (models, duals) lives split over the 4 devices
    assert r["n_split"] >= 3 and r["all_split"], r


@pytest.mark.parametrize("case", ["ring-shift-pdmm", "torus-shift-pdmm", "torus-shift-gossip"])
def test_shift_layout_exchanges_halos_not_the_model_stack(sharded_results, case):
    r = sharded_results[case]
    assert r["permute_elems"] > 0, r  # neighbours' rows do cross device boundaries ...
    # ... as halos: at most one device's share of a leaf stack (ring: 1 node row, 4x4
    # torus: 1 grid row of 4 nodes), never the whole stack
    assert r["permute_elems"] <= r["stack_elems"] // 4, r
    assert r["all_gather_elems"] == 0, r  # nothing is all-gathered


def test_uneven_node_split_is_refused(sharded_results):
    assert "N=18 nodes cannot be split evenly over 4 devices" in sharded_results["bad_n"]
    assert "first grid axis (6) must be divisible by 4" in sharded_results["bad_grid"]
