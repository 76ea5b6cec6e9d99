"""The official ICML21 code's per-edge slot tables, kept as data (ecl_jax/data/icml21_slots.json),
give the official exchange counts per round on the graphs they belong to."""

from __future__ import annotations

import json
from importlib import resources

import jax
import numpy as np
import pytest

from ecl_jax import masks
from ecl_jax import topology as tp

GRAPHS = {"doublering": lambda: tp.multiplex_ring(8, 2), "random": tp.icml21_random, "ring": lambda: tp.ring(8)}


def _table(name):
    data = json.loads(resources.files("ecl_jax").joinpath("data/icml21_slots.json").read_text())
    assert "nttcslab/ecl-isvr" in data["source"] and data["round"] == 8
    return {(int(i), int(j)): s for i, row in data["slots"][name].items() for j, s in row.items()}


@pytest.mark.parametrize("name", masks.ICML21_SLOT_TABLES)
def test_official_slots_give_the_official_exchanges_per_round(name):
    topo = GRAPHS[name]()
    table = _table(name)
    # every directed edge of the graph has exactly one slot, both ends of every edge have one
    assert set(table) == {(int(i), int(j)) for i, j in zip(topo.src, topo.dst)}
    assert all(0 <= s < 8 for s in table.values())
    schedule = masks.edge_schedule_from_string(f"slots:K=8,table={name}")
    rounds = 3
    hits = np.stack([np.asarray(schedule(jax.random.PRNGKey(t), t, topo)) for t in range(8 * rounds)])
    for e, (a, b) in enumerate(topo.edges.tolist()):
        # the official code swaps edge {a, b} at a's slot and at b's slot of every round
        want = sorted({table[(a, b)], table[(b, a)]})
        for r in range(rounds):
            np.testing.assert_array_equal(np.flatnonzero(hits[8 * r: 8 * (r + 1), e]), want, err_msg=f"edge {(a, b)}")
    official = sum(len({table[(a, b)], table[(b, a)]}) for a, b in topo.edges.tolist())
    assert hits[:8].sum() == official  # exchanges in one round, counted from the table directly
    # and every node swaps with each neighbour at least once per round
    assert (hits[:8].sum(0) >= 1).all()


def test_slot_table_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown ICML21 slot table 'torus'; valid: doublering, random, ring"):
        masks.FixedSlotEdges(K=8, table="torus")
    with pytest.raises(ValueError, match="fixes the slots and K = 8"):
        masks.FixedSlotEdges(K=4, table="ring")
    with pytest.raises(ValueError, match="slot table 'ring' is for an 8-node graph.*ring9 has other edges"):
        masks.FixedSlotEdges(K=8, table="ring").directed_slots(tp.ring(9))
    with pytest.raises(ValueError, match="slot table 'doublering'.*icml21_random8 has other edges"):
        masks.icml21_slots("doublering", tp.icml21_random())
