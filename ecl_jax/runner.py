"""From a :class:`~ecl_jax.config.RunConfig` to a run folder with metrics, plots and checkpoints.

A run folder ``<out_dir>/<name>/`` holds:

* ``config.json`` - the resolved config; ``split.txt`` / ``split.csv`` - samples per node and class;
* ``metrics.csv`` - one row per metric point and algorithm;
* ``accuracy.png``, ``loss.png``, ``consensus.png`` - the side-by-side figures;
* ``checkpoints/<algorithm>.npz`` - the last good carry (state, step, key) and the
  metrics so far. Re-running the same command resumes from there and ends with
  metrics equal bit for bit to an uninterrupted run (randomness depends only on the
  seed and the step). Finished algorithms are not re-run.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import pathlib
import shutil
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ecl_jax import algorithms as algs
from ecl_jax import masks, topology as topo_mod
from ecl_jax.config import ConfigError, RunConfig, config_to_dict
from ecl_jax.engine import Carry, Engine, NodeData

__all__ = [
    "DivergenceError",
    "build_topology",
    "build_algorithm",
    "ALGORITHM_NAMES",
    "TOPOLOGY_NAMES",
    "prepare_data",
    "run_experiment",
    "RunResult",
]


class DivergenceError(RuntimeError):
    """NaN/inf in a run; the message names the step, algorithm and hyperparameters."""


TOPOLOGY_NAMES = (
    "ring", "multiplex_ring", "torus", "complete", "star", "erdos_renyi",
    "random_regular", "exponential", "icml21_random",
)


def build_topology(config: RunConfig) -> topo_mod.Topology:
    """The communication graph named by ``config.topology``."""
    n, name = config.n_nodes, config.topology
    if name == "ring":
        return topo_mod.ring(n)
    if name == "multiplex_ring":
        return topo_mod.multiplex_ring(n, config.hops)
    if name == "torus":
        rows = int(math.isqrt(n))
        while n % rows:
            rows -= 1
        if rows < 2:
            raise ConfigError(f"torus needs n_nodes = rows * cols with rows, cols >= 2; {n} is prime")
        return topo_mod.torus(rows, n // rows)
    if name == "complete":
        return topo_mod.complete(n)
    if name == "star":
        return topo_mod.star(n)
    if name == "erdos_renyi":
        return topo_mod.erdos_renyi(n, config.edge_prob, seed=config.seed)
    if name == "random_regular":
        return topo_mod.random_regular(n, config.degree, seed=config.seed)
    if name == "exponential":
        return topo_mod.exponential(n)
    if name == "icml21_random":
        if n != 8:
            raise ConfigError(f"topology icml21_random has 8 nodes; set n_nodes=8 (got {n})")
        return topo_mod.icml21_random()
    raise ConfigError(f"unknown topology {name!r}; valid: {', '.join(TOPOLOGY_NAMES)}")


ALGORITHM_NAMES = (
    "ecl-pdmm", "ecl-admm", "pdmm-isvr", "admm-isvr", "gossip", "pairwise-gossip",
    "dsgd", "gradient-tracking", "local", "centralized", "pdmm-sgd", "admm-sgd",
)

# Named variants: ICML21's "PDMM-SGD" / "ADMM-SGD" are the KDD20 ECL-PDMM / ECL-ADMM
# (same update, own name so both can run side by side with their own ``options``).
ALGORITHM_ALIASES = {"pdmm-sgd": "ecl-pdmm", "admm-sgd": "ecl-admm"}


def build_algorithm(name: str, config: RunConfig) -> algs.Algorithm:
    """An algorithm by name with the config's hyperparameters and ``options[name]``;
    an invalid hyperparameter becomes a :class:`ConfigError` naming the algorithm."""
    try:
        return _build_algorithm(name, config)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{name}: {err}") from None


def _build_algorithm(name: str, config: RunConfig) -> algs.Algorithm:
    opts = dict(config.options.get(name, {}))
    lr = opts.pop("lr", config.lr)
    if config.lr_decay != 1.0 and config.lr_decay_every > 0:
        # Step decay lr * decay^floor(step / every) (KDD20 CIFAR: x0.95 every 10 epochs).
        import optax

        lr = optax.exponential_decay(lr, config.lr_decay_every, config.lr_decay, staircase=True)
    momentum = opts.pop("momentum", None)
    base = ALGORITHM_ALIASES.get(name, name)
    if base in ("ecl-pdmm", "ecl-admm"):
        opts.setdefault("eta", config.eta)
        opts.pop("isvr_rule", None)
        opts.pop("K", None)
        builder = algs.ecl_pdmm if base == "ecl-pdmm" else algs.ecl_admm
        return builder(lr=lr, name=name, **opts)
    if name in ("pdmm-isvr", "admm-isvr"):
        rule = opts.pop("isvr_rule", "paper")
        K = opts.pop("K", config.K)
        opts.pop("eta", None)
        return algs.ecl_isvr(lr=lr, K=K, variant=name.split("-")[0], eta_rule=rule, **opts)
    sgd_like = {
        "gossip": algs.gossip,
        "pairwise-gossip": algs.pairwise_gossip,
        "dsgd": algs.dsgd,
        "gradient-tracking": algs.gradient_tracking,
        "local": algs.local_sgd,
        "centralized": algs.centralized,
    }
    if name not in sgd_like:
        raise ConfigError(f"unknown algorithm {name!r}; valid: {', '.join(ALGORITHM_NAMES)}")
    if opts:
        raise ConfigError(f"options {sorted(opts)} do not apply to {name}; it takes lr and momentum")
    import optax

    tx = optax.sgd(lr, momentum=momentum) if momentum else optax.sgd(lr)
    return sgd_like[name](lr, optimizer=tx)


def algorithm_settings(algorithm: algs.Algorithm) -> dict:
    """A printable summary of an algorithm's static hyperparameters."""
    cfg = algorithm.config
    if cfg is None:
        return {}
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = v if isinstance(v, (int, float, str, bool, type(None))) else type(v).__name__
    return out


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


