"""KDD 2020 sample code, CIFAR-10: 3 fully connected nodes, round-robin exchange every 6 updates.

The official ``edge-consensus-learning`` CIFAR-10 sample (docs/official_codes.md#kdd-2020-code;
docs/reproduction_setups.md#kdd-2020-sample-code):
every node holds classes {0,1,2,3} plus {6,9}, {4,7} or {5,8}, sampled with replacement
(shared classes: every holder samples all their images); the KDD20 GroupNorm CNN
(2,196,490 parameters); batch 100; PDMM-SGD / ADMM-SGD with mu = 200 (lr 0.005),
eta = 1, rho = 0.1 and the code's options (sqrt(fan_in) scaling, eta and rho split
over the edges, eta/mu held constant under the lr schedule, ADMM = per-step dual
smoothing); gossip SGD lr 0.05; single-model reference (lr 1/mu). lr x 0.95 every
10 code-epochs (5,000 steps). 200 code-epochs of 500 iterations = 100,000 steps.

    ecl-jax run experiments/kdd2020/cifar_round_robin.py   # 100,000 steps, not timed here (it prints its estimate)

Needs CIFAR-10 (``data_dir`` with the python or binary archive, or TFDS) and a GPU:
about 2.2 M parameters x 3 nodes x 100,000 steps. Published test cross-entropy at
epoch 200 (README figure, by eye): gossip ~1.05-1.15 (oscillating), PDMM ~0.72,
ADMM ~0.75, reference ~0.75.
"""

from ecl_jax.config import RunConfig

_KDD = {"lr": 0.005, "eta": 1.0, "rho": 0.1, "eta_rule": "degree", "fan_in_scaling": True, "eta_follows_lr": True}

CONFIG = RunConfig(
    name="kdd20_cifar_round_robin",
    dataset="cifar10",
    model="kdd20_cifar_cnn",
    partition="classes",
    class_lists=((0, 1, 2, 3, 6, 9), (0, 1, 2, 3, 4, 7), (0, 1, 2, 3, 5, 8)),
    partition_replace=True,
    topology="complete",
    n_nodes=3,
    # the official offsets per node name (MELCHIOR 5, BALTHASAR 1, CASPER 3; docs/official_codes.md K11)
    edge_schedule="round_robin:interval=6,offsets=5/1/3",
    algorithms=("pairwise-gossip", "ecl-pdmm", "ecl-admm", "centralized"),
    lr=0.005,
    lr_decay=0.95,
    lr_decay_every=5_000,
    batch_size=100,
    steps=100_000,
    eval_every=2_500,
    x_axis="step",
    options={
        "pairwise-gossip": {"lr": 0.05},
        "ecl-pdmm": dict(_KDD),
        "ecl-admm": dict(_KDD, dual_smoothing=True, theta=1.0),
    },
    published={"test_loss": {"pairwise-gossip": 1.10, "ecl-pdmm": 0.72, "ecl-admm": 0.75, "centralized": 0.75}},
    description="KDD20 sample code README figure: CIFAR-10, 3 nodes, round-robin exchange every 6 updates",
)

# `--smoke`: the pipeline (class lists with replacement, lr decay, KDD options) on the
# embedded MNIST subset with a small MLP standing in for the CIFAR CNN (the CNN itself is
# tested in tests/test_models.py; compiling it for 4 algorithms takes minutes on a CPU).
SMOKE = ["dataset=mnist5k", "model=mlp", "steps=6", "eval_every=3", "n_train=300", "n_test=100",
         "batch_size=4", "lr_decay_every=3", "algorithms=ecl-admm,pairwise-gossip"]
