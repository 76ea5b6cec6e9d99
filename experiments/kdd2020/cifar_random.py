"""KDD 2020 sample code, CIFAR-10: 3 fully connected nodes, random exchange with p = 1/6.

The official ``edge-consensus-learning`` CIFAR-10 sample (docs/official_codes.md#kdd-2020-code;
docs/reproduction_setups.md#kdd-2020-sample-code):
every node holds classes {0,1,2,3} plus {6,9}, {4,7} or {5,8}, sampled with replacement
(shared classes: every holder samples all their images); the KDD20 GroupNorm CNN
(2,196,490 parameters); batch 100; PDMM-SGD / ADMM-SGD with mu = 200 (lr 0.005),
eta = 1, rho = 0.1 and the code's options (sqrt(fan_in) scaling, eta and rho split
over the edges, eta/mu held constant under the lr schedule, ADMM = per-step dual
smoothing); gossip SGD lr 0.05; single-model reference (lr 1/mu). lr x 0.95 every
10 code-epochs (5,000 steps). 200 code-epochs of 500 iterations = 100,000 steps.

    ecl-jax run experiments/kdd2020/cifar_random.py   # 100,000 steps, not timed here (it prints its estimate)

Needs CIFAR-10 (``data_dir`` with the python or binary archive, or TFDS) and a GPU:
about 2.2 M parameters x 3 nodes x 100,000 steps. Published test cross-entropy at
epoch 200 (README figure, by eye): gossip ~1.05-1.15 (oscillating), PDMM ~0.72,
ADMM ~0.75, reference ~0.75.
"""

import dataclasses
import pathlib

from ecl_jax.config import load_config

# Everything as in cifar_round_robin.py except:
CONFIG = dataclasses.replace(
    load_config(pathlib.Path(__file__).with_name("cifar_round_robin.py")),
    name="kdd20_cifar_random",
    edge_schedule="bernoulli:K=6",
    description="KDD20 sample code README figure: CIFAR-10, 3 nodes, random exchange p = 1/6",
)

# `--smoke`: the pipeline (class lists with replacement, lr decay, KDD options) on the
# embedded MNIST subset with a small MLP standing in for the CIFAR CNN (the CNN itself is
# tested in tests/test_models.py; compiling it for 4 algorithms takes minutes on a CPU).
SMOKE = ["dataset=mnist5k", "model=mlp", "steps=6", "eval_every=3", "n_train=300", "n_test=100",
         "batch_size=4", "lr_decay_every=3", "algorithms=ecl-admm,pairwise-gossip"]
