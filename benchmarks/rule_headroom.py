r"""How far rules of the language are from tuned Adam on the suite and held-out children.

  python -m benchmarks.rule_headroom [--rules="adam * exp(sign(g) * sign(m)) + 1e-1*w;rmsprop"]
      [--children=digits_mlp,digits_convnet,stdlib_lstm_lm,digits_mlp_3x128,digits_convnet_3x32]
      [--seeds=10] [--first_seed=5000]

Scores each rule exactly as `experiments.reproduce --which=nos_suite` scores its discovered
rules: the `cpu_suite` preset's protocol at depth 3 (half-decade sweep of 7 learning rates for
one epoch, five epochs with the best), Adam-normalised per seed and child, (reward - failure
reward) / (Adam's reward - failure reward). Prints per child Adam's raw reward (how saturated
the child is) and each rule's mean ± standard error over seeds of the normalised score, with
`*` where the margin over Adam exceeds two standard errors; then the same for the mean over
the children of the search's suite (`cpu_suite`'s tasks among --children).

This measures what the search could find, not what it found: the rules are written by hand.
"""

import argparse
import dataclasses
import time

import numpy as np

from experiments.reproduction import nos, nos_suite
from lopt import rules
from lopt.search import driver, tasks

DEFAULT_RULES = ("rmsprop", "adam * exp(sign(g) * sign(m))", "adam + 1e-1*w",
                 "adam * exp(sign(g) * sign(m)) + 1e-1*w",
                 "rmsprop * exp(sign(g) * sign(m)) + 1e-1*w")


def child(name: str):
    if name in tasks.TASKS:
        return tasks.get(name)
    return nos_suite.held_out_child(name)


def cell(scores: np.ndarray) -> str:
    """Mean ± standard error over seeds, as in the nos_suite table, `*` if it beats Adam."""
    return nos_suite._cell(scores) + (" *" if nos_suite.beats_adam(scores) else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default=";".join(DEFAULT_RULES),
                        help="';'-separated rule texts or lopt.rules.LIBRARY names")
    parser.add_argument("--children", default="digits_mlp,digits_convnet,stdlib_lstm_lm,"
                        "digits_mlp_3x128,digits_convnet_3x32")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first_seed", type=int, default=5000)
    args = parser.parse_args()
    texts = [text.strip() for text in args.rules.split(";") if text.strip()]
    named = {"adam": rules.LIBRARY["adam"]} | {
        text: rules.LIBRARY[text] if text in rules.LIBRARY else rules.parse(text)
        for text in texts}
    children = args.children.split(",")
    children = {name: child(name) for name in children}  # unknown names fail before training
    preset = driver.PRESETS["cpu_suite"]
    config = dataclasses.replace(preset.evaluator, depth=3, chunk_size=len(named))
    seeds = [args.first_seed + k for k in range(args.seeds)]
    per_child = {}
    for name, task in children.items():
        start = time.perf_counter()
        raw = nos.score_over_seeds(named, task, config, seeds)["reward"]  # [S, R]
        per_child[name] = nos_suite.normalise_rewards(raw, named, task, config, seeds)
        print(f"== {name}: Adam's reward {float(raw[0, 0]):.4f} (seed {seeds[0]}), "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        for index, text in enumerate(named):
            print(f"  {cell(per_child[name][:, index]):>18}  {text}", flush=True)
    suite = [name for name in preset.suite if name in per_child]
    if suite:
        aggregate = np.mean([per_child[name] for name in suite], axis=0)  # [S, R]
        print(f"== mean over {', '.join(suite)} ({len(seeds)} seeds)")
        for index, text in enumerate(named):
            print(f"  {cell(aggregate[:, index]):>18}  {text}", flush=True)


if __name__ == "__main__":
    main()
