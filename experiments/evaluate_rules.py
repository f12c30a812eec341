r"""Scores update rules on a child task with the population evaluator.

  python -m experiments.evaluate_rules --rules="g * exp(sign(g) * sign(m)),adam,sgd" \
      --task=digits_mlp --out=runs/evaluate_rules
  python -m experiments.evaluate_rules --rules=library --task=digits_mlp --out=DIR

`--rules` is a comma-separated list of rule texts or names from `lopt.rules.LIBRARY`
(commas inside parentheses belong to the rule), or `library` for every library rule.
Every rule gets the paper's protocol (learning-rate sweep, then the best rate trained for the
full budget; see `lopt.search.evaluator`). Writes into --out:
  scores.csv   rule, val_accuracy, learning_rate, train_loss, diverged
  scores.md    the same as a table, best first
  scores.png   validation accuracy per rule (bar chart)
"""

import csv
import os
import time

import jax
from absl import app, flags, logging

from experiments import common
from lopt import plotting, rules, user_code
from lopt.search import evaluator, tasks

RULES = flags.DEFINE_string("rules", "library", "Comma-separated rule texts or library names, "
                            "or 'library'.")
TASK = flags.DEFINE_string("task", "digits_mlp", f"Child task: one of {', '.join(tasks.TASKS)}, "
                          "or 'module:attribute' naming your own (lopt.search.tasks).")
flags.register_validator("task", lambda name: name in tasks.TASKS or user_code.is_spec(name),
                         f"--task must be one of {', '.join(tasks.TASKS)} or 'module:attribute'")
DATA_DIR = flags.DEFINE_string("data_dir", None, "Local CIFAR-10 directory (cifar10_* tasks).")
OUT = flags.DEFINE_string("out", None, "Output directory (created if missing).", required=True)
SEED = flags.DEFINE_integer("seed", 0, "Seed for initialisation, minibatches and rule noise.")
SWEEP_EPOCHS = flags.DEFINE_integer("sweep_epochs", 1, "Epochs per learning rate in the sweep.",
                                    lower_bound=1)
FINAL_EPOCHS = flags.DEFINE_integer("final_epochs", 5, "Epochs with the best learning rate.",
                                    lower_bound=1)
STEPS_PER_EPOCH = flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: one "
                                       "pass over the training set).", lower_bound=1)
BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Minibatch size.", lower_bound=1)
LEARNING_RATES = flags.DEFINE_list("learning_rates", None, "Sweep (default 1e-5 ... 1e1).")
CHUNK_SIZE = flags.DEFINE_integer("chunk_size", 32, "Candidates per compiled call.",
                                  lower_bound=1)


def split_rules(text: str) -> list[str]:
    """Splits on commas outside parentheses: "clip(g, 1e-4),adam" -> ["clip(g, 1e-4)", "adam"]."""
    parts, depth, current = [], 0, []
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def parse_rules(text: str) -> list[tuple[str, rules.Rule]]:
    """(display name, Rule) pairs; library names keep their name, texts their canonical form."""
    if text.strip() == "library":
        return list(rules.LIBRARY.items())
    named = []
    for part in split_rules(text):
        if part in rules.LIBRARY:
            named.append((part, rules.LIBRARY[part]))
            continue
        try:
            rule = rules.parse(part)
        except rules.RuleSyntaxError as error:
            raise app.UsageError(f"--rules: cannot parse {part!r}: {error}") from error
        named.append((str(rule), rule))
    if not named:
        raise app.UsageError("--rules is empty")
    return named


def main(argv):
    del argv
    named_rules = parse_rules(RULES.value)
    try:
        rates = tuple(float(r) for r in LEARNING_RATES.value) if LEARNING_RATES.value else None
        config = evaluator.EvaluatorConfig(
            **({"learning_rates": rates} if rates else {}), batch_size=BATCH_SIZE.value,
            steps_per_epoch=STEPS_PER_EPOCH.value, sweep_epochs=SWEEP_EPOCHS.value,
            final_epochs=FINAL_EPOCHS.value, chunk_size=CHUNK_SIZE.value)
        task = tasks.get(TASK.value, data_dir=DATA_DIR.value)
        os.makedirs(OUT.value, exist_ok=True)
        if not os.access(OUT.value, os.W_OK):
            raise OSError(f"{OUT.value} is not writable")
    except (ValueError, OSError) as error:
        raise app.UsageError(str(error)) from error

    start = time.time()
    logging.info("Scoring %d rules on %s (%d learning rates each, then the best trained for %d "
                 "epochs)", len(named_rules), TASK.value, len(config.learning_rates),
                 config.final_epochs)
    scores = evaluator.evaluate([rule for _, rule in named_rules], task, config,
                                jax.random.key(SEED.value))
    elapsed = time.time() - start
    logging.info("Scored %d rules in %.1fs (%.2f rules/s)", len(named_rules), elapsed,
                 len(named_rules) / elapsed)

    rows = sorted(zip([name for name, _ in named_rules], scores.val_accuracy,
                      scores.learning_rate, scores.train_loss, scores.diverged, strict=True),
                  key=lambda row: -row[1])
    with open(os.path.join(OUT.value, "scores.csv"), "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["rule", "val_accuracy", "learning_rate", "train_loss", "diverged"])
        writer.writerows((name, f"{acc:.6f}", f"{lr:.0e}", f"{loss:.6f}", bool(div))
                         for name, acc, lr, loss, div in rows)
    with open(os.path.join(OUT.value, "scores.md"), "w") as file:
        file.write(f"# Rules on {TASK.value}\n\n| rule | validation accuracy | learning rate | "
                   "train loss | diverged |\n|---|---|---|---|---|\n")
        file.writelines(f"| `{name}` | {acc:.4f} | {lr:.0e} | {loss:.4f} | {bool(div)} |\n"
                        for name, acc, lr, loss, div in rows)
    plotting.plot_rule_scores({name: acc for name, acc, *_ in rows},
                              os.path.join(OUT.value, "scores.png"),
                              f"Validation accuracy on {TASK.value}")
    print(f"Wrote {os.path.join(OUT.value, 'scores.csv')}, scores.md and scores.png")


if __name__ == "__main__":
    common.run(main)
