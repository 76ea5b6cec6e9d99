"""ICML 2021, logistic regression on Fashion-MNIST, multiplex ring (N1), N = 8, K = 8.

Setup of the official ECL-ISVR code (docs/reproduction_setups.md#icml21-data-split,
#icml21-hyperparameters-and-length): ring plus +-2 skips
(4-regular, 16 edges); the ICML21 split (8 of 10 classes per node, U(0.8, 1) class
shares, data_init_seed 11); a single Linear(784 -> 10) (7,850 parameters); batch 100,
lr 0.002, L2 0.01 on every node's loss; all nodes start from one model.

Exchange: ``slots:K=8,table=doublering`` - the ICML code's mechanism with its own slot
table for this graph (``ecl_jax/data/icml21_slots.json``): every directed edge owns a fixed
slot in [0, K) and, when the round counter hits it, swaps duals with its peer, so each
undirected edge exchanges up to twice per round. The paper's wording "once per K
inner iterations on average" is ``bernoulli:K=8`` (``--set edge_schedule=bernoulli:K=8``).

Sampling and lr as in the code: every epoch (128 steps) a node walks a fresh permutation
of 12,800 indices modulo its data count (``epoch_samples``); lr x 0.9 every 410 epochs
(StepLR; fires once, at epoch 410 of 550).

Length: the README figure's round axis ends at about 8800 rounds (= 70,400 steps);
metrics every 48 rounds (384 steps), as in the figure. PDMM-ISVR / ADMM-ISVR use the
paper's eta_i = 1/(lr |N(i)| (K-1)) (ADMM-ISVR: dual averaged once per exchange);
``--set pdmm-isvr.isvr_rule=code`` gives the code's rule. ``admm-isvr-shipped`` is what the
script run_AdmmISVR.sh ran (``--piw`` left at 1: the PDMM-ISVR update with the code's rule). PDMM-SGD / ADMM-SGD are the
KDD20 ECL updates with the KDD20 code's options (sqrt(fan_in) scaling, eta 1 and
rho 0.1 split over the edges); the ICML paper's values for them are not published.

    ecl-jax run experiments/icml2021/fashion_logistic_ring.py   # 70,400 steps: 6-13 min per algorithm on 2 cores

Needs Fashion-MNIST (Debian/Ubuntu: ``apt-get install dataset-fashion-mnist``).
Published finals (README SVGs, docs/reproduction_setups.md#icml21-published-numbers) are
drawn as dashed lines.
"""

from ecl_jax.config import RunConfig

_KDD_OPTIONS = {"eta": 1.0, "rho": 0.1, "eta_rule": "degree", "fan_in_scaling": True}

CONFIG = RunConfig(
    name="icml21_fashion_logistic_multiplex_ring",
    dataset="fashion_mnist",
    model="logistic",
    partition="icml21",
    partition_k=8,
    partition_seed=11,
    topology="multiplex_ring",
    hops=2,
    n_nodes=8,
    edge_schedule="slots:K=8,table=doublering",
    K=8,
    algorithms=("dsgd", "pdmm-isvr", "admm-isvr", "admm-isvr-shipped", "pdmm-sgd", "admm-sgd", "gradient-tracking",
                "centralized"),
    lr=0.002,
    lr_decay=0.9,
    lr_decay_every=410 * 128,
    batch_size=100,
    epoch_samples=12_800,
    l2=0.01,
    same_init=True,
    steps=70_400,
    eval_every=384,
    x_axis="round",
    options={"pdmm-sgd": dict(_KDD_OPTIONS), "admm-sgd": dict(_KDD_OPTIONS)},
    published={
        "test_acc": {"dsgd": 0.6540, "pdmm-isvr": 0.8082, "admm-isvr": 0.8093, "centralized": 0.8202},
        "test_loss": {"dsgd": 1.40, "pdmm-isvr": 0.598, "admm-isvr": 0.590, "centralized": 0.559},
    },
    description="ICML21 README figure: logistic regression, Fashion-MNIST, multiplex ring",
)

# `--smoke`: the same pipeline on the embedded MNIST subset, seconds.
SMOKE = ["dataset=mnist5k", "steps=16", "eval_every=8", "n_test=200"]
