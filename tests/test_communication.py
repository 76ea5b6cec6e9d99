"""Communication accounted (docs/algorithms.md#communication): the messages every node sent and
received, counted inside the compiled loop, equal a hand count on fixed masks and a per-node
count in Python over the engine's own participants (Bernoulli masks, paused nodes, the free
runtime, where ECL's duals go one way only from a node with news); sent equals received summed
over nodes; each rule's payload is the size of the arrays it exchanges.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecl_jax import communication as comm
from ecl_jax import engine as eng
from ecl_jax import masks as mk
from ecl_jax import topology as tp
from ecl_jax.algorithms import (centralized, dsgd, ecl, ecl_admm, ecl_pdmm, gossip, gradient_tracking, local_sgd,
                                pairwise_gossip)
from ecl_jax.algorithms.edge_consensus import ECLConfig
from ecl_jax.masks import Activity
from ecl_jax.runtime import FreeRunning

N, P = 4, 3


def _loss(w, x, y, rng):
    z = x @ w
    return jnp.logaddexp(0.0, z) - y * z


def _data(n=N):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 10, P)).astype(np.float32)
    return eng.NodeData(x, (x[..., 0] > 0).astype(np.float32), np.full(n, 10, np.int32))


@dataclasses.dataclass(frozen=True)
class _Fixed:
    """Step t's mask is row t of ``table`` (edges [T, E] or nodes [T, N]; an Activity with ``answers``)."""

    table: tuple
    answers: tuple | None = None

    def __call__(self, key, step, arg):
        mask = jnp.asarray(np.array(self.table, bool))[step]
        if self.answers is None:
            return mask
        return Activity(mask, jnp.asarray(np.array(self.answers, bool))[step])


def _counts(algorithm, steps, topology=None, **kw):
    topology = topology or tp.ring(N)
    engine = eng.Engine(algorithm, topology, _loss, batch_size=2, eval_every=steps, **kw)
    carry, hist = engine.run(np.zeros((topology.n_nodes, P), np.float32), _data(topology.n_nodes), steps,
                             jax.random.PRNGKey(0))
    return engine, carry, hist["messages_sent"][-1], hist["messages_received"][-1]


def test_swaps_on_fixed_masks_equal_the_hand_count():
    # ring(4): edges (0,1) (0,3) (1,2) (2,3); step 0 opens (0,1), step 1 (0,1) and (2,3), step 2 (1,2)
    edges = ((1, 0, 0, 0), (1, 0, 0, 1), (0, 0, 1, 0))
    for algorithm in (gossip(0.1), dsgd(0.1), ecl_pdmm(0.1), gradient_tracking(0.1)):
        _, _, sent, received = _counts(algorithm, 3, edge_schedule=_Fixed(edges))
        np.testing.assert_array_equal(sent, [2, 3, 2, 1], err_msg=algorithm.name)  # a swap: one message each way
        np.testing.assert_array_equal(received, [2, 3, 2, 1], err_msg=algorithm.name)


def test_a_node_that_stops_neither_sends_nor_receives():
    nodes = ((1, 1, 1, 1), (1, 0, 1, 1))  # node 1 stops at step 1: edges (0,1), (1,2) do not exchange
    _, _, sent, received = _counts(gossip(0.1), 2, node_schedule=_Fixed(nodes))
    np.testing.assert_array_equal(sent, [2 + 1, 2, 2 + 1, 2 + 2])
    np.testing.assert_array_equal(received, sent)


def test_duals_go_one_way_from_a_node_with_news():
    """ECL under an Activity: a direction carries the dual only when its sender stepped since the
    edge's last exchange. Step 0: only edge (1,2) opens, node 0 alone computes (news on its
    edges); step 1: nobody computes, edge (0,1) opens: 0 -> 1 (its news), not 1 -> 0."""
    edges = ((0, 0, 1, 0), (1, 0, 0, 0))
    nodes = _Fixed(((1, 0, 0, 0), (0, 0, 0, 0)), answers=((1, 1, 1, 1), (1, 1, 1, 1)))
    _, carry, sent, received = _counts(ecl_pdmm(0.1), 2, edge_schedule=_Fixed(edges), node_schedule=nodes)
    np.testing.assert_array_equal(sent, [1, 0, 0, 0])  # step 0's edge (1,2): neither end has news
    np.testing.assert_array_equal(received, [0, 1, 0, 0])
    np.testing.assert_array_equal(np.asarray(carry.traffic.news), [[0, 1, 0, 0], [0, 0, 0, 0]])  # (0,3): 0's news
    _, _, sent, _ = _counts(gossip(0.1), 2, edge_schedule=_Fixed(edges), node_schedule=nodes)
    np.testing.assert_array_equal(sent, [1, 2, 1, 0])  # a model swap goes both ways, news or not


