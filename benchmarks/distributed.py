"""Two local processes against one, side by side on the same machine (issue 21).

    python benchmarks/distributed.py               # GPS at the main job's size, and a search
    python benchmarks/distributed.py --smoke       # seconds: the pipeline only
    python benchmarks/distributed.py --parts=gps --processes=2,4
    python benchmarks/distributed.py --pin --parts=gps
    python benchmarks/distributed.py --parts=evaluator --devices=1,2,4

GPS: `experiments.train_gps` on the README main job's logistic-regression training (1800
objectives, the cpu preset, 2 iterations): as one process with one CPU device, as N
processes on localhost (`lopt.distributed`), and as one process started as the binary starts
it (one CPU device per core). Per iteration: wall seconds and the stages' seconds (sample,
fit, LQG, S-step) from the run's history, their ratio to the first run, and the largest
relative difference of the costs (the same numbers up to round-off).

Search: `experiments.search_rules --config=cpu --strategy=random` (digits MLP, 7 learning
rates) for `--search_budget` rules; the median seconds of the iterations after the first
(compilation) and the rules each run sampled, which must be the same.

Evaluator: the search's sharded step alone, in one process with 1, 2, 4 host CPU devices
(`--xla_force_host_platform_device_count`): the median seconds to score one population of
random rules (`--population`, after compilation; the same rules at every device count), the
speed-up over one device, and the collective a run of several processes adds: the median
seconds of an all-gather, over the same devices, of one population's outputs (scores, the
divergence flags, the loss curves), and its share of the step. Where one machine has fewer
cores than devices, the devices share them: the table is what sharding costs and gains here,
not what separate hosts would.

Each run is a fresh set of processes (its own compilations), run one after the other, so both
see the same machine. The table states the machine's core count. One process uses every core
where XLA parallelises an operation (large products); several processes on one machine each
start a thread pool of that size, so `--pin` gives process i core i alone, and adds a first
GPS run of one process pinned to one core: the "one core" the ratios are then taken against.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import launch as launch_lib  # noqa: E402 (after the path is set)

STAGES = ("sample_seconds", "fit_seconds", "optimise_seconds", "policy_seconds")
COSTS = ("controller_cost", "policy_cost", "sample_cost", "kl")


def launch(module: str, args: list[str], num_processes: int, out: str, pin: bool = False,
           host_devices: int | None = None) -> tuple[float, str]:
    """Runs `python -m module args --out=out` as `num_processes` processes of one run (with
    `pin`, process i on core i mod the core count: `taskset`, so its XLA thread pool has one
    thread; each process with `host_devices` CPU devices, None: the binary's default);
    returns (wall seconds, process 0's standard error). Raises if any process fails."""
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", OPENBLAS_NUM_THREADS="1")
    env.pop("XLA_FLAGS", None)
    if host_devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={host_devices}"
    args = [*args, f"--out={out}"]
    commands = ([[sys.executable, "-m", module, *args]] if num_processes == 1 else
                launch_lib.commands(module, args, num_processes, launch_lib.free_port()))
    if pin:
        commands = [["taskset", "-c", str(index % os.cpu_count()), *command]
                    for index, command in enumerate(commands)]
    # Each process logs to its own file: a pipe left unread would fill and stall it.
    logs = [tempfile.TemporaryFile("w+") for _ in commands]
    started = time.perf_counter()
    processes = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                  stderr=log, text=True)
                 for command, log in zip(commands, logs, strict=True)]
    codes = [process.wait() for process in processes]
    seconds = time.perf_counter() - started
    errors = []
    for log in logs:
        log.seek(0)
        errors.append(log.read())
        log.close()
    for code, error in zip(codes, errors, strict=True):
        if code:
            raise RuntimeError(f"{module} failed:\n{error[-3000:]}")
    return seconds, errors[0]


