"""ICML 2021, logistic regression on Fashion-MNIST, random graph (N2), N = 8, K = 8.

Setup of the official ECL-ISVR code (docs/reproduction_setups.md#icml21-data-split,
#icml21-hyperparameters-and-length): the random graph with 10 edges
(0-1, 0-4, 0-6, 0-7, 1-6, 2-4, 2-5, 3-6, 3-7, 4-5); the ICML21 split (8 of 10 classes per node, U(0.8, 1) class
shares, data_init_seed 11); a single Linear(784 -> 10) (7,850 parameters); batch 100,
lr 0.002, L2 0.01 on every node's loss; all nodes start from one model.

Exchange: ``slots:K=8,table=random`` - the ICML code's mechanism with its own slot table
for this graph (``ecl_jax/data/icml21_slots.json``): every directed edge owns a fixed slot
in [0, K) and, when the round counter hits it, swaps duals with its peer, so each
undirected edge exchanges up to twice per round. The paper's wording "once per K
inner iterations on average" is ``bernoulli:K=8`` (``--set edge_schedule=bernoulli:K=8``).
Sampling as in the code (a fresh permutation of 12,800 indices per 128-step epoch); its
lr x 0.9 every 410 epochs never fires in 350 epochs.

Length: 350 epochs = 5,600 rounds (= 44,800 steps; the README figure's last point is at
about 5,584 rounds); metrics every 48 rounds (384 steps), as in the figure. PDMM-ISVR / ADMM-ISVR use the
paper's eta_i = 1/(lr |N(i)| (K-1)) (ADMM-ISVR: dual averaged once per exchange);
``--set pdmm-isvr.isvr_rule=code`` gives the code's rule. PDMM-SGD / ADMM-SGD are the
KDD20 ECL updates with the KDD20 code's options (sqrt(fan_in) scaling, eta 1 and
rho 0.1 split over the edges); the ICML paper's values for them are not published.

    ecl-jax run experiments/icml2021/fashion_logistic_random.py   # 44,672 steps: 4-5 min per algorithm on 2 cores

Needs Fashion-MNIST (Debian/Ubuntu: ``apt-get install dataset-fashion-mnist``).
Published finals (README SVGs, docs/reproduction_setups.md#icml21-published-numbers) are
drawn as dashed lines.
"""

import dataclasses
import pathlib

from ecl_jax.config import load_config

# Everything as in fashion_logistic_ring.py except:
CONFIG = dataclasses.replace(
    load_config(pathlib.Path(__file__).with_name("fashion_logistic_ring.py")),
    name="icml21_fashion_logistic_random",
    topology="icml21_random",
    edge_schedule="slots:K=8,table=random",
    steps=44_800,
    description="ICML21 README figure: logistic regression, Fashion-MNIST, random graph",
    published={
        "test_acc": {"dsgd": 0.6543, "pdmm-isvr": 0.8045, "admm-isvr": 0.8054, "centralized": 0.8167},
        "test_loss": {"dsgd": 1.39, "pdmm-isvr": 0.612, "admm-isvr": 0.609, "centralized": 0.568},
    },
)

# `--smoke`: the same pipeline on the embedded MNIST subset, seconds.
SMOKE = ["dataset=mnist5k", "steps=16", "eval_every=8", "n_test=200", "algorithms=pdmm-isvr,dsgd"]