@dataclasses.dataclass
class PreparedData:
    train: NodeData
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    counts: np.ndarray  # [N, C]
    split_text: str
    source: str
    input_shape: tuple


def prepare_data(config: RunConfig) -> PreparedData:
    """Load the data set, split it over the nodes, stack it node-wise."""
    from ecl_jax import datasets, partition

    ds = datasets.load_dataset(config.dataset, data_dir=config.data_dir)
    if config.n_train or config.n_test:
        ds = datasets.subsample(ds, config.n_train, config.n_test, seed=config.partition_seed or 0)
    kwargs: dict[str, Any] = {}
    method = config.partition
    if method == "k_classes" and config.partition_k is not None:
        kwargs["k"] = config.partition_k
    elif method in ("dirichlet", "quantity_skew"):
        kwargs["alpha"] = config.partition_alpha
    elif method == "classes":
        if config.class_lists is None:
            raise ConfigError("partition='classes' needs class_lists, e.g. [[6,7,8,9],[3,4,5],[0,1,2]]")
        kwargs["class_lists"] = [list(c) for c in config.class_lists]
        kwargs["replace"] = config.partition_replace
    elif method in ("kdd20_mnist", "kdd20_cifar10"):
        kwargs["replace"] = config.partition_replace
    elif method == "icml21":
        if config.partition_k is not None:
            kwargs["classes_per_node"] = config.partition_k
        kwargs["num_classes"] = ds.num_classes
    try:
        parts = partition.partition(ds.y_train, config.n_nodes, method, seed=config.partition_seed, **kwargs)
    except ValueError as err:
        raise ConfigError(f"data split failed: {err}") from None
    counts = partition.count_table(ds.y_train, parts, ds.num_classes)
    train = partition.node_data(ds.x_train, ds.y_train, parts)
    return PreparedData(
        train=train,
        x_test=ds.x_test,
        y_test=ds.y_test,
        num_classes=ds.num_classes,
        counts=counts,
        split_text=partition.format_count_table(counts),
        source=ds.source,
        input_shape=tuple(ds.x_train.shape[1:]),
    )