def _python_count(topology, participants, one_way):
    """Per node, in Python: for every step and undirected edge (a, b) that exchanges (open, both
    ends answering), a message a -> b (and b -> a) unless ``one_way`` and its sender has not
    computed since that edge's last exchange."""
    sent, received = np.zeros(topology.n_nodes, int), np.zeros(topology.n_nodes, int)
    news = {}
    edge_active = np.asarray(participants.edge_active)
    node = participants.node_active
    computes = np.asarray(node.computes if isinstance(node, Activity) else node)
    answers = np.asarray(node.answers if isinstance(node, Activity) else node)
    for t in range(edge_active.shape[0]):
        for e, (a, b) in enumerate(topology.edges.tolist()):
            for src, dst in ((a, b), (b, a)):
                fresh = news.get((e, src), False) or bool(computes[t, src])
                if edge_active[t, e] and answers[t, a] and answers[t, b]:
                    if fresh or not (one_way and isinstance(node, Activity)):
                        sent[src] += 1
                        received[dst] += 1
                    news[e, src] = False
                else:
                    news[e, src] = fresh
    return sent, received


SETTINGS = {
    "bernoulli": dict(edge_schedule=mk.BernoulliEdges(0.4), node_schedule=mk.BernoulliNodes(0.7)),
    "paused": dict(edge_schedule=mk.BernoulliEdges(0.6), node_schedule=mk.BernoulliNodes(0.5, idle="answers")),
    "free": dict(edge_schedule=mk.BernoulliEdges(0.7), runtime=FreeRunning(speed=0.6, jitter=0.2, failure_prob=0.1)),
}


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("algorithm", [ecl_pdmm(0.1), ecl_admm(0.1), gossip(0.1), pairwise_gossip(0.1)],
                         ids=lambda a: a.name)
def test_counts_equal_a_per_node_count_of_the_engines_masks(algorithm, setting):
    topology = tp.erdos_renyi(7, 0.5, seed=3)
    engine, _, sent, received = _counts(algorithm, 30, topology=topology, **SETTINGS[setting])
    participants = engine.participation.along(jax.random.PRNGKey(0), 30)[1]
    want_sent, want_received = _python_count(topology, participants, algorithm.messages.one_way)
    np.testing.assert_array_equal(sent, want_sent)
    np.testing.assert_array_equal(received, want_received)
    assert sent.sum() == received.sum() > 0


def test_a_batch_counts_each_run_alone():
    topology, R = tp.ring(N), 3
    keys = jax.random.split(jax.random.PRNGKey(4), R)
    kw = dict(batch_size=2, eval_every=10, **SETTINGS["free"])
    batch = eng.Engine(ecl_pdmm(0.1), topology, _loss, runs=R, **kw)
    _, hist = batch.run(np.zeros((R, N, P), np.float32), _data(), 10, keys)
    alone = eng.Engine(ecl_pdmm(0.1), topology, _loss, **kw)
    for r in range(R):
        _, h = alone.run(np.zeros((N, P), np.float32), _data(), 10, keys[r])
        np.testing.assert_array_equal(hist["messages_sent"][:, r], h["messages_sent"])


def _node_bytes(tree, n):
    return sum(x.nbytes for x in jax.tree_util.tree_leaves(tree)) // n


@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16])
def test_the_payload_is_the_size_of_what_is_exchanged(dtype):
    topology = tp.ring(N, layout="edges")  # per-edge state without padding: bytes / 2E per message
    params = {"w": jnp.zeros((N, P, 2), dtype), "b": jnp.zeros((N, 2), dtype)}
    model = _node_bytes(params, N)
    assert model == 8 * np.dtype(dtype).itemsize

    def message_bytes(algorithm):
        engine = eng.Engine(algorithm, topology, _loss)
        return engine.message_bytes(engine.init(params, jax.random.PRNGKey(0)))

    two_e = topology.n_directed
    state = ecl_pdmm(0.1).init(params, topology)  # a dual y_{i|j} per directed edge
    assert message_bytes(ecl_pdmm(0.1)) == _node_bytes(state.duals.pairs, 1) // two_e == model
    rho = ecl(ECLConfig(lr=0.1, rho=0.5))  # and the model, kept as w_j^recv
    assert message_bytes(rho) == (_node_bytes(state.duals.pairs, 1) + _node_bytes(rho.init(params, topology).received,
                                                                                 1)) // two_e == 2 * model
    received = dsgd(0.1).init(params, topology).received
    assert message_bytes(dsgd(0.1)) == _node_bytes(received, 1) // two_e == model
    assert message_bytes(gossip(0.1)) == message_bytes(pairwise_gossip(0.1)) == model
    assert message_bytes(gradient_tracking(0.1)) == 2 * model  # model and tracker
    assert message_bytes(local_sgd(0.1)) == message_bytes(centralized(0.1)) == 0


def test_a_rule_that_does_not_say_is_not_counted():
    plain = gossip(0.1)._replace(messages=None)
    engine = eng.Engine(plain, tp.ring(N), _loss, batch_size=2, eval_every=2)
    carry, hist = engine.run(np.zeros((N, P), np.float32), _data(), 2, jax.random.PRNGKey(0))
    assert carry.traffic == () and "messages_sent" not in hist and engine.message_bytes(carry) is None
    silent = _counts(local_sgd(0.1), 3)
    assert silent[2].sum() == silent[3].sum() == 0
    assert comm.payload_bytes(comm.SILENT, {"w": jax.ShapeDtypeStruct((3,), jnp.float32)}) == 0
