r"""Learns predicted step descent with Guided Policy Search on training objectives.

  python -m experiments.train_gps --family=logistic_regression --out=runs/gps_logistic \
      [--config=smoke|cpu|paper] [--coupling=mirror_descent|trajectory] \
      [--sampling=policy|controllers] [--dynamics_model=exact|fitted] [--resume]

`--family=neural_nets` trains the coordinate-wise learned optimizer of Li & Malik (2017b)
instead (`lopt.gps.coordinate_trainer`: 48-48-10 nets on projected digits, `--num_train`
initial params, default the preset's), which runs on networks of any size; `--config` picks
its scale (`experiments.reproduction.nets.SCALES`), and --coupling, --sampling,
--dynamics_model and --per_objective_momentum do not apply to it.

Training problems are drawn with `--seed` (the paper's number for the family unless
`--num_train` is given). Writes into --out:
  learned.npz                     the learned optimizer (`lopt.gps.load(OUT)` reads it)
  checkpoint.npz                  the loop state after the last finished iteration, with the
                                  run's identity (settings, key, problems; `lopt.checkpoint`)
  config.json                     every setting of the run (rewritten at each start)
  training.png                    mean training cost of the controllers and of the policy
With --resume an interrupted run continues from its checkpoint, and a finished one continues
with a larger --num_iterations; a checkpoint of another run (another seed, setting or problem
count) is refused, naming what differs. Without --resume an existing checkpoint in --out is an
error (so a finished run is never overwritten by accident).

Several processes (hosts) share one training with --coordinator_address, --num_processes
and --process_id (`lopt.distributed`; README, "Several machines"): the training objectives
are split over every process's devices for sampling, fitting and the LQG, and only process 0
writes --out. The coordinate-wise `--family=neural_nets` runs on one process.
"""

import dataclasses
import json
import os
import time

import jax
from absl import app, flags, logging

from experiments import common
from experiments.common import (
    define_family_flag,
    family_from_flag,
    prepare_output_dir,
    use_a_host_device_per_core,
    use_single_threaded_eigen,
)
from experiments.reproduction import nets
from lopt import checkpoint, distributed, gps, objectives, plotting, progress

NETS = "neural_nets"
FAMILY = define_family_flag(extra_names=(NETS,))
CONFIG = flags.DEFINE_enum("config", "cpu", sorted(gps.config.PRESETS), "GPS Config preset.")
NUM_TRAIN = flags.DEFINE_integer(
    "num_train", None, "Training problems (default: the paper's size for the family, else 90).",
    lower_bound=1)
NUM_ITERATIONS = flags.DEFINE_integer("num_iterations", None,
                                      "GPS iterations (default: the preset's).", lower_bound=0)
COUPLING = flags.DEFINE_enum("coupling", None, list(gps.config.COUPLINGS),
                             "Coupling of controllers and policy (default: the preset's).")
PER_OBJECTIVE_MOMENTUM = flags.DEFINE_bool(
    "per_objective_momentum", False, "Tune the initial momentum per objective as the paper "
    "does (default: the one setting best on average, which the policy can imitate).")
SAMPLING = flags.DEFINE_enum("sampling", None, list(gps.config.SAMPLINGS),
                             "Where samples come from (default: the preset's).")
DYNAMICS_MODEL = flags.DEFINE_enum("dynamics_model", None, list(gps.config.DYNAMICS_MODELS),
                                   "Local dynamics for the LQG (default: the preset's).")
SEED = flags.DEFINE_integer("seed", 0, "Seed for the training problems and the training.")
RESUME = flags.DEFINE_bool("resume", False, "Continue from the checkpoint in --out.")
OUT = flags.DEFINE_string("out", None, "Output directory (created if missing).", required=True)
common.define_distributed_flags()


def _check_output(out: str, identity_of_run) -> None:
    """On process 0 (`lopt.distributed.from_writer`): raises ValueError for an unwritable
    --out, a checkpoint without --resume, or another run's checkpoint (`identity_of_run()`,
    computed only when a checkpoint exists)."""
    try:
        prepare_output_dir(out)
    except app.UsageError as error:
        raise ValueError(str(error)) from error
    path = os.path.join(out, gps.trainer.CHECKPOINT)
    if not os.path.exists(path):
        return
    if not RESUME.value:
        raise ValueError(f"--out={out} already holds a checkpoint; pass --resume to continue "
                         "it or choose another directory")
    checkpoint.check(path, identity_of_run())


