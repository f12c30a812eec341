r"""Compares a learned optimizer (predicted step descent) with the tuned baselines.

  python -m experiments.evaluate_learned --checkpoint=runs/gps_logistic \
      --family=logistic_regression --num_problems=100 --num_steps=100 --out=runs/eval_logistic

The baselines are tuned on `--num_train` training problems exactly as in
`experiments.compare_baselines` (same seed, same keys), and every algorithm runs from the same
initial iterates on `--num_problems` unseen test problems. Writes into --out:
  margin_of_victory.png   mean margin of victory per iteration (paper Figures 1a-3a)
  example_problem_K.png   objective curves on two test problems (paper Figures 1b-c, 2b-c, 3b-c)
  curves.npz              objective values per algorithm, [num_problems, num_steps + 1]
  summary.md              tuned settings, final objectives, margins at chosen iterations, and
                          the fraction of iterations where predicted step descent's mean margin
                          exceeds each baseline's
"""

import os

import numpy as np
from absl import app, flags

from experiments import common
from experiments.common import (
    LEARNED,
    check_baseline_names,
    comparison_table,
    define_comparison_flags,
    family_from_flag,
    prepare_output_dir,
    summary_table,
    tuned_comparison,
    write_comparison,
)
from lopt import evaluation, gps

CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Directory written by train_gps.",
                                 required=True)
FLAGS = define_comparison_flags()

def main(argv):
    del argv
    check_baseline_names(FLAGS.baselines.value)
    try:
        learned = gps.load(CHECKPOINT.value)
    except ValueError as error:
        raise app.UsageError(f"--checkpoint: {error}") from error
    family = family_from_flag(FLAGS.family)
    if learned.dim != family.dim:
        raise app.UsageError(f"--checkpoint holds an optimizer for dimension {learned.dim} "
                             f"({learned.family or 'unknown family'}), but --family="
                             f"{FLAGS.family.value} has dimension {family.dim}")
    out = prepare_output_dir(FLAGS.out.value)
    num_train, test, x0, curves, tuned = tuned_comparison(family, FLAGS)
    curves[LEARNED] = np.asarray(evaluation.run(gps.as_optax(learned), family, test,
                                                FLAGS.num_steps.value, x0=x0))
    tuned[LEARNED] = {}
    margins = write_comparison(out, curves, FLAGS.family.value)
    with open(os.path.join(out, "summary.md"), "w") as file:
        file.write(f"# Predicted step descent on {FLAGS.family.value}\n\nLearned optimizer from "
                   f"{CHECKPOINT.value}; {FLAGS.num_problems.value} test problems, {num_train} "
                   f"training problems for tuning the baselines, {FLAGS.num_steps.value} "
                   f"steps, seed {FLAGS.seed.value}.\n\n"
                   + summary_table(curves, tuned, margins) + "\n"
                   + comparison_table(margins, FLAGS.num_steps.value))
    print(f"Wrote {os.path.join(out, 'margin_of_victory.png')}, curves.npz and summary.md")


if __name__ == "__main__":
    common.run(main)