def make_eval_fn(model, eval_batch: int) -> Callable:
    """Test metrics per node and of the mean model, in batches of ``eval_batch``."""
    from ecl_jax.engine import mean_params
    from ecl_jax.models import predict_logits

    logits_fn = predict_logits(model)

    def eval_fn(params, eval_data):
        x, y = eval_data
        n_test = x.shape[0]
        nb = max(1, math.ceil(n_test / eval_batch))
        pad = nb * eval_batch - n_test
        xp = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]).reshape((nb, eval_batch) + x.shape[1:])
        yp = jnp.concatenate([y, jnp.zeros((pad,), y.dtype)]).reshape(nb, eval_batch)
        wp = (jnp.arange(nb * eval_batch) < n_test).reshape(nb, eval_batch).astype(jnp.float32)
        wbar = mean_params(params)

        def stats(p, xb, yb, wb):
            logits = logits_fn(p, xb)
            logp = jax.nn.log_softmax(logits.astype(jnp.float32))
            nll = -jnp.take_along_axis(logp, yb[:, None].astype(jnp.int32), 1)[:, 0]
            correct = (logits.argmax(-1) == yb).astype(jnp.float32)
            return jnp.stack([(nll * wb).sum(), (correct * wb).sum()])

        def body(acc, batch):
            xb, yb, wb = batch
            per_node = jax.vmap(stats, in_axes=(0, None, None, None))(params, xb, yb, wb)
            mean_m = stats(wbar, xb, yb, wb)
            return (acc[0] + per_node, acc[1] + mean_m), None

        n = jax.tree_util.tree_leaves(params)[0].shape[0]
        (per_node, mean_m), _ = jax.lax.scan(body, (jnp.zeros((n, 2)), jnp.zeros(2)), (xp, yp, wp))
        per_node, mean_m = per_node / n_test, mean_m / n_test
        return {
            "test_loss_node": per_node[:, 0],
            "test_acc_node": per_node[:, 1],
            "mean_model_test_loss": mean_m[0],
            "mean_model_test_acc": mean_m[1],
        }

    return eval_fn


# --------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------


CHECKPOINT_FORMAT = 2
"""Version of the checkpoint's state layout; 1 (no stamp): ECL duals per directed edge."""


def save_checkpoint(path: pathlib.Path, carry: Carry, history: list[dict], wall: float) -> None:
    """Atomically write the carry's leaves and the metric history."""
    leaves = jax.tree_util.tree_leaves(jax.device_get(carry))
    arrays = {f"leaf_{i}": np.asarray(a) for i, a in enumerate(leaves)}
    tmp = path.with_suffix(".tmp.npz")
    with open(tmp, "wb") as fh:
        np.savez(
            fh,
            format=CHECKPOINT_FORMAT,
            n_leaves=len(leaves),
            wall=wall,
            history=json.dumps(history, default=_jsonable),
            **arrays,
        )
    os.replace(tmp, path)


def load_checkpoint(path: pathlib.Path, template: Carry) -> tuple[Carry, list[dict], float]:
    """Restore a carry into the structure of ``template`` (a freshly initialised carry).

    Raises ValueError naming the first leaf whose shape or dtype differs (a checkpoint of
    another model, algorithm, topology or an older state format).
    """
    with np.load(path, allow_pickle=False) as z:
        fmt = int(z["format"]) if "format" in z.files else 1
        n = int(z["n_leaves"])
        leaves = [z[f"leaf_{i}"] for i in range(n)]
        history = json.loads(str(z["history"]))
        wall = float(z["wall"])
    fix = "delete it or re-run with --fresh"
    if fmt != CHECKPOINT_FORMAT:
        raise ValueError(
            f"checkpoint {path} has state format {fmt}; this ecl_jax reads format {CHECKPOINT_FORMAT} "
            f"(format 2: ECL duals stored per undirected edge, see ecl_jax.edge_pairs); {fix}"
        )
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    if len(paths_leaves) != n:
        raise ValueError(f"checkpoint {path} holds {n} arrays, this run's state has {len(paths_leaves)}; {fix}")
    for (kp, t), leaf in zip(paths_leaves, leaves):
        if np.shape(t) != np.shape(leaf) or np.dtype(t.dtype).kind != leaf.dtype.kind:
            raise ValueError(
                f"checkpoint {path} does not match this run's model/algorithm/topology: state"
                f"{jax.tree_util.keystr(kp)} is {leaf.dtype}{list(np.shape(leaf))} in the file, "
                f"{np.dtype(t.dtype)}{list(np.shape(t))} here; {fix}"
            )
    restored = [jnp.asarray(l, dtype=t.dtype) for (_, t), l in zip(paths_leaves, leaves)]
    return jax.tree_util.tree_unflatten(treedef, restored), history, wall


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(type(x))


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    """What :func:`run_experiment` returns: the run folder and per-algorithm histories."""

    run_dir: pathlib.Path
    histories: dict[str, list[dict]]
    final: dict[str, dict]
    plots: list[pathlib.Path]


