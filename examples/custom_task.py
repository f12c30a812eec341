"""Search update rules on your own model and data: a flax MLP on scikit-learn's breast cancer set.

    python -m experiments.search_rules --config=smoke --task=examples.custom_task:breast_cancer \
        --out=runs/breast_cancer
"""
import functools

import jax
import numpy as np
from sklearn.datasets import load_breast_cancer

import lopt
from lopt.data import Dataset, Split
from lopt.search import tasks


@functools.cache  # one task object, so compiled programs are reused
def breast_cancer() -> tasks.SupervisedTask:
    features, labels = load_breast_cancer(return_X_y=True)
    features = ((features - features.mean(0)) / features.std(0)).astype(np.float32)
    labels = labels.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(labels))
    train, validation = order[:455], order[455:]
    dataset = Dataset(Split(features[train], labels[train]),
                      Split(features[validation], labels[validation]), num_classes=2)
    return tasks.SupervisedTask("breast_cancer", tasks.MLP((32,), 2), dataset)


if __name__ == "__main__":
    config = lopt.search.SearchConfig.preset("smoke", task=breast_cancer(), budget=20)
    result = lopt.search.run(config, jax.random.key(0))
    print("best rule:", result.top[0]["rule"], "validation accuracy", result.top[0]["score"])
