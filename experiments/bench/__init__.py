"""Benchmark: node-steps per second, memory and scaling of the vectorised engine.

    python -m experiments.bench --quick          # 22 configurations, ~2 min on an idle 2-core VM
    python -m experiments.bench                  # full suite (long; see BENCHMARKS.md)
    ecl-jax bench --quick                        # the same through the CLI

Every configuration runs in a fresh subprocess (so its peak RSS, ``ru_maxrss``, is its
own) and reports one JSON line; the driver writes ``results.csv`` (every row) and
``results.md`` (tables with the ratios and the targets of issue #5, compile times and
the machine) into ``--out``. Measured, in one run and against each other:

* ``engine``: the vectorised run (``Engine``: sampling, vmapped gradients, algorithm
  step, one compiled ``lax.scan`` per chunk) for ECL-PDMM and gossip (D-PSGD), on a
  ring and an exponential graph, per-edge layout ``"auto"`` (shift: static rolls) unless
  stated; ``layout`` rows compare shift / slots / edges (the edges layout is the naive
  prototype's design: gather ``w[src]`` + ``segment_sum`` over a directed edge list);
* ``loop``: per-node Python loops over jitted single-node code, same maths:
  ``loop-node`` calls one jitted node step (sample, gradient, primal update,
  reflections y_{i|j}) per node, then passes the messages; ``loop-ops`` calls one
  jitted op per node (gradient, primal update) and per directed edge (reflection);
* ``bigbatch``: one model trained with SGD on the concatenated batch of all nodes
  (N*B samples per step; the same arithmetic without decentralisation);
* ``update``: the algorithm step alone with fixed gradients (primal update, dual
  exchange, aggregation), and ``exchange``: the dual exchange and aggregation alone,
  both as bytes/s of their minimal memory traffic, against an elementwise streaming op
  (``a <- c a + b``) over the same number of floats measured in the same process, in
  a loop (in place) and as fresh jitted calls (new output buffers each call);
* ``largeN``: logistic regression with ECL-PDMM on a ring and a torus up to N = 10,000
  nodes: peak memory at three sizes (linear fit);
* ``devices``: the same run on 1 and on 4 (fake CPU) devices with the node axis
  sharded (:mod:`ecl_jax.sharding`), with the collectives of the compiled step;
* ``precision``: float32 against bfloat16 compute (float32 state,
  :func:`ecl_jax.engine.mixed_precision`): speed, and accuracy after training on the
  embedded MNIST subset.

Node-steps/s = N * steps / wall time (best of the repeats, after a compile run);
samples/s = batch * node-steps/s. The workload data are synthetic MNIST-shaped arrays
(timing does not depend on the values), except for ``precision``.

Layout: :mod:`.workloads` (one function per kind above), :mod:`.runner` (plans,
subprocesses, budget, machine info, :func:`main`), :mod:`.report` (tables, targets,
output files), :mod:`.common` (constants shared by the three).
"""

from .common import BATCH
from .report import rebuild, summarize, write_outputs
from .runner import Plan, full_plan, machine_info, main, quick_plan, run_plan, run_worker
from .workloads import WORKLOADS, _timed_repeats

__all__ = [
    "BATCH", "Plan", "WORKLOADS", "full_plan", "machine_info", "main", "quick_plan", "rebuild", "run_plan",
    "run_worker", "summarize", "write_outputs", "_timed_repeats",
]
