"""KDD 2020 sample code, MNIST: 3 fully connected nodes, round-robin exchange every 6 updates.

The official ``edge-consensus-learning`` MNIST sample (docs/official_codes.md#kdd-2020-code;
docs/reproduction_setups.md#kdd-2020-sample-code):
node classes {6,7,8,9}, {3,4,5}, {0,1,2} sampled with replacement; the KDD20 MNIST CNN
(1,199,882 parameters); batch 100; PDMM-SGD / ADMM-SGD with mu = 200 (lr 0.005),
eta = 1, rho = 0.1 and the code's options (eta and rho scaled per leaf by sqrt(fan_in)
and split over the node's edges; ADMM = per-step smoothing of the received dual);
the code's gossip SGD (sequential pairwise averaging with the last received models,
lr 0.05); the single-model reference (lr 1/mu). Exchange: each node swaps with one
neighbour, round-robin, every 6 of its updates (offsets 1, 3, 5).

The code's "epoch" is 600 iterations of batch 100 (60,000 samples drawn with
replacement); 50 epochs = 30,000 steps. The x axis is the step; divide by 600 for the
code's epochs. The paper-faithful ECL (no per-leaf scaling, DRS averaging) is
``--set ecl-pdmm.fan_in_scaling=false --set ecl-pdmm.eta_rule=constant ...``.

    ecl-jax run experiments/kdd2020/mnist_round_robin.py                   # full MNIST, 30,000 steps: ~70 min per algorithm
    ecl-jax run experiments/kdd2020/mnist_round_robin.py --set dataset=mnist5k \\
        --set model=mlp --set name=kdd20_mnist5k_round_robin --set steps=3000  # embedded subset, MLP: ~30 s each
    # (without model=mlp it trains the KDD CNN: 3,000 steps, about 7 min per algorithm at the 0.14 s per
    # step measured on a 2-core Zen 5 VM, hours on a slow one; the run prints its estimate before it starts)

Full MNIST needs the IDX files (``data_dir`` or ``$ECL_JAX_DATA_DIR``; see README).
Published curves (README figure, read by eye, test cross-entropy at epoch 50):
gossip ~0.045, PDMM ~0.035, ADMM ~0.04, reference ~0.03 (dashed lines).
"""

from ecl_jax.config import RunConfig

_KDD = {"lr": 0.005, "eta": 1.0, "rho": 0.1, "eta_rule": "degree", "fan_in_scaling": True}

CONFIG = RunConfig(
    name="kdd20_mnist_round_robin",
    dataset="mnist",
    model="kdd20_mnist_cnn",
    partition="classes",
    class_lists=((6, 7, 8, 9), (3, 4, 5), (0, 1, 2)),
    partition_replace=True,
    topology="complete",
    n_nodes=3,
    # the official offsets per node name (MELCHIOR 5, BALTHASAR 1, CASPER 3; docs/official_codes.md K11)
    edge_schedule="round_robin:interval=6,offsets=5/1/3",
    algorithms=("pairwise-gossip", "ecl-pdmm", "ecl-admm", "centralized"),
    lr=0.005,
    batch_size=100,
    steps=30_000,
    eval_every=600,
    x_axis="step",
    options={
        "pairwise-gossip": {"lr": 0.05},
        "ecl-pdmm": dict(_KDD),
        "ecl-admm": dict(_KDD, dual_smoothing=True, theta=1.0),
    },
    published={"test_loss": {"pairwise-gossip": 0.045, "ecl-pdmm": 0.035, "ecl-admm": 0.04, "centralized": 0.03}},
    description="KDD20 sample code README figure: MNIST, 3 nodes, round-robin exchange every 6 updates",
)

# `--smoke`: the real CNN on a few embedded MNIST digits, ECL-ADMM with the KDD20 options (seconds).
SMOKE = ["dataset=mnist5k", "steps=4", "eval_every=4", "n_train=60", "n_test=30", "batch_size=4",
         "algorithms=ecl-admm"]