def _checked_output(identity_of_run) -> str:
    """--out, checked by process 0 (`_check_output`); app.UsageError on every process."""
    try:
        distributed.from_writer(lambda: _check_output(OUT.value, identity_of_run) or b"")
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    return OUT.value


def main(argv):
    del argv
    use_single_threaded_eigen()
    use_a_host_device_per_core()
    common.initialize_distributed()
    if FAMILY.value == NETS:
        if jax.process_count() > 1:
            raise app.UsageError(f"--family={NETS} trains on one process only")
        return train_coordinatewise()
    chosen = lambda *pairs: {name: flag.value for name, flag in pairs if flag.value is not None}
    config = gps.Config.preset(
        CONFIG.value,
        loop=chosen(("num_iterations", NUM_ITERATIONS), ("coupling", COUPLING),
                    ("sampling", SAMPLING)),
        dynamics=chosen(("model", DYNAMICS_MODEL)),
        rollouts={"momentum_per_objective": True} if PER_OBJECTIVE_MOMENTUM.value else {})
    family = family_from_flag(FAMILY)
    num_train = NUM_TRAIN.value or objectives.PAPER_NUM_TRAIN.get(FAMILY.value, 90)
    key_train, key_gps = jax.random.split(jax.random.key(SEED.value))
    problems = family.sample(key_train, num_train)
    # Refuse another run's checkpoint before any training work.
    out = _checked_output(lambda: gps.trainer.run_identity(config, family, problems, key_gps))
    # After the check: a resumed run differs at most in its iteration count.
    if distributed.is_writer():
        with open(os.path.join(out, "config.json"), "w") as file:
            json.dump({"family": FAMILY.value, "preset": CONFIG.value, "num_train": num_train,
                       "seed": SEED.value, "config": dataclasses.asdict(config)}, file,
                      indent=1)
    logging.info("GPS over %d %s devices in %d process(es)", jax.device_count(),
                 jax.default_backend().upper(), jax.process_count())
    started = time.time()
    with progress.job("train_gps", gps.trainer.plan(config)):
        learned = gps.train(family, problems, config, key_gps, checkpoint_dir=out)
    if not distributed.is_writer():
        return
    gps.save(learned, out)
    history = learned.history
    plotting.plot_training_costs(
        {name: [record[f"{name}_cost"] for record in history]
         for name in ("controller", "policy")},
        os.path.join(out, "training.png"), f"{FAMILY.value}: GPS ({CONFIG.value})")
    logging.info("trained in %.1fs (this process)", time.time() - started)
    print(f"Wrote the learned optimizer to {out} ({len(history)} iterations)")


def train_coordinatewise() -> None:
    """`--family=neural_nets`: coordinate-wise GPS (module docstring)."""
    scale = nets.SCALES[CONFIG.value]
    config = scale.config
    if NUM_ITERATIONS.value is not None:
        config = dataclasses.replace(config, num_iterations=NUM_ITERATIONS.value)
    num_train = NUM_TRAIN.value or scale.num_train
    # Refuse another run's checkpoint before writing anything.
    out = _checked_output(lambda: gps.coordinate_trainer.run_identity(
        config, *nets.training_run(num_train, SEED.value)))
    path = os.path.join(out, gps.trainer.CHECKPOINT)
    with open(os.path.join(out, "config.json"), "w") as file:
        json.dump({"family": NETS, "preset": CONFIG.value, "num_train": num_train,
                   "seed": SEED.value, "config": dataclasses.asdict(config)}, file, indent=1)
    with progress.job("train_gps"):
        learned, seconds = nets.train_learned(config, num_train, SEED.value, path)
    gps.save(learned, out)
    plotting.plot_training_costs({"policy": [record["area"] for record in learned.history]},
                                 os.path.join(out, "training.png"),
                                 f"{NETS}: coordinate-wise GPS ({CONFIG.value})")
    logging.info("trained in %.1fs (this process)", seconds)
    print(f"Wrote the learned optimizer to {out} ({len(learned.history)} iterations)")


if __name__ == "__main__":
    common.run(main)
