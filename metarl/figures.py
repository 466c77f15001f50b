"""``metarl evaluate --figure``: what a run does before and after adapting, drawn as the paper does.

One function per figure, each taking a loaded run (:func:`metarl.load`), writing a PNG (matplotlib,
Agg) and returning the arrays it plotted:

- :func:`sine_fit`: Finn et al. 2017 (arXiv 1703.03400) Fig. 2: held-out sinusoids, their K support
  points, and the prediction before adaptation and after 1 and K gradient steps (``run.adapt``);
- :func:`navigation_paths`: Fig. 4: 2D paths sampled before adaptation and after each step, with
  the goal (the episodes :func:`metarl.rl.watch.adapt_to` samples and adapts on);
- :func:`velocity_tracking`: the forward velocity of the deterministic policy over an episode
  before and after each step, against the task's target velocity.

:data:`FIGURES` names the figure of each sinusoid benchmark or RL env id (:func:`figure_key`); a
run without one is a :class:`~metarl.config.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarl.config import ConfigError, RLConfig, config_from_dict, config_to_dict
from metarl.seeding import eval_seed

#: Held-out tasks (panels) a figure draws when no ``--task`` is given.
PANELS = 3
#: Points of the true curve and the predictions in :func:`sine_fit`.
CURVE_POINTS = 400
#: Sampled episodes drawn per step in each panel of :func:`navigation_paths`.
PATHS_PER_STEP = 3


# ---------------------------------------------------------------------------- plotting helpers
def _figure(panels: int, width: float = 4.0, height: float = 3.4) -> tuple[Any, list[Any]]:
    """A row of ``panels`` axes (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(width * panels, height), squeeze=False)
    return fig, list(axes[0])


def _save(fig: Any, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")  # "tight": with the legends below the axes
    plt.close(fig)


def _legend_below(ax: Any) -> None:
    """The panel's legend under its x label, off the data."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize="x-small", frameon=False)


def _task_title(task: dict[str, Any]) -> str:
    """``goal=(0.30, -0.20)``: a task, short enough for a panel's title."""
    def short(value: Any) -> str:
        values = value if isinstance(value, (tuple, list)) else [value]
        text = ", ".join(f"{float(v):.2f}" for v in values)
        return f"({text})" if len(values) > 1 else text

    return "  ".join(f"{key}={short(value)}" for key, value in task.items())


def _step_colors(steps: int) -> list[Any]:
    """One colour per number of steps 0..``steps``, from light (before) to dark (adapted)."""
    from matplotlib import colormaps

    cmap = colormaps["viridis_r"]
    return [cmap(0.15 + 0.75 * k / max(steps, 1)) for k in range(steps + 1)]


def _step_label(k: int) -> str:
    return "before adaptation" if k == 0 else f"after {k} step{'s' if k > 1 else ''}"


# ---------------------------------------------------------------------------- sinusoid
def sine_fit(run: Any, path: str | Path, *, steps: int | None = None, seed: int = 1, shots: int | None = None,
             panels: int = PANELS) -> dict[str, Any]:
    """Finn et al. 2017 Fig. 2 on ``panels`` held-out sinusoids drawn with ``seed`` (evaluation's
    stream): the true curve, the K (``shots``, default ``task.shots``) support points, and
    ``run.predict(run.adapt(x_support, y_support, steps=k), x)`` for k in 0, 1, ``steps``
    (default ``inner.test_steps``, the paper's 10).

    The true curve is the task's own query set: :data:`CURVE_POINTS` query points of the run's task
    distribution, sorted. Returns ``{"x": [P, CURVE_POINTS], "true": [P, CURVE_POINTS],
    "x_support": [P, K], "y_support": [P, K], "steps": [...], "predictions": {k: [P, CURVE_POINTS]}}``.
    """
    from metarl.fewshot.sinusoid import SinusoidTasks

    cfg = run.config
    steps = cfg.inner.test_steps if steps is None else int(steps)
    shots = cfg.task.shots if shots is None else int(shots)
    if steps < 0 or shots <= 0:
        raise ConfigError(f"--steps must be >= 0 (got {steps}) and --shots > 0 (got {shots})")
    t = cfg.task
    tasks = SinusoidTasks(tuple(t.amplitude), tuple(t.phase), tuple(t.x_range), shots, CURVE_POINTS)
    batch = tasks.sample(panels, torch.Generator().manual_seed(eval_seed(seed)))
    order = batch.x_query.argsort(dim=1)
    x, true = batch.x_query.gather(1, order), batch.y_query.gather(1, order)
    shown = sorted({0, min(1, steps), steps})
    predictions = {k: torch.stack([run.predict(run.adapt(batch.x_support[i], batch.y_support[i], steps=k), x[i])
                                   for i in range(panels)]) for k in shown}
    fig, axes = _figure(panels)
    colors = dict(zip(shown, _step_colors(len(shown) - 1)))
    for i, ax in enumerate(axes):
        ax.plot(x[i, :, 0], true[i, :, 0], color="black", lw=2, label="true function")
        for k in shown:
            ax.plot(x[i, :, 0], predictions[k][i, :, 0], color=colors[k], ls=":" if k == 0 else "-",
                    label=_step_label(k))
        ax.scatter(batch.x_support[i, :, 0], batch.y_support[i, :, 0], color="tab:red", marker="^", zorder=3,
                   label=f"{shots} support points")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.02),
               ncol=5, fontsize="small", frameon=False)
    fig.suptitle(f"{cfg.name}: {shots}-shot fit of held-out sinusoids (it {run.iteration})")
    _save(fig, path)
    return {"x": x[..., 0].numpy(), "true": true[..., 0].numpy(), "x_support": batch.x_support[..., 0].numpy(),
            "y_support": batch.y_support[..., 0].numpy(), "steps": shown,
            "predictions": {k: p[..., 0].numpy() for k, p in predictions.items()}}