def _duration(seconds: float) -> str:
    """Seconds as M:SS, or H:MM:SS from one hour on ("--:--" when unknown)."""
    if not math.isfinite(seconds):
        return "--:--"
    m, sec = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class Progress:
    """One line per chunk: steps/s, ETA, last metrics (stderr; silent with quiet)."""

    def __init__(self, algo: str, total: int, quiet: bool):
        self.algo, self.total, self.quiet = algo, total, quiet
        self.start, self.t0, self.s0 = time.time(), time.time(), None

    def __call__(self, step: int, metrics: dict):
        if self.quiet:
            return
        now = time.time()
        if self.s0 is None:  # first chunk includes compilation: no rate yet
            self.s0, self.t0 = step, now
            speed = f"first chunk {_duration(now - self.start)} incl. compilation"
        else:
            rate = (step - self.s0) / max(now - self.t0, 1e-9)
            eta = (self.total - step) / rate if rate > 0 else float("nan")
            speed = f"{rate:.3g} steps/s ETA {_duration(eta)}"
        acc = metrics.get("test_acc_node")
        acc_s = f" test_acc {np.mean(acc):.4f}" if acc is not None else ""
        loss = metrics.get("test_loss_node")
        loss_s = f" test_loss {np.mean(loss):.4f}" if loss is not None else ""
        print(
            f"[{self.algo}] step {step}/{self.total} ({100 * step / max(self.total, 1):.0f}%) "
            f"{speed}{acc_s}{loss_s} consensus {float(metrics['consensus_distance']):.3g}",
            file=sys.stderr,
            flush=True,
        )


def _history_row(metrics: dict, algo: str, config: RunConfig, mean_count: float, wall: float) -> dict:
    step = int(metrics["step"])
    row = {
        "step": step,
        "epoch": step * config.batch_size / mean_count,
        "round": step / config.K,
        "algorithm": algo,
        "samples_seen": step * config.batch_size * config.n_nodes,
        "wall_time": wall,
    }
    rename = {"node_loss": "train_loss_node", "mean_model_loss": "mean_model_train_loss"}
    for k, v in metrics.items():
        if k == "step":
            continue
        k = rename.get(k, k)
        v = np.asarray(v)
        if v.ndim == 0:
            row[k] = float(v)
        else:
            row[k] = v.tolist()
    return row


def _check_finite(metrics: dict, carry: Carry, algorithm: algs.Algorithm, step: int) -> None:
    vals = [np.asarray(v) for k, v in metrics.items() if k != "step"]
    bad = [not np.all(np.isfinite(v)) for v in vals]
    state_ok = all(bool(jnp.all(jnp.isfinite(l))) for l in jax.tree_util.tree_leaves(algorithm.node_params(carry.state)))
    if any(bad) or not state_ok:
        raise DivergenceError(
            f"{algorithm.name} diverged (NaN/inf) by step {step} with settings {algorithm_settings(algorithm)}; "
            "the last good checkpoint is kept. Lower lr (raise mu) or raise eta."
        )


