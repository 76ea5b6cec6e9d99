"""ICML 2021, the GroupNorm residual network on Fashion-MNIST, multiplex ring (N1), N = 8, K = 8.

Setup of the official ECL-ISVR code (docs/reproduction_setups.md#icml21-data-split,
#icml21-models, #icml21-hyperparameters-and-length): the ICML21 split (8 of 10 classes
per node, seed 11), the code's "ResNet-32" (``icml21_resnet``: a ResNet-34 layout with
a 7x7 stem, GroupNorm of 32 channels per group, dropout 0.1 / 0.5, 21.3 M parameters;
``--set model=resnet32_gn`` for He et al.'s 0.46 M CIFAR ResNet-32), batch 100, lr
0.002, L2 0.01, exchange ``slots:K=8`` (ICML code), all nodes from one model, 8800
rounds as in the README figure.

    ecl-jax run experiments/icml2021/fashion_resnet_ring.py   # GPU: 15-30 min per algorithm on one H100 (estimate)

Needs Fashion-MNIST (Debian: dataset-fashion-mnist) and a GPU: 8 x 21.3 M parameters plus one dual per directed edge
(32 x 21.3 M floats, about 3.4 GB in float32), 70,400 steps per algorithm.
Not run on the 2-core CPU of this repository's CI (see REPRODUCTION.md).
"""

import dataclasses
import pathlib

from ecl_jax.config import load_config

# The logistic-regression setup (fashion_logistic_ring.py) with the residual network:
CONFIG = dataclasses.replace(
    load_config(pathlib.Path(__file__).with_name("fashion_logistic_ring.py")),
    name="icml21_fashion_resnet_multiplex_ring",
    model="icml21_resnet",
    eval_batch=500,
    description="ICML21 README figure: GroupNorm ResNet, Fashion-MNIST, multiplex ring (N1)",
    published={
        "test_acc": {"dsgd": 0.8658, "pdmm-isvr": 0.9059, "admm-isvr": 0.9087, "centralized": 0.9108},
        "test_loss": {"dsgd": 0.377, "pdmm-isvr": 0.367, "admm-isvr": 0.376, "centralized": 0.355},
    },
)

# `--smoke` checks the pipeline (split, graph, algorithms, options) on the embedded MNIST
# subset with the logistic model: compiling the 21 M-parameter network for 8 nodes takes
# minutes on a CPU (the network itself is tested in tests/test_models.py).
SMOKE = ["dataset=mnist5k", "model=logistic", "steps=16", "eval_every=8", "n_test=200",
         "algorithms=pdmm-isvr,dsgd"]