# ---------------------------------------------------------------------------- RL
def _rl_tasks(run: Any, tasks: Sequence[dict[str, Any]] | None, seed: int, panels: int) -> list[dict[str, Any]]:
    """``tasks`` as given, else ``panels`` held-out tasks drawn with ``seed`` (``metarl evaluate``'s)."""
    if tasks:
        return list(tasks)
    from metarl.rl.build import make_env
    from metarl.rl.evaluation import evaluation_tasks

    env = make_env(run.config)
    try:
        return evaluation_tasks(env, panels, seed)
    finally:
        env.close()


def episode_paths(episodes: Any, n: int) -> list[np.ndarray]:
    """The positions (observations' first two entries, ``[L, 2]``) of the first ``n`` episodes of
    ``episodes`` (``[T, B, obs_dim]``), each cut at its length (the mask)."""
    lengths = episodes.lengths().long().tolist()
    return [episodes.observations[:lengths[b], b, :2].numpy() for b in range(min(n, episodes.num_episodes))]


def navigation_paths(run: Any, path: str | Path, *, tasks: Sequence[dict[str, Any]] | None = None,
                     steps: int | None = None, seed: int = 1, panels: int = PANELS,
                     paths_per_step: int = PATHS_PER_STEP) -> dict[str, Any]:
    """Finn et al. 2017 Fig. 4: for each task (default ``panels`` held-out goals drawn with ``seed``),
    the paths of ``paths_per_step`` episodes sampled before adaptation and after each of 0..``steps``
    steps (default ``inner.test_steps``): the episodes :func:`~metarl.rl.watch.adapt_to` samples and
    adapts on, so the figure shows the run's own inner loop. Navigation2D observes the position.

    Bold: the path of the deterministic policy (the mean action) after each step, from
    :func:`rollout_observations`; faint: the sampled episodes.

    Returns ``{"tasks": [...], "returns": [[R_0..R_K] per task], "paths": [[[path [L, 2]] per step]
    per task], "mean_paths": [[path [L, 2] per step] per task]}``.
    """
    from metarl.rl.watch import adapt_to

    chosen = _rl_tasks(run, tasks, seed, panels)
    results = []
    means = []
    for task in chosen:
        episodes: list[Any] = []
        adaptation = adapt_to(run, task, steps=steps, seed=seed, episodes_out=episodes)
        results.append((adaptation, [episode_paths(e, paths_per_step) for e in episodes]))
        means.append([rollout_observations(run, p, adaptation.task, seed) for p in adaptation.params])
    fig, axes = _figure(len(chosen), 3.8, 3.8)
    for ax, (adaptation, by_step), mean_paths in zip(axes, results, means):
        colors = _step_colors(len(by_step) - 1)
        for k, paths in enumerate(by_step):
            for xy in paths:  # the sampled episodes the inner loop adapted on, faint
                ax.plot(xy[:, 0], xy[:, 1], color=colors[k], lw=0.6, alpha=0.3)
            xy = np.vstack([np.zeros((1, 2)), mean_paths[k][:, :2]])  # the mean action's path, from the start
            ax.plot(xy[:, 0], xy[:, 1], color=colors[k], lw=2.2,
                    label=f"{_step_label(k)} (return {adaptation.returns[k]:.1f})")
        goal = np.asarray(adaptation.task["goal"], dtype=float)
        ax.plot(*goal, marker="*", ms=14, color="tab:red", ls="", label="goal")
        ax.plot(0.0, 0.0, marker="o", ms=5, color="black", ls="", label="start")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_title(_task_title(adaptation.task))
        _legend_below(ax)
    fig.suptitle(f"{run.config.name}: paths before and after adaptation (it {run.iteration}; bold: mean action)")
    _save(fig, path)
    return {"tasks": [a.task for a, _ in results], "returns": [a.returns for a, _ in results],
            "paths": [by_step for _, by_step in results], "mean_paths": means}


