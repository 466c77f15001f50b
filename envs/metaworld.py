"""Meta-World v3 task sets (Yu et al. 2019, arXiv 1910.10897) behind metarl's task protocol.

Needs the optional extra (``pip install metarl[metaworld]``, which brings ``metaworld`` and its
``mujoco==3.3.0``). Importing this module registers the ids; a config names them with the module,
``env.id: "metarl.envs.metaworld:metarl/ML1-reach-v3"``, so that only runs on Meta-World import it:

======================  ====================================================  =======
id                      tasks (train / test)                                  horizon
======================  ====================================================  =======
metarl/ML1-<name>-v3    one of Meta-World's 50 v3 envs (reach, push,          500
                        pick-place, ...): 50 train goals / 50 other goals
metarl/ML10-v3          10 train envs / 5 held-out envs, 50 goals each        500
metarl/ML45-v3          45 train envs / 5 held-out envs, 50 goals each        500
======================  ====================================================  =======

The task sets are Meta-World's own (``metaworld.ML1(name, seed)``, ``metaworld.ML10(seed)``,
``metaworld.ML45(seed)``, with ``benchmark_seed``), so a run trains on the goals that
:func:`metarl.rl.metaworld_agent.official_evaluation`'s held-out ones are set apart from. A task is
``{"env_name": "push-v3", "split": "train", "index": i}``: the ``i``-th Meta-World ``Task`` of that
env in the split, set with the env's ``set_task`` as Meta-World's own wrappers do. ``sample_tasks``
draws from ``split`` (``env.kwargs: {split: test}`` to train or validate on the test set, rarely
wanted), ``sample_test_tasks`` from the test set (``metarl evaluate`` uses it). ML10 and ML45 mix
envs: every v3 env observes 39 numbers (the goal's three zeroed: Meta-World's partially observable
meta-learning setting) and acts with 4, so one policy serves all of them.

Rewards are Meta-World's (``reward_function_version="v2"``, as ``metaworld.make_ml_envs`` uses);
``info`` is Meta-World's, with ``info["success"]``, from which metarl logs success rates.
Meta-World's reset has no noise: given the task, the initial state is fixed, and ``seed`` only seeds
``np_random``. Episodes end at the time limit (500 steps, Meta-World's ``max_path_length``; a
shorter one with ``gymnasium.make(id, max_episode_steps=T)``, or ``env.kwargs:
{max_episode_steps: T}`` in a config); Meta-World's envs never terminate early in training.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import gymnasium
import numpy as np

try:
    import metaworld
except ImportError as e:  # one line, through metarl's config errors
    raise ModuleNotFoundError(
        f"metarl.envs.metaworld needs Meta-World: pip install 'metarl[metaworld]' ({e})", name="metaworld"
    ) from None

__all__ = ["BENCHMARKS", "MAX_PATH_LENGTH", "MetaWorldTaskEnv", "benchmark_tasks", "env_id"]

#: Meta-World's episode length (``SawyerXYZEnv.max_path_length``), the registered time limit.
MAX_PATH_LENGTH = 500

#: The multi-env meta-learning benchmarks, besides ML1 on each env: name -> Meta-World's class.
BENCHMARKS: dict[str, type] = {"ML10": metaworld.ML10, "ML45": metaworld.ML45}

SPLITS = ("train", "test")


@functools.lru_cache(maxsize=8)
def benchmark_tasks(benchmark: str, seed: int) -> dict[str, dict[str, list[Any]]]:
    """Meta-World's task sets of ``benchmark`` (an env name such as ``"reach-v3"`` for ML1, or ``"ML10"`` /
    ``"ML45"``) made with ``seed``: ``{split: {env_name: [Task, ...]}}``, envs in Meta-World's order.

    Cached: building one runs every env's reset 50 times per split (seconds for ML45), and every env of
    a sampler (one per episode) shares it.
    """
    if benchmark in BENCHMARKS:
        bench = BENCHMARKS[benchmark](seed=seed)
    elif benchmark in metaworld.ML1.ENV_NAMES:
        bench = metaworld.ML1(benchmark, seed=seed)
    else:
        raise ValueError(f"Meta-World benchmark {benchmark!r}: expected one of {sorted(BENCHMARKS)} or a v3 env "
                         f"name for ML1 ({', '.join(metaworld.ML1.ENV_NAMES[:3])}, ...)")
    out: dict[str, dict[str, list[Any]]] = {}
    for split, classes, tasks in (("train", bench.train_classes, bench.train_tasks),
                                  ("test", bench.test_classes, bench.test_tasks)):
        out[split] = {name: [t for t in tasks if t.env_name == name] for name in classes}
    return out


def env_id(benchmark: str) -> str:
    """The registered id of ``benchmark``: ``"reach-v3"`` -> ``metarl/ML1-reach-v3``, ``"ML10"`` ->
    ``metarl/ML10-v3``."""
    return f"metarl/{benchmark}-v3" if benchmark in BENCHMARKS else f"metarl/ML1-{benchmark}"


class MetaWorldTaskEnv(gymnasium.Env):
    """A Meta-World v3 benchmark as one task-parameterised Gymnasium env (see the module docstring).

    It holds one Meta-World env, of the current task's class, made anew when a task of another class
    is set (ML10 / ML45; ML1 never switches): one env per class would hold tens of MuJoCo models in
    each of the sampler's hundreds of envs.

    Args:
        benchmark: a v3 env name (``"push-v3"``: ML1 on it) or ``"ML10"`` / ``"ML45"``.
        split: the set ``sample_tasks`` draws from (``"train"``, or ``"test"``).
        benchmark_seed: the seed of Meta-World's task sets (their goals); the official evaluation uses
            the same seed for its held-out ones.
        reward_function_version: Meta-World's reward version (``"v2"``, its default).
        render_mode: passed to the Meta-World env (``"rgb_array"`` for ``metarl record``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(self, benchmark: str, *, split: str = "train", benchmark_seed: int = 0,
                 reward_function_version: str = "v2", render_mode: str | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"MetaWorldTaskEnv: split must be one of {SPLITS}, got {split!r}")
        self.benchmark = benchmark
        self.split = split
        self.benchmark_seed = int(benchmark_seed)
        self.render_mode = render_mode
        self._reward_version = reward_function_version
        self._tasks = benchmark_tasks(benchmark, self.benchmark_seed)
        self._env: Any = None
        self._task: dict[str, Any] = {}
        first = next(iter(self._tasks[split]))
        self._set_task({"env_name": first, "split": split, "index": 0})
        self.observation_space = self._env.observation_space
        self.action_space = self._env.action_space

    @property
    def task(self) -> dict[str, Any]:
        """The current task, ``{"env_name", "split", "index"}``."""
        return dict(self._task)

    @property
    def env_names(self) -> dict[str, list[str]]:
        """The Meta-World envs of each split, ``{"train": [...], "test": [...]}``."""
        return {split: list(names) for split, names in self._tasks.items()}

    def _draw(self, split: str, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        """``n`` tasks of ``split``: the envs in turn from a random order (balanced, as Meta-World's own
        meta-batches are), goals drawn without replacement within an env while it has enough."""
        names = list(self._tasks[split])
        order = np.resize(rng.permutation(len(names)), n)
        counts = np.bincount(order, minlength=len(names))
        picks = {}
        for c in np.flatnonzero(counts):
            k = len(self._tasks[split][names[c]])
            picks[c] = iter(rng.choice(k, size=counts[c], replace=bool(counts[c] > k)).tolist())
        return [{"env_name": names[c], "split": split, "index": int(next(picks[c]))} for c in order]

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        """``n`` tasks of the env's ``split``, drawn with ``rng``."""
        return self._draw(self.split, n, rng)

    def sample_test_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        """``n`` held-out tasks (Meta-World's test set), drawn with ``rng``."""
        return self._draw("test", n, rng)

    def _checked(self, task: Mapping[str, Any]) -> tuple[str, str, int]:
        try:
            name, split, index = task["env_name"], task["split"], int(task["index"])
            tasks = self._tasks[split][name]
            if not 0 <= index < len(tasks):
                raise IndexError(index)
        except (KeyError, TypeError, ValueError, IndexError):
            raise ValueError(f"{env_id(self.benchmark)}: task {dict(task)!r} is not one of this benchmark's; expected "
                             f"{{'env_name': one of {self.env_names}, 'split': 'train'|'test', 'index': 0..49}}"
                             ) from None
        return name, split, index

    def _set_task(self, task: Mapping[str, Any]) -> None:
        name, split, index = self._checked(task)
        if self._env is None or self._task["env_name"] != name:
            if self._env is not None:
                self._env.close()
            cls = metaworld.ALL_V3_ENVIRONMENTS[name]
            self._env = cls(reward_function_version=self._reward_version, render_mode=self.render_mode)
            if hasattr(self, "observation_space") and self._env.observation_space != self.observation_space:
                raise ValueError(f"{env_id(self.benchmark)}: {name} observes {self._env.observation_space}, "
                                 f"not {self.observation_space} as the benchmark's other envs")
        self._env.set_task(self._tasks[split][name][index])
        self._task = {"env_name": name, "split": split, "index": index}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """``options={"task": task}`` sets the task (it persists until another is given)."""
        super().reset(seed=seed)
        if options and "task" in options:
            self._set_task(options["task"])
        return self._env.reset()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self._env.step(action)
        return obs, float(reward), bool(terminated), bool(truncated), info

    def render(self) -> Any:
        return self._env.render()

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def _register() -> None:
    # disable_env_checker: Gymnasium's passive checker warns on every make that some observation bounds are
    # equal; Meta-World pads its observation with zero-width dims on purpose, so the warning is noise.
    entry = f"{__name__}:MetaWorldTaskEnv"
    for benchmark in [*metaworld.ML1.ENV_NAMES, *BENCHMARKS]:
        if env_id(benchmark) not in gymnasium.registry:
            gymnasium.register(id=env_id(benchmark), entry_point=entry, kwargs={"benchmark": benchmark},
                               max_episode_steps=MAX_PATH_LENGTH, disable_env_checker=True)


_register()
