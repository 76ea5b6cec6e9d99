"""ICML 2021 logistic regression on Fashion-MNIST, multiplex ring, under a free-running runtime.

Everything as in ``fashion_logistic_ring.py`` (the lockstep run) except how time runs,
as in ``fashion_logistic_random_free.py`` (its docstring says why each setting): nodes on
their own clocks with a 473.6-tick evaluation pause (3.7 x an epoch's training) after every
128 own steps, +-10 % jitter, random phases; the official slot table of this graph
("doublering"). Length: 8,800 rounds = 550 epochs = 550 x 601.6 = 330,880 ticks. lr stays
constant: the lockstep file's x 0.9 at epoch 410 would count ticks here (refused).

    ecl-jax run experiments/icml2021/fashion_logistic_ring_free.py --algorithms dsgd,pdmm-isvr   # 43-65 min each
"""

import dataclasses
import pathlib

from ecl_jax.config import load_config

CONFIG = dataclasses.replace(
    load_config(pathlib.Path(__file__).with_name("fashion_logistic_ring.py")),
    name="icml21_fashion_logistic_ring_free",
    edge_schedule="slots:K=8,table=doublering",
    runtime="free:pause_every=128,pause=473.6,jitter=0.1,phase=random",
    algorithms=("dsgd", "pdmm-isvr", "admm-isvr", "admm-isvr-shipped"),
    lr_decay=1.0,  # lr decay would count ticks under the free runtime (refused)
    lr_decay_every=0,
    steps=330_880,
    eval_every=1806,
    description="ICML21 logistic, Fashion-MNIST, multiplex ring, free-running runtime (evaluation pauses)",
)

# `--smoke`: the same pipeline on the embedded MNIST subset, seconds.
SMOKE = ["dataset=mnist5k", "steps=40", "eval_every=20", "n_test=200", "algorithms=pdmm-isvr,dsgd",
         "runtime=free:pause_every=8,pause=12,jitter=0.1,phase=random"]