def rollout_observations(run: Any, params: Any, task: dict[str, Any], seed: int) -> np.ndarray:
    """The observations ``[L, obs_dim]`` after each step of one episode of the deterministic policy with
    ``params`` on ``task``, in a plain Gymnasium loop reset with ``seed``."""
    return np.asarray([obs for obs, _ in _deterministic_episode(run, params, task, seed)])


def rollout_velocity(run: Any, params: Any, task: dict[str, Any], seed: int) -> np.ndarray:
    """The forward velocity (``info["x_velocity"]``) after each step of one episode of the
    deterministic policy with ``params`` on ``task``, in a plain Gymnasium loop reset with ``seed``."""
    return np.asarray([float(info["x_velocity"]) for _, info in _deterministic_episode(run, params, task, seed)])


def _deterministic_episode(run: Any, params: Any, task: dict[str, Any], seed: int) -> list[tuple[Any, dict]]:
    """``(observation, info)`` after each step of one episode of the mean action with ``params`` on ``task``."""
    import gymnasium as gym

    from metarl.rl.build import env_kwargs

    env = gym.make(run.config.env.id, **env_kwargs(run.config))
    policy = run.policy(params, deterministic=True)
    steps = []
    try:
        obs, _ = env.reset(seed=seed, options={"task": task})
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(policy(obs))
            steps.append((np.asarray(obs), info))
            done = terminated or truncated
    finally:
        env.close()
    return steps


def velocity_tracking(run: Any, path: str | Path, *, tasks: Sequence[dict[str, Any]] | None = None,
                      steps: int | None = None, seed: int = 1, panels: int = PANELS) -> dict[str, Any]:
    """For each goal-velocity task (default ``panels`` held-out ones drawn with ``seed``): adapt with
    :func:`~metarl.rl.watch.adapt_to`, then plot the forward velocity over one episode of the
    deterministic policy (:func:`rollout_velocity`) before and after each of 0..``steps`` steps, with
    the target velocity dashed. Returns ``{"tasks": [...], "targets": [v per task],
    "velocities": [[[T] per step] per task]}``."""
    from matplotlib.ticker import MaxNLocator

    from metarl.rl.watch import adapt_to

    chosen = _rl_tasks(run, tasks, seed, panels)
    results = []
    for task in chosen:
        adaptation = adapt_to(run, task, steps=steps, seed=seed)
        results.append((adaptation.task, [rollout_velocity(run, p, adaptation.task, seed) for p in adaptation.params]))
    fig, axes = _figure(len(chosen), 4.6)
    for ax, (task, by_step) in zip(axes, results):
        colors = _step_colors(len(by_step) - 1)
        for k, v in enumerate(by_step):
            ax.plot(np.arange(1, len(v) + 1), v, color=colors[k], lw=1.0, alpha=0.85,
                    label=f"{_step_label(k)} (mean {v.mean():.2f})")
        ax.axhline(float(task["velocity"]), color="tab:red", ls="--", lw=1.5, label="target velocity")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("time step")
        ax.set_ylabel("forward velocity")
        ax.set_title(_task_title(task))
        _legend_below(ax)
    fig.suptitle(f"{run.config.name}: forward velocity before and after adaptation (it {run.iteration})")
    _save(fig, path)
    return {"tasks": [t for t, _ in results], "targets": [float(t["velocity"]) for t, _ in results],
            "velocities": [v for _, v in results]}


