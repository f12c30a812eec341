"""Neural Optimizer Search: child tasks on which candidate update rules are scored."""

from lopt.search import tasks
