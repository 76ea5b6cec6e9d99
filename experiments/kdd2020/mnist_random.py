"""KDD 2020 sample code, MNIST: 3 fully connected nodes, random exchange with p = 1/6.

The official ``edge-consensus-learning`` MNIST sample (docs/official_codes.md#kdd-2020-code;
docs/reproduction_setups.md#kdd-2020-sample-code):
node classes {6,7,8,9}, {3,4,5}, {0,1,2} sampled with replacement; the KDD20 MNIST CNN
(1,199,882 parameters); batch 100; PDMM-SGD / ADMM-SGD with mu = 200 (lr 0.005),
eta = 1, rho = 0.1 and the code's options (eta and rho scaled per leaf by sqrt(fan_in)
and split over the node's edges; ADMM = per-step smoothing of the received dual);
the code's gossip SGD (sequential pairwise averaging with the last received models,
lr 0.05); the single-model reference (lr 1/mu). Exchange: every edge independently
with probability 1/6 per step (the same rate as the code's round-robin; second figure).

The code's "epoch" is 600 iterations of batch 100 (60,000 samples drawn with
replacement); 50 epochs = 30,000 steps. The x axis is the step; divide by 600 for the
code's epochs. The paper-faithful ECL (no per-leaf scaling, DRS averaging) is
``--set ecl-pdmm.fan_in_scaling=false --set ecl-pdmm.eta_rule=constant ...``.

    ecl-jax run experiments/kdd2020/mnist_random.py                   # full MNIST, 30,000 steps: ~70 min per algorithm
    ecl-jax run experiments/kdd2020/mnist_random.py --set dataset=mnist5k \\
        --set model=mlp --set name=kdd20_mnist5k_random --set steps=3000  # embedded subset, MLP: ~30 s each
    # (without model=mlp it trains the KDD CNN: 3,000 steps, about 7 min per algorithm at the 0.14 s per
    # step measured on a 2-core Zen 5 VM, hours on a slow one; the run prints its estimate before it starts)

Full MNIST needs the IDX files (``data_dir`` or ``$ECL_JAX_DATA_DIR``; see README).
Published curves (README figure, read by eye, test cross-entropy at epoch 50):
gossip ~0.045, PDMM ~0.035, ADMM ~0.04, reference ~0.03 (dashed lines).
"""

import dataclasses
import pathlib

from ecl_jax.config import load_config

# Everything as in mnist_round_robin.py except:
CONFIG = dataclasses.replace(
    load_config(pathlib.Path(__file__).with_name("mnist_round_robin.py")),
    name="kdd20_mnist_random",
    edge_schedule="bernoulli:K=6",
    description="KDD20 sample code README figure: MNIST, 3 nodes, random exchange p = 1/6",
)

# `--smoke`: the pipeline with a small MLP standing in for the CNN (exercised by the
# round-robin file's smoke and tests/test_models.py), seconds.
SMOKE = ["dataset=mnist5k", "model=mlp", "steps=12", "eval_every=6", "n_train=300", "n_test=100",
         "batch_size=8", "algorithms=ecl-pdmm,centralized"]