def run_experiment(
    config: RunConfig,
    *,
    quiet: bool = False,
    fresh: bool = False,
    stop_after_chunks: int | None = None,
) -> RunResult:
    """Run every algorithm of ``config`` (resuming where checkpoints exist).

    ``stop_after_chunks`` simulates an interruption (tests): the run raises
    KeyboardInterrupt after that many chunks, with the checkpoint written.
    """
    from ecl_jax import models, plotting

    run_dir = pathlib.Path(config.out_dir) / config.name
    resolved = config_to_dict(config)
    cfg_path = run_dir / "config.json"
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        # published: plot annotation only; algorithms: each has its own checkpoint, so
        # adding one to a finished run folder runs only the new one.
        ignore = {"out_dir", "published", "algorithms"}
        defaults = config_to_dict(RunConfig())
        # A key missing from an older config.json is the same run if it has its default now.
        diff = sorted(
            k for k in set(old) | set(resolved)
            if k not in ignore and old.get(k, defaults.get(k)) != resolved.get(k)
        )
        if diff:
            raise ConfigError(
                f"{run_dir} holds a run with a different config (keys {diff}); "
                "use --fresh to overwrite it or --set name=... for a new folder"
            )
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(json.dumps(resolved, indent=2))

    topology = build_topology(config)
    algorithms = [build_algorithm(a, config) for a in config.algorithms]  # validate all first
    data = prepare_data(config)
    (run_dir / "split.txt").write_text(
        f"data: {config.dataset} ({data.source}); partition: {config.partition}; topology: {topology!r}\n\n"
        + data.split_text + "\n"
    )
    np.savetxt(run_dir / "split.csv", data.counts, fmt="%d", delimiter=",",
               header=",".join(f"class_{c}" for c in range(data.num_classes)))
    if not quiet:
        print(f"run folder: {run_dir}\n{topology!r}\n{data.split_text}", file=sys.stderr)

    model = models.get_model(config.model, num_classes=data.num_classes)
    loss_fn = models.classification_loss(model, l2=config.l2)
    key = jax.random.PRNGKey(config.seed)
    init_key, run_key = jax.random.split(key)
    params0 = models.init_node_params(model, init_key, config.n_nodes, data.input_shape, same_init=config.same_init)
    edge_sched = masks.edge_schedule_from_string(config.edge_schedule)
    node_sched = masks.AllNodes() if config.node_prob >= 1 else masks.BernoulliNodes(config.node_prob)
    eval_fn = make_eval_fn(model, min(config.eval_batch, len(data.y_test)))
    eval_data = (jnp.asarray(data.x_test), jnp.asarray(data.y_test))
    train = NodeData(*(jnp.asarray(a) for a in data.train))
    mean_count = float(np.mean(np.asarray(data.train.count)))

    histories: dict[str, list[dict]] = {}
    chunks_done = 0
    for algorithm in algorithms:
        name = algorithm.name if algorithm.name not in histories else algorithm.name + "_2"
        engine = Engine(
            algorithm, topology, loss_fn, batch_size=config.batch_size, edge_schedule=edge_sched,
            node_schedule=node_sched, eval_every=config.eval_every, eval_fn=eval_fn,
        )
        ckpt = run_dir / "checkpoints" / f"{name}.npz"
        carry = engine.init(params0, run_key)
        history: list[dict] = []
        wall0 = 0.0
        if ckpt.exists():
            carry, history, wall0 = load_checkpoint(ckpt, carry)
            if not quiet:
                print(f"[{name}] resuming from step {int(carry.step)}", file=sys.stderr)
        progress = Progress(name, config.steps, quiet)
        t_start = time.time()
        n_chunk = 0
        while int(carry.step) < config.steps:
            new_carry, metrics = engine.run_chunk(carry, train, config.steps, eval_data)
            metrics = jax.device_get(metrics)
            _check_finite(metrics, new_carry, algorithm, int(new_carry.step))
            carry = new_carry
            wall = wall0 + time.time() - t_start
            history.append(_history_row(metrics, name, config, mean_count, wall))
            progress(int(carry.step), metrics)
            n_chunk += 1
            done = int(carry.step) >= config.steps
            if done or n_chunk % config.checkpoint_every == 0:
                save_checkpoint(ckpt, carry, history, wall)
            chunks_done += 1
            if stop_after_chunks is not None and chunks_done >= stop_after_chunks and not done:
                raise KeyboardInterrupt(f"stopped after {chunks_done} chunks (test)")
        histories[name] = history

    write_metrics_csv(run_dir / "metrics.csv", histories, config.n_nodes)
    plots = plotting.plot_run(run_dir, histories, title=_title(config, topology), x_axis=config.x_axis,
                              published=config.published)
    final = {k: h[-1] for k, h in histories.items() if h}
    (run_dir / "final.json").write_text(json.dumps(summarize(final), indent=2))
    return RunResult(run_dir, histories, final, plots)


def _title(config: RunConfig, topology) -> str:
    return (f"{config.dataset}, {config.model}, {topology.name} (N={config.n_nodes}), "
            f"{config.partition} split, edges {config.edge_schedule}")


def summarize(final: dict[str, dict]) -> dict[str, dict]:
    """Final mean test accuracy/loss per algorithm."""
    out = {}
    for name, row in final.items():
        out[name] = {
            "step": row["step"],
            "epoch": row["epoch"],
            "test_acc_mean": float(np.mean(row["test_acc_node"])),
            "test_acc_min": float(np.min(row["test_acc_node"])),
            "test_loss_mean": float(np.mean(row["test_loss_node"])),
            "mean_model_test_acc": row["mean_model_test_acc"],
            "consensus_distance": row["consensus_distance"],
            "wall_time": row["wall_time"],
        }
    return out


def write_metrics_csv(path: pathlib.Path, histories: dict[str, list[dict]], n_nodes: int) -> None:
    """Flatten per-node lists into columns (``test_acc_node_3``) and write one CSV."""
    rows = []
    for hist in histories.values():
        for r in hist:
            flat = {}
            for k, v in r.items():
                if isinstance(v, list):
                    flat[f"{k.replace('_node', '')}_mean"] = float(np.mean(v))
                    for i, x in enumerate(v):
                        flat[f"{k}_{i}"] = x
                else:
                    flat[k] = v
            rows.append(flat)
    if not rows:
        return
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
