"""The task protocol: what metarl needs from a task-parameterised Gymnasium environment.

Any registered Gymnasium id whose env follows it trains, validates, evaluates and loads through
``metarl train`` / ``metarl evaluate`` / ``metarl.load`` (``env.id: mypkg/MyEnv-v0``, or
``env.id: "mymodule:mypkg/MyEnv-v0"`` to import the module that registers it). The built-in ids
(:data:`metarl.envs.ENV_IDS`) run on fast batched samplers; every other id on
:class:`metarl.rl.generic_sampler.GenericSampler`, one ``gymnasium.make`` env per episode.

What ``env.unwrapped`` provides (:class:`TaskEnv`):

- ``sample_tasks(n, rng) -> list[dict]``: ``n`` tasks drawn with ``rng`` (a
  ``numpy.random.Generator``; draw from it only, so that runs are reproducible). A task is a plain
  dict, e.g. ``{"goal": (x, y)}``; it is stored in checkpoints and JSON results, so keep its values
  plain (numbers, tuples, lists, strings).
- ``env.reset(seed=..., options={"task": task})`` sets the task; it persists across later
  ``reset()`` calls without one (so an autoreset keeps it) until another is given;
- ``task``: the current task, readable back (a dict equal to the one given to ``reset``);
- optional, ``sample_test_tasks(n, rng) -> list[dict]``: held-out tasks from a fixed test set
  (Meta-World's); ``metarl evaluate`` draws from it where it exists, from ``sample_tasks`` otherwise;
- optional, ``info["success"]`` in ``step``: episodes then carry a success flag (true at some step)
  and training and evaluation report success rates;
- optional, ``gymnasium.make(id, oracle=True)`` (``env.oracle: true`` in a config): observations
  end with the task's parameters, the oracle baseline of Finn et al. 2017 (arXiv 1703.03400,
  sec. 5.3).

And what metarl's policies need of the spaces: a flat ``Box`` observation space and a ``Box`` or
``Discrete`` action space. Episodes last at most the registered ``max_episode_steps`` (the
sampler's horizon); ``terminated`` or ``truncated`` ends an episode early.

:func:`check_task_env` checks an env against this (``metarl train`` calls it before anything is
written) and raises :class:`TaskProtocolError` naming what is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import gymnasium
import numpy as np

__all__ = ["TaskEnv", "TaskProtocolError", "check_task_env"]


@runtime_checkable
class TaskEnv(Protocol):
    """What the unwrapped env (``env.unwrapped``) of a task-parameterised Gymnasium env provides.

    ``isinstance(env.unwrapped, TaskEnv)`` checks that the names exist;
    :func:`check_task_env` checks that they work.
    """

    @property
    def task(self) -> Mapping[str, Any]:
        """The current task (the one last given as ``reset(options={"task": task})``)."""
        ...

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        """``n`` tasks of the env's task distribution, drawn with ``rng``."""
        ...

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """``options={"task": task}`` sets the task, which persists across later resets without one."""
        ...


class TaskProtocolError(TypeError):
    """An environment does not follow metarl's task protocol (the message names what is missing)."""


def _env_name(env: gymnasium.Env) -> str:
    spec = getattr(env, "spec", None)
    return spec.id if spec is not None else type(env.unwrapped).__name__


def _same(a: Any, b: Any) -> bool:
    """Two task values equal up to container type (tuple / list / array) and float rounding."""
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        return (isinstance(a, Mapping) and isinstance(b, Mapping) and set(a) == set(b)
                and all(_same(a[k], b[k]) for k in a))
    try:
        x, y = np.asarray(a), np.asarray(b)
        if x.dtype.kind in "biuf" and y.dtype.kind in "biuf":
            return x.shape == y.shape and bool(np.allclose(x, y, rtol=1e-6, atol=0.0))
    except (TypeError, ValueError):
        pass
    try:
        return bool(a == b)
    except Exception:  # an odd __eq__ only means "not the same"
        return False


def check_task_env(env: gymnasium.Env, *, seed: int = 0) -> None:
    """Check that ``env`` (as ``gymnasium.make`` returns it) follows the task protocol.

    Checks that ``env.unwrapped`` has ``sample_tasks`` and ``task``, that the spaces are ones
    metarl's policies take, that ``sample_tasks(2, rng)`` returns two task dicts, and that each
    round-trips: after ``env.reset(seed=seed, options={"task": t})``, ``env.unwrapped.task``
    equals ``t``, and still does after a ``reset()`` without a task. The env is left reset
    (with the second sampled task).

    Raises:
        TaskProtocolError: one message, ``"ID does not follow metarl's task protocol: ..."``,
            naming what is missing or wrong.
    """
    name = _env_name(env)

    def fail(what: str) -> TaskProtocolError:
        return TaskProtocolError(f"{name} does not follow metarl's task protocol: {what} (see metarl.envs.protocol)")

    base = env.unwrapped
    missing = []
    if not callable(getattr(base, "sample_tasks", None)):
        missing.append("no sample_tasks(n, rng) method")
    try:
        getattr(base, "task")  # noqa: B009 - a property may raise AttributeError itself
    except AttributeError:
        missing.append("no task attribute (the current task, env.unwrapped.task)")
    if missing:
        raise fail("it has " + " and ".join(missing))
    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(obs_space, gymnasium.spaces.Box) or len(obs_space.shape) != 1:
        raise fail(f"its observation space is {obs_space}; metarl's policies take a flat Box (shape (d,))")
    if not isinstance(act_space, (gymnasium.spaces.Box, gymnasium.spaces.Discrete)) or (
        isinstance(act_space, gymnasium.spaces.Box) and len(act_space.shape) != 1
    ):
        raise fail(f"its action space is {act_space}; metarl's policies act in a flat Box or a Discrete space")
    try:
        tasks = base.sample_tasks(2, np.random.default_rng(seed))
    except Exception as e:  # whatever it raised, it is the env's to fix
        raise fail(f"sample_tasks(2, rng) raised {type(e).__name__}: {e}") from e
    if not isinstance(tasks, (list, tuple)) or len(tasks) != 2 or not all(isinstance(t, Mapping) for t in tasks):
        raise fail(f"sample_tasks(2, rng) returned {tasks!r}; expected a list of 2 task dicts")
    for i, task in enumerate(tasks):
        try:
            env.reset(seed=seed + i, options={"task": task})
        except Exception as e:
            raise fail(f"reset(seed=..., options={{'task': {task!r}}}) raised {type(e).__name__}: {e}") from e
        got = base.task
        if not _same(got, task):
            raise fail(f"after reset(options={{'task': {task!r}}}) env.unwrapped.task is {got!r}; the reset "
                       "option 'task' must set the task")
        env.reset(seed=seed + 2 + i)
        got = base.task
        if not _same(got, task):
            raise fail(f"after a reset() without a task env.unwrapped.task is {got!r}, not the previous "
                       f"task {task!r}; a task must persist until another is given")