def gps_part(counts: list[int], smoke: bool, pin: bool, host_devices: int, scratch: str
             ) -> list[str]:
    """The GPS table (module docstring): one process with one CPU device, several processes,
    and one process as the binary starts it (one CPU device per core); with `pin`, a first
    run of one process on one core is the reference of the ratios, and the several-process
    runs are pinned; with `host_devices` > 1, a last run of one process with that many CPU
    devices."""
    from lopt import gps
    args = (["--family=logistic_regression", "--config=smoke", "--num_train=6",
             "--num_iterations=2"] if smoke else
            ["--family=logistic_regression", "--config=cpu", "--num_train=1800",
             "--num_iterations=2"])
    runs = [("1, one device", 1, False, 1)]
    runs += [(f"{count}, one core each" if pin else str(count), count, pin, None)
             for count in counts if count > 1]
    runs.append((f"1, default ({os.cpu_count()} host devices)", 1, False, None))
    if pin:
        runs.insert(0, ("1, on one core", 1, True, None))
    if host_devices > 1:
        runs.append((f"1, {host_devices} host devices", 1, False, host_devices))
    histories, walls = {}, {}
    for label, count, pinned, devices in runs:
        out = os.path.join(scratch, f"gps_{len(histories)}")
        walls[label], _ = launch("experiments.train_gps", args, count, out, pinned, devices)
        histories[label] = gps.load(out).history
    reference = runs[0][0]
    one = histories[reference]
    lines = [f"GPS, `train_gps {' '.join(args)}`:", "",
             "| processes | iteration | wall s | sample s | fit s | LQG s | S-step s | "
             f"wall vs {reference} | largest relative cost difference |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, *_ in runs:
        for index, record in enumerate(histories[label]):
            difference = max(abs(record[name] - one[index][name]) / max(abs(one[index][name]),
                                                                         1e-300)
                             for name in COSTS)
            lines.append(
                f"| {label} | {index + 1} | {record['seconds']:.1f} | "
                + " | ".join(f"{record[name]:.1f}" for name in STAGES)
                + f" | {record['seconds'] / one[index]['seconds']:.2f} | {difference:.1e} |")
    lines.append("")
    lines.append("Whole runs (start-up, compilation, initialisation included): "
                 + ", ".join(f"{label}: {walls[label]:.0f} s" for label, *_ in runs))
    return lines


def search_part(counts: list[int], smoke: bool, budget: int, pin: bool, scratch: str
                ) -> list[str]:
    args = (["--config=smoke", "--strategy=random", "--budget=40"] if smoke else
            ["--config=cpu", "--strategy=random", f"--budget={budget}"])
    iteration_seconds, rules = {}, {}
    for count in counts:
        out = os.path.join(scratch, f"search_{count}")
        _, log = launch("experiments.search_rules", args, count, out, pin and count > 1)
        seconds = [float(value) for value in re.findall(r"this iteration ([0-9.]+)s", log)]
        iteration_seconds[count] = statistics.median(seconds[1:] or seconds)
        with open(os.path.join(out, "results.jsonl")) as file:
            rules[count] = [json.loads(line)["rule"] for line in file]
    one = iteration_seconds[1]
    lines = [f"Search, `search_rules {' '.join(args)}` (median of the iterations after the "
             "first):", "", "| processes | s per iteration | throughput vs 1 | same rules as 1 |",
             "|---|---|---|---|"]
    ratio = lambda seconds: one / seconds if seconds > 0 else float("nan")  # smoke: ~0 s
    lines += [f"| {count} | {iteration_seconds[count]:.2f} | {ratio(iteration_seconds[count]):.2f}"
              f" | {rules[count] == rules[1]} |" for count in counts]
    return lines


def evaluator_worker(population: int, repeats: int) -> None:
    """Prints one JSON line for this process's devices: the median seconds of scoring
    `population` random rules and of all-gathering their outputs (module docstring)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    from benchmarks.evaluator import random_population
    from benchmarks.timing import median_seconds
    from lopt.search import evaluator, tasks

    task = tasks.digits_mlp()
    config = evaluator.EvaluatorConfig()
    rules = random_population(jax.random.key(1), population)
    key = jax.random.key(0)
    scored = evaluator.evaluate(rules, task, config, key)  # compiles
    # The outputs each stage gathers: scores [segments, M], diverged [M], losses [steps, M].
    steps = config.epoch_steps(task)
    members = [(population * len(config.learning_rates), config.sweep_epochs * steps),
               (population, config.final_epochs * steps)]
    outputs = [(jnp.zeros((1, m)), jnp.zeros((m,), bool), jnp.zeros((n, m)))
               for m, n in members]
    mesh = Mesh(np.array(jax.devices()), ("members",))
    split = lambda leaf: P(*([None] * (leaf.ndim - 1)), "members")  # noqa: E731
    gather = jax.jit(jax.shard_map(
        lambda tree: jax.tree.map(
            lambda leaf: jax.lax.all_gather(leaf, "members", axis=leaf.ndim - 1, tiled=True),
            tree),
        mesh=mesh, in_specs=(jax.tree.map(split, outputs),), out_specs=P(), check_vma=False))
    seconds = median_seconds(
        {"gather": lambda: gather(outputs)}, repeats=15, calls=10)["gather"]
    step = median_seconds({"evaluate": lambda: jnp.asarray(
        evaluator.evaluate(rules, task, config, key).reward)}, repeats=repeats, calls=1)
    trained = len(set(scored.fingerprint[~scored.pruned].tolist()))
    print(json.dumps({"devices": jax.device_count(), "evaluate": step["evaluate"],
                      "gather": seconds, "trained": trained, "rewards": scored.reward.tolist()}))


def evaluator_part(device_counts: list[int], population: int, repeats: int) -> list[str]:
    """The evaluator table (module docstring), one fresh process per device count."""
    runs = {}
    for count in device_counts:
        env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
                   OPENBLAS_NUM_THREADS="1",
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={count}")
        printed = subprocess.run(
            [sys.executable, "-m", "benchmarks.distributed", "--evaluator_worker",
             f"--population={population}", f"--repeats={repeats}"],
            cwd=REPO, env=env, check=True, capture_output=True, text=True).stdout
        runs[count] = json.loads(printed.strip().splitlines()[-1])
    one = runs[device_counts[0]]
    lines = [f"Evaluator, {population} random depth-2 rules on digits_mlp "
             f"({one['trained']} trained, the paper's protocol), one process:", "",
             f"| host devices | s per population | speed-up vs {device_counts[0]} | all-gather s | "
             f"all-gather share | rewards equal to {device_counts[0]}'s (largest difference) |",
             "|---|---|---|---|---|---|"]
    for count, run in runs.items():
        differences = [abs(a - b) for a, b in zip(run["rewards"], one["rewards"], strict=True)]
        equal = sum(difference <= 1e-6 for difference in differences)
        lines.append(f"| {count} | {run['evaluate']:.2f} | "
                     f"{one['evaluate'] / run['evaluate']:.2f} | {run['gather']:.1e} | "
                     f"{run['gather'] / run['evaluate']:.1%} | {equal}/{len(differences)} "
                     f"({max(differences):.1e}) |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--parts", default="gps,search")
    parser.add_argument("--processes", default="2", help="process counts besides 1")
    parser.add_argument("--search_budget", type=int, default=150)
    parser.add_argument("--devices", default="1,2,4", help="host device counts (evaluator)")
    parser.add_argument("--population", type=int, default=64, help="rules (evaluator)")
    parser.add_argument("--repeats", type=int, default=3, help="timed populations (evaluator)")
    parser.add_argument("--evaluator_worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--gps_host_devices", type=int, default=0,
                        help="add a GPS run of one process with this many CPU devices")
    parser.add_argument("--pin", action="store_true",
                        help="pin process i of several to core i (one XLA thread each), and "
                        "add a GPS run of one process on one core as the reference")
    options = parser.parse_args()
    if options.evaluator_worker:
        evaluator_worker(options.population, options.repeats)
        return
    counts = [1, *map(int, options.processes.split(","))]
    scratch = tempfile.mkdtemp(prefix="lopt_distributed_")
    try:
        pinning = "; several processes pinned one per core" if options.pin else ""
        lines = [f"Machine: {os.cpu_count()} cores; every run is N processes on localhost"
                 f"{pinning}.", ""]
        if "gps" in options.parts:
            lines += gps_part(counts, options.smoke, options.pin, options.gps_host_devices,
                              scratch) + [""]
        if "search" in options.parts:
            lines += search_part(counts, options.smoke, options.search_budget, options.pin,
                                 scratch) + [""]
        if "evaluator" in options.parts:
            lines += evaluator_part(list(map(int, options.devices.split(","))),
                                    options.population, options.repeats)
        print("\n".join(lines))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
