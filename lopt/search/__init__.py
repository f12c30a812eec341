"""Neural Optimizer Search: the search space, child tasks, the population evaluator, rule
fingerprints, the LSTM controller with PPO, evolution and random search, suites of children
scored against Adam through a funnel, and the resumable search driver.

    task = lopt.search.tasks.digits_mlp()
    scores = lopt.search.evaluate([lopt.rules.parse("adam")], task, key=jax.random.key(0))
    result = lopt.search.run(lopt.search.SearchConfig.preset("smoke"), jax.random.key(0),
                             out="runs/smoke")
    config = lopt.search.SearchConfig(lopt.search.Evolution(lopt.search.SearchSpace(depth=3)))
    config = lopt.search.SearchConfig.preset("cpu_suite")  # three children, a proxy funnel
"""

from lopt.search import fingerprint, ppo, strategies, suite, tasks
from lopt.search.controller import ControllerConfig, RuleController, RuleSamples
from lopt.search.driver import SearchConfig, SearchResult, run
from lopt.search.evaluator import EvaluatorConfig, Scores, evaluate
from lopt.search.ppo import PPOConfig, PPOState
from lopt.search.space import SearchSpace
from lopt.search.strategies import STRATEGIES, Evolution, PPOSearch, RandomSearch, Strategy
from lopt.search.suite import Proxy
