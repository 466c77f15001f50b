"""Task-parameterised Gymnasium environments for meta-RL; importing registers them.

Ids (``gymnasium.make("metarl/HalfCheetahVel-v0")`` after ``import metarl.envs``, or
``gymnasium.make("metarl.envs:metarl/HalfCheetahVel-v0")`` without it):

========================  ====================================  =======
id                        task                                  horizon
========================  ====================================  =======
metarl/Navigation2D-v0    goal ~ U([-0.5, 0.5]^2)               100
metarl/HalfCheetahVel-v0  velocity ~ U[0, 2]                    200
metarl/HalfCheetahDir-v0  direction = +1 or -1                  200
metarl/AntVel-v0          velocity ~ U[0, 3]                    200
metarl/AntDir-v0          direction = +1 or -1                  200
metarl/AntGoal-v0         goal uniform in the disc of radius 3  200
========================  ====================================  =======

The task protocol (``sample_tasks``, ``reset(options={"task": ...})``, ``env.unwrapped.task``)
is the public interface :mod:`metarl.envs.protocol` (:class:`TaskEnv`, :func:`check_task_env`): any
registered id that follows it trains like these (through a generic sampler); the built-in ones
implement it with :mod:`envs.tasks`, and their batched path used by the sampler is
:func:`envs.vector.make_vec`. Every env takes ``oracle=True`` (``gymnasium.make(id, oracle=True)``),
which appends the task's parameters to the observation: the oracle baseline of Finn et al. 2017.
"""

from __future__ import annotations

from typing import Any

import gymnasium

from .locomotion import AntDirEnv, AntGoalEnv, AntVelEnv, HalfCheetahDirEnv, HalfCheetahVelEnv
from .navigation import Navigation2DEnv
from .protocol import TaskEnv, TaskProtocolError, check_task_env

__all__ = [
    "ENV_IDS",
    "AntDirEnv",
    "AntGoalEnv",
    "AntVelEnv",
    "HalfCheetahDirEnv",
    "HalfCheetahVelEnv",
    "Navigation2DEnv",
    "TaskEnv",
    "TaskProtocolError",
    "builtin_id",
    "check_task_env",
    "describe",
    "format_envs_table",
    "is_builtin",
]

#: id -> (entry point, episode length)
_REGISTRY: dict[str, tuple[str, int]] = {
    "metarl/Navigation2D-v0": ("metarl.envs.navigation:Navigation2DEnv", 100),
    "metarl/HalfCheetahVel-v0": ("metarl.envs.locomotion:HalfCheetahVelEnv", 200),
    "metarl/HalfCheetahDir-v0": ("metarl.envs.locomotion:HalfCheetahDirEnv", 200),
    "metarl/AntVel-v0": ("metarl.envs.locomotion:AntVelEnv", 200),
    "metarl/AntDir-v0": ("metarl.envs.locomotion:AntDirEnv", 200),
    "metarl/AntGoal-v0": ("metarl.envs.locomotion:AntGoalEnv", 200),
}
ENV_IDS: tuple[str, ...] = tuple(_REGISTRY)

for _id, (_entry_point, _steps) in _REGISTRY.items():
    if _id not in gymnasium.registry:
        gymnasium.register(id=_id, entry_point=_entry_point, max_episode_steps=_steps)


def builtin_id(env_id: str, who: str) -> str:
    """``env_id`` without a ``metarl.envs:`` prefix, checked to be a built-in id (for the fast samplers
    only: other ids run on :mod:`metarl.rl.generic_sampler`); ``who`` names the caller in the error."""
    env_id = env_id.removeprefix("metarl.envs:")
    if env_id not in ENV_IDS:
        raise ValueError(f"{who}: unknown env id {env_id!r}; known: {list(ENV_IDS)}")
    return env_id


def is_builtin(env_id: str) -> bool:
    """Whether ``env_id`` (a ``metarl.envs:`` prefix allowed) is a built-in id, which the fast batched
    samplers run; any other registered id that follows :mod:`metarl.envs.protocol` runs on the generic one."""
    return env_id.removeprefix("metarl.envs:") in ENV_IDS


def describe() -> list[dict[str, Any]]:
    """One dict per environment: ``id``, ``observation_shape``, ``action_shape``, ``task_space``
    (in words) and ``horizon`` (the registered ``max_episode_steps``)."""
    rows = []
    for env_id in ENV_IDS:
        env = gymnasium.make(env_id)
        try:
            rows.append(
                {
                    "id": env_id,
                    "observation_shape": tuple(env.observation_space.shape),
                    "action_shape": tuple(env.action_space.shape),
                    "task_space": env.unwrapped.task_space.describe(),
                    "horizon": env.spec.max_episode_steps,
                }
            )
        finally:
            env.close()
    return rows


def format_envs_table() -> str:
    """:func:`describe` as a plain-text table (what ``metarl envs`` prints)."""
    header = ("id", "obs", "action", "horizon", "tasks")
    lines = [
        (r["id"], str(r["observation_shape"]), str(r["action_shape"]), str(r["horizon"]), r["task_space"])
        for r in describe()
    ]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()

    return "\n".join([fmt(header), fmt(tuple("-" * w for w in widths)), *(fmt(r) for r in lines)])
