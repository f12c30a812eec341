"""Neural Optimizer Search: child tasks, the population evaluator and rule fingerprints.

    task = lopt.search.tasks.digits_mlp()
    scores = lopt.search.evaluate([lopt.rules.parse("adam")], task, key=jax.random.key(0))
"""

from lopt.search import fingerprint, tasks
from lopt.search.evaluator import EvaluatorConfig, Scores, evaluate
