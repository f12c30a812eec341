r"""Tunes the hand-engineered baselines on training objectives and compares them on unseen ones.

  python -m experiments.compare_baselines --family=logistic_regression \
      --num_problems=100 --num_steps=100 --out=runs/compare_baselines

Each baseline's hyperparameters are grid-searched on `--num_train` training problems (by the
mean objective over all iterations), then all baselines run from the same initial iterates
on `--num_problems` test problems drawn with a different key. Writes into --out:
  margin_of_victory.png   mean margin of victory per iteration (paper Figures 1a-3a)
  example_problem_K.png   objective curves on two test problems (paper Figures 1b-c)
  curves.npz              objective values per algorithm, [num_problems, num_steps + 1]
  summary.md              tuned hyperparameters, mean final objective and margins
"""

import os

from experiments import common
from experiments.common import (
    check_baseline_names,
    define_comparison_flags,
    family_from_flag,
    prepare_output_dir,
    summary_table,
    tuned_comparison,
    write_comparison,
)

FLAGS = define_comparison_flags()


def main(argv):
    del argv
    check_baseline_names(FLAGS.baselines.value)
    family_name = FLAGS.family.value
    family = family_from_flag(FLAGS.family)
    out = prepare_output_dir(FLAGS.out.value)
    num_train, _, _, curves, tuned = tuned_comparison(family, FLAGS)
    margins = write_comparison(out, curves, family_name)
    with open(os.path.join(out, "summary.md"), "w") as file:
        file.write(f"# Baselines on {family_name}\n\n{FLAGS.num_problems.value} test problems, "
                   f"{num_train} training problems for tuning, {FLAGS.num_steps.value} steps, "
                   f"seed {FLAGS.seed.value}.\n\n" + summary_table(curves, tuned, margins))
    print(f"Wrote {os.path.join(out, 'margin_of_victory.png')}, curves.npz and summary.md")


if __name__ == "__main__":
    common.run(main)