# ---------------------------------------------------------------------------- registry
#: ``figure_key(cfg)`` -> the figure ``metarl evaluate --figure`` draws for such a run.
FIGURES: dict[str, Callable[..., dict[str, Any]]] = {
    "sinusoid": sine_fit,
    "metarl/Navigation2D-v0": navigation_paths,
    "metarl/HalfCheetahVel-v0": velocity_tracking,
    "metarl/AntVel-v0": velocity_tracking,
}


def figure_key(cfg: Any) -> str:
    """What :data:`FIGURES` is keyed by: an RL run's env id, any other run's benchmark."""
    return cfg.env.id if isinstance(cfg, RLConfig) else cfg.benchmark


def figure_for(cfg: Any) -> Callable[..., dict[str, Any]]:
    """The figure of ``cfg``'s runs, or a :class:`ConfigError` naming those that have one."""
    key = figure_key(cfg)
    if key not in FIGURES:
        raise ConfigError(f"--figure: no figure for {key} runs; figures exist for {', '.join(FIGURES)} "
                          "(--plot draws the adaptation curve of any run)")
    return FIGURES[key]


def load_run(path: str | Path, overrides: Sequence[tuple[str, Any]] = ()) -> Any:
    """``metarl.load(path)`` with evaluation-time ``overrides`` (``--set``, :data:`EVAL_KEYS` only)."""
    from metarl.api import load
    from metarl.evaluate import EVAL_KEYS

    for key, _ in overrides:
        if key not in EVAL_KEYS:
            raise ConfigError(f"--set {key}: evaluation may change only {sorted(EVAL_KEYS)}; the rest of the "
                              "config is the trained run's")
    run = load(path)
    if overrides:
        run.config = config_from_dict(config_to_dict(run.config), overrides)
    return run


def write_figure(run: Any, path: str | Path, *, tasks: Sequence[dict[str, Any]] | None = None,
                 steps: int | None = None, seed: int = 1, shots: int | None = None) -> dict[str, Any]:
    """Draw ``run``'s figure (:func:`figure_for`) to ``path``: RL figures on ``tasks`` (default
    held-out ones), the sinusoid fit with ``shots`` support points; returns what it plotted."""
    draw = figure_for(run.config)
    if isinstance(run.config, RLConfig):
        if shots is not None:
            raise ConfigError("--shots applies to sinusoid runs; an RL run samples env.episodes_per_task episodes")
        return draw(run, path, tasks=tasks, steps=steps, seed=seed)
    if tasks:
        raise ConfigError("--task applies to RL runs; a sinusoid figure draws held-out tasks (--seed)")
    return draw(run, path, steps=steps, seed=seed, shots=shots)


def check_figure_path(path: str | Path) -> Path:
    """``path`` if matplotlib writes its suffix (.png, .pdf, .svg, ...), else a :class:`ConfigError`,
    so a long evaluation does not end in a file that cannot be written."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    formats = FigureCanvasAgg.get_supported_filetypes()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in formats:
        raise ConfigError(f"--figure {path}: write an image file ({', '.join('.' + f for f in sorted(formats))}), "
                          "e.g. --figure fit.png")
    return Path(path)
