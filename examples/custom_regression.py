"""Your own task family: quadratics y = a x^2 + b (a ~ U[-1, 1], b ~ U[-1, 1], x ~ U[-2, 2]) and a small MLP,
meta-trained with MAML through ``metarl.train``, then loaded and adapted to a new quadratic from 5 points.

Run it as a module, so that the run's config can name ``custom_regression:Quadratics`` (a later
``metarl evaluate`` or ``metarl.load`` imports it with examples/ on the path, as here):

    PYTHONPATH=examples python -m custom_regression
    PYTHONPATH=examples metarl evaluate runs/quadratics --steps 5 --pretrain-iterations 0
"""

import torch
from torch import nn

import metarl


class Quadratics:
    """The task distribution (``metarl.TaskDistribution``): ``sample`` draws tasks from the given generator."""

    def __init__(self, shots: int = 5, query: int = 15) -> None:
        self.shots, self.query = shots, query

    def sample(self, n_tasks: int, generator: torch.Generator) -> metarl.TaskBatch:
        a, b = (2 * torch.rand(2, n_tasks, 1, 1, generator=generator) - 1).unbind()
        x = 4 * torch.rand(n_tasks, self.shots + self.query, 1, generator=generator) - 2
        y = a * x**2 + b  # [N, K + Q, 1]
        k = self.shots
        return metarl.TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:])


def make_mlp(hidden: int = 40) -> nn.Module:
    return nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))


if __name__ == "__main__":
    run_dir = metarl.train(tasks=Quadratics, model=make_mlp, loss="mse", num_iterations=500, meta_batch_size=10,
                           inner={"lr": 0.05}, eval={"every": 100}, logdir="runs/quadratics", overwrite=True)
    run = metarl.load(run_dir)
    task = Quadratics().sample(1, torch.Generator().manual_seed(123))
    fast = run.adapt(task.x_support[0], task.y_support[0], steps=5)
    for name, params in (("before", run.params), ("after 5 steps", fast)):
        mse = torch.mean((run.predict(params, task.x_query[0]) - task.y_query[0]) ** 2)
        print(f"query MSE {name}: {mse:.4f}")
