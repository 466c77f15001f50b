"""metarl: Model-Agnostic Meta-Learning (Finn et al. 2017, arXiv 1703.03400) for RL, regression and
few-shot classification, built on one functional core (:func:`metarl.maml.adapt`)."""

from metarl.api import Run, load, train
from metarl.fewshot.learner import TaskDistribution
from metarl.fewshot.tasks import TaskBatch
from metarl.maml import Params, adapt, adapt_batched

__all__ = ["Params", "Run", "TaskBatch", "TaskDistribution", "adapt", "adapt_batched", "load", "train"]
__version__ = "0.1.0"
