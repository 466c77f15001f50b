"""The meta-RL family (:mod:`metarl.families`): MAML-TRPO, ProMP and the pretrained baseline on
task-parameterised Gymnasium environments."""

from __future__ import annotations

from typing import Any

from metarl.families import Family, as_float_tensor
from metarl.maml import Params
from metarl.rl.build import policy_module
from metarl.rl.evaluation import adapt_run, evaluate_rl
from metarl.rl.learner import RLLearner


def _evaluate(cfg: Any, learner_state: dict[str, Any], *, shots: int | None, pretrain_iterations: int,
              **kwargs: Any) -> dict[str, Any]:
    from metarl.config import ConfigError

    if shots is not None:
        raise ConfigError("--shots applies to sinusoid runs; an RL run samples env.episodes_per_task episodes")
    return evaluate_rl(cfg, learner_state, **kwargs)


def _adapt(run: Any, episodes: Any, *, steps: int) -> Params:
    return adapt_run(run.module, run.params, run.config, episodes, steps=steps)


RL = Family(build_learner=RLLearner, evaluate=_evaluate, module=policy_module, transform=as_float_tensor,
            adapt=_adapt)
