"""Extension (no official code has it): the ICML21 comparison on N = 64 nodes, torus graph.

The ICML21 logistic-regression setting scaled up: Fashion-MNIST, 8 of 10 classes per node
(ICML21 rule, seed 11; the class window shifts by 4 per node as in the official split),
L2 0.01, K = 8 with the ICML code's slot exchange, all nodes from one model. To reach
the informative regime in a CPU budget the step size is 0.01 (ICML: 0.002) and the
batch 32 per node; accuracy is compared at equal rounds.

    ecl-jax run experiments/scale/icml21_torus.py                      # N = 64; 0.5-3 min per algorithm
    ecl-jax run experiments/scale/icml21_torus.py --set n_nodes=256 --set name=scale_icml21_torus_n256   # ~4 min per algorithm
"""

import dataclasses
import pathlib

from ecl_jax.config import load_config

# Everything as in icml21_ring.py except:
CONFIG = dataclasses.replace(
    load_config(pathlib.Path(__file__).with_name("icml21_ring.py")),
    name="scale_icml21_torus_n64",
    topology="torus",
    description="ICML21 logistic Fashion-MNIST comparison at scale, torus graph",
)

SMOKE = ["dataset=mnist5k", "n_nodes=16", "steps=16", "eval_every=8", "n_test=200", "algorithms=pdmm-isvr,dsgd"]
