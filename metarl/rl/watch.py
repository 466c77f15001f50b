"""Adapt a trained RL run to a task you choose, act with it in plain Gymnasium, and watch it.

- :func:`parse_task` turns ``--task goal=0.3,-0.2`` into the env's task dict, checked against its
  task space (one :class:`~metarl.config.ConfigError` line naming the key, value and range);
- :func:`adapt_to` is ``metarl evaluate --task`` and ``Run.adapt_to``: the run's own inner loop on
  that one task (:func:`metarl.rl.evaluation.adaptation_returns` with ``tasks=[task]``), resampling
  after each step, keeping the parameters after every step;
- :func:`act` / :class:`PolicyFn` act with those parameters in a plain Gymnasium loop;
- :func:`record` is ``metarl record``: one rendered episode (deterministic actions) before and
  after each step, one captioned GIF (PIL) or MP4 (``imageio[ffmpeg]``, the ``video`` extra).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Distribution

from metarl.config import ConfigError, RLConfig, config_from_dict, config_to_dict
from metarl.maml import Params, functional_forward
from metarl.rl.build import env_kwargs, make_env, sampler_for
from metarl.rl.episodes import Episodes
from metarl.rl.evaluation import adaptation_returns, evaluation_tasks
from metarl.rl.policies import sample_actions
from metarl.seeding import eval_seed

#: What ``metarl record`` writes, by the suffix of ``--out``.
VIDEO_SUFFIXES = (".gif", ".mp4")
#: Side of the MuJoCo frames ``record`` renders (Navigation2D draws 256 x 256 itself).
FRAME_SIZE = 256


class RecordError(RuntimeError):
    """A video cannot be made here (no headless OpenGL for MuJoCo, no ffmpeg for MP4): one line, exit 2."""


# ---------------------------------------------------------------------------- tasks
def format_task(task: dict[str, Any]) -> str:
    """``{"goal": (0.3, -0.2)}`` -> ``goal=0.3,-0.2``: the ``--task`` spelling of a task."""
    parts = []
    for key, value in task.items():
        values = value if isinstance(value, (tuple, list)) else [value]
        parts.append(f"{key}=" + ",".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in values))
    return " ".join(parts)


def parse_task(env: gym.Env, text: str) -> dict[str, Any]:
    """``KEY=VALUE`` (``goal=0.3,-0.2``, ``velocity=1.7``, ``direction=-1``) as ``env``'s task dict,
    checked against its task space; anything else is a :class:`ConfigError` naming the key, the
    value and what the env allows."""
    space = getattr(env.unwrapped, "task_space", None)
    if space is None:
        raise ConfigError(f"--task {text!r}: {env.spec.id if env.spec else 'this env'} is not a built-in env (no "
                          "task_space to parse KEY=VALUE with); adapt to a task dict with metarl.load(run).adapt_to")
    name = env.unwrapped.env_name
    allowed = f"the task of {name} is {space.key}=... ({space.describe()}), e.g. --task {format_task(space.default)}"
    key, sep, value = (part.strip() for part in text.partition("="))
    if not sep or not key or not value:
        raise ConfigError(f"--task {text!r}: expected KEY=VALUE; {allowed}")
    if key != space.key:
        raise ConfigError(f"--task {text}: no task key {key!r}; {allowed}")
    try:
        numbers = [float(v) for v in value.split(",")]
    except ValueError:
        raise ConfigError(f"--task {text}: {key} must be numbers, got {value!r}; {allowed}") from None
    try:
        return space.check({key: numbers[0] if len(numbers) == 1 else tuple(numbers)}, name)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--task {text}: {e}") from None


def rl_config(run: Any, what: str) -> RLConfig:
    """``run.config``, checked to be an RL run's (``what`` names the caller in the error)."""
    if not isinstance(run.config, RLConfig):
        raise ConfigError(f"{what} applies to RL runs (benchmark: rl); this is a {run.config.benchmark} run "
                          "(use run.adapt(x_support, y_support))")
    return run.config


def load_rl_run(path: str | Path, overrides: Sequence[tuple[str, Any]] = (), what: str = "--task") -> Any:
    """``metarl.load(path)`` of an RL run, with evaluation-time ``overrides`` (``--set``) applied."""
    from metarl.api import load
    from metarl.evaluate import EVAL_KEYS

    for key, _ in overrides:
        if key not in EVAL_KEYS:
            raise ConfigError(f"--set {key}: evaluation may change only {sorted(EVAL_KEYS)}; the rest of the "
                              "config is the trained run's")
    run = load(path)
    rl_config(run, what)
    if overrides:
        run.config = config_from_dict(config_to_dict(run.config), overrides)
    return run


# ---------------------------------------------------------------------------- adapting
class Adaptation(NamedTuple):
    """:func:`adapt_to`'s result: the task (checked), one task's parameters after 0..K steps, and
    the mean return of the ``env.episodes_per_task`` episodes sampled with each."""

    task: dict[str, Any]
    params: list[Params]
    returns: list[float]


def adapt_to(run: Any, task: dict[str, Any], *, steps: int | None = None, seed: int = 0,
             episodes_out: list[Episodes] | None = None) -> Adaptation:
    """Adapt ``run`` (``metarl.load``) to ``task`` with its own inner loop for 0..``steps`` steps
    (default ``inner.test_steps``), resampling ``env.episodes_per_task`` episodes after each, on a
    sampler built from the run's config with evaluation streams named by ``seed``. ``episodes_out``,
    if given, receives the episodes sampled after 0..``steps`` steps (``[T, B, ...]`` each)."""
    cfg = rl_config(run, "adapt_to")
    steps = cfg.inner.test_steps if steps is None else int(steps)
    if steps < 0:
        raise ConfigError(f"steps must be >= 0, got {steps}")
    env = make_env(cfg)
    try:
        if hasattr(env.unwrapped, "task_space"):  # a built-in env
            task = env.unwrapped.task_space.check(task, env.unwrapped.env_name)
        else:  # any env of metarl.envs.protocol: its reset checks the task
            try:
                env.reset(seed=0, options={"task": task})
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{cfg.env.id}: reset refused the task {task!r}: {type(e).__name__}: {e}") from None
            task = dict(env.unwrapped.task)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None
    finally:
        env.close()
    sampler = sampler_for(cfg, eval_seed(seed))
    stacked: list[Params] = []
    batches: list[Episodes] = []
    try:
        returns = adaptation_returns(cfg, run.module, [task], steps=steps, sampler=sampler, seed=eval_seed(seed),
                                     params_out=stacked, episodes_out=batches)
    finally:
        sampler.close()
    if episodes_out is not None:
        episodes_out.extend(batch.unstack()[0] for batch in batches)
    params = [stacked[0]] + [{k: v[0] for k, v in p.items()} for p in stacked[1:]]
    return Adaptation(task, params, [float(r) for r in returns[:, 0]])


# ---------------------------------------------------------------------------- acting
def distribution(module: nn.Module, params: Params, obs: Any) -> Distribution:
    """The policy's action distribution at ``obs`` (numpy or tensor, ``[obs_dim]`` or ``[B, obs_dim]``)."""
    x = torch.as_tensor(np.asarray(obs) if not isinstance(obs, torch.Tensor) else obs, dtype=torch.float32)
    latent = getattr(module, "latent_dim", 0)
    if latent and x.shape[-1] != module.obs_dim + latent + 1:
        raise ValueError(f"this run's policy has a per-episode latent (policy.latent_dim: {latent}) and acts on "
                         f"observations of {module.obs_dim + latent + 1} floats, got {x.shape[-1]}: use "
                         "run.policy(), which keeps the episode's latent (call its reset() at each episode's start)")
    with torch.no_grad():
        dist = functional_forward(module, params, x)
    if not isinstance(dist, Distribution):
        raise TypeError("act/policy apply to RL runs, whose module returns an action distribution")
    return dist


def act(module: nn.Module, params: Params, obs: Any, *, deterministic: bool = False,
        generator: torch.Generator | None = None) -> np.ndarray:
    """One action for ``obs`` as a numpy array: the distribution's mean (Gaussian) or mode
    (categorical) if ``deterministic``, else a sample (noise from ``generator``, else torch's global RNG)."""
    dist = distribution(module, params, obs)
    with torch.no_grad():
        action = dist.mode if deterministic else sample_actions(dist, generator)
    return action.numpy()


@dataclass
class PolicyFn:
    """``policy(obs) -> action`` for a plain Gymnasium loop (numpy in, numpy out); ``distribution(obs)``
    gives the action distribution (for log-probs)."""

    module: nn.Module
    params: Params
    deterministic: bool = True

    def __post_init__(self) -> None:
        self._latent = int(getattr(self.module, "latent_dim", 0))  # a latent policy's d (policy.latent_dim), else 0
        self.reset()

    def reset(self) -> None:
        """Start a new episode: a latent policy (``policy.latent_dim``) draws its ``z`` at the next call."""
        self._z: np.ndarray | None = None

    def _augmented(self, obs: Any) -> Any:
        """``obs`` as a latent policy sees it, ``cat(obs, z, first)`` (the env observations of
        :class:`metarl.envs.vector.LatentFeedback`); other policies' ``obs`` unchanged."""
        d = self._latent
        if not d:
            return obs
        o = np.asarray(obs, dtype=np.float32)
        z = np.zeros((*o.shape[:-1], d), np.float32) if self._z is None else self._z
        first = np.full((*o.shape[:-1], 1), 1.0 if self._z is None else 0.0, np.float32)
        return np.concatenate([o, z, first], -1)

    def __call__(self, obs: Any) -> np.ndarray:
        """The action for ``obs``; a latent policy draws its episode's ``z`` (its mean if ``deterministic``)
        at the first call after :meth:`reset` and keeps it, and only the env's coordinates are returned."""
        a = act(self.module, self.params, self._augmented(obs), deterministic=self.deterministic)
        d = self._latent
        if not d:
            return a
        if self._z is None:
            self._z = a[..., -d:].astype(np.float32)
        return a[..., :-d]

    def distribution(self, obs: Any) -> Distribution:
        """The action distribution at ``obs`` (a latent policy's over the env's and the latent's coordinates)."""
        return distribution(self.module, self.params, self._augmented(obs))


# ---------------------------------------------------------------------------- evaluate --task
def evaluate_tasks(path: str | Path, task_texts: Sequence[str], *, steps: int | None, seed: int,
                   overrides: Sequence[tuple[str, Any]] = ()) -> dict[str, Any]:
    """``metarl evaluate RUN --task ...``: the return after 0..``steps`` steps on each given task,
    each adapted on its own (:func:`adapt_to` with the same ``seed``)."""
    run = load_rl_run(path, overrides)
    cfg = run.config
    env = make_env(cfg)
    try:
        tasks = [parse_task(env, text) for text in task_texts]
    finally:
        env.close()
    steps = cfg.inner.test_steps if steps is None else steps
    if steps < 0:
        raise ConfigError(f"--steps must be >= 0, got {steps}")
    rows = []
    for task in tasks:
        result = adapt_to(run, task, steps=steps, seed=seed)
        rows.append({"task": result.task,
                     "by_step": [{"step": k, "mean": r} for k, r in enumerate(result.returns)]})
    return {"benchmark": cfg.name, "env": cfg.env.id, "metric": "return",
            "episodes_per_task": cfg.env.episodes_per_task, **({"overrides": dict(overrides)} if overrides else {}),
            "tasks": rows, "iteration": run.iteration, "seed": seed}


def format_tasks_table(result: dict[str, Any]) -> str:
    """:func:`evaluate_tasks`'s result as a table: one row per task, one column per step."""
    names = [format_task(row["task"]) for row in result["tasks"]]
    width = max(12, *(len(n) + 2 for n in names))
    steps = [s["step"] for s in result["tasks"][0]["by_step"]]
    lines = [f"{result['metric']} on the given tasks ({result['benchmark']}, {result['env']}, it {result['iteration']};"
             f" mean of {result['episodes_per_task']} episodes per step)",
             "steps".ljust(width) + "".join(f"{k:>10d}" for k in steps)]
    for name, row in zip(names, result["tasks"]):
        lines.append(name.ljust(width) + "".join(f"{s['mean']:>10.4g}" for s in row["by_step"]))
    return "\n".join(lines)


def plot_tasks(result: dict[str, Any], path: str | Path) -> None:
    """The return after each step, one line per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metarl.evaluate import axis_labels

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for row in result["tasks"]:
        ax.plot([s["step"] for s in row["by_step"]], [s["mean"] for s in row["by_step"]], marker="o", ms=3,
                label=format_task(row["task"]))
    axis_labels(ax, result["metric"])
    ax.set_title(f"{result['benchmark']}: adapting to the given tasks")
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------- rendering
_PROBE = (
    "import mujoco\n"
    "m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size=\"0.1\"/></worldbody></mujoco>')\n"
    "r = mujoco.Renderer(m, 16, 16)\n"
    "r.update_scene(mujoco.MjData(m))\n"
    "assert r.render().shape == (16, 16, 3)\n"
)
_GL_OK: str | None = None


def _probe_gl(backend: str) -> str | None:
    """``None`` if MuJoCo renders offscreen with ``MUJOCO_GL=backend`` (tried in a subprocess, as a
    failed OpenGL setup can leave a process unable to try another), else why not, in a few words."""
    env = {**os.environ, "MUJOCO_GL": backend}
    if backend in ("egl", "osmesa"):
        env["PYOPENGL_PLATFORM"] = backend
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "timed out"
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    return (lines[-1] if lines else f"exit code {done.returncode}")[:200]


def mujoco_gl() -> str:
    """Choose MuJoCo's headless OpenGL backend and set ``MUJOCO_GL`` to it: the one already in
    ``MUJOCO_GL`` if set, else EGL, else OSMesa (each tried in a subprocess); a :class:`RecordError`
    naming both when neither works."""
    global _GL_OK
    chosen = os.environ.get("MUJOCO_GL", "").strip()
    if _GL_OK is not None and _GL_OK == (chosen or _GL_OK):
        os.environ["MUJOCO_GL"] = _GL_OK
        return _GL_OK
    reasons = {}
    for backend in [chosen] if chosen else ["egl", "osmesa"]:
        reason = _probe_gl(backend)
        if reason is None:
            os.environ["MUJOCO_GL"] = _GL_OK = backend
            return backend
        reasons[backend] = reason
    if chosen:
        raise RecordError(f"MuJoCo cannot render with MUJOCO_GL={chosen} ({reasons[chosen]}); unset MUJOCO_GL to "
                          "try EGL and then OSMesa")
    raise RecordError(
        f"MuJoCo cannot render headless: neither EGL (MUJOCO_GL=egl: {reasons['egl']}) nor OSMesa "
        f"(MUJOCO_GL=osmesa: {reasons['osmesa']}) works here; install EGL (libegl1 with a GPU driver, or Mesa's "
        "libegl-mesa0) or OSMesa (libosmesa6)"
    )


def caption(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` with ``text`` drawn at its top left on a white band (PIL's default font)."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((4, 3), text)
    draw.rectangle((0, 0, right + 4, bottom + 3), fill=(255, 255, 255))
    draw.text((4, 3), text, fill=(0, 0, 0))
    return np.asarray(image)


def check_video_path(out: str | Path) -> Path:
    """``out`` if this machine can write it (a .gif always; an .mp4 with imageio-ffmpeg), else one line."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ConfigError(f"--out {out}: write a .gif or an .mp4 video")
    if suffix == ".mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise RecordError(f"--out {out}: writing MP4 needs ffmpeg: pip install metarl[video] (or write a .gif)")
    return out


def write_video(frames: Sequence[np.ndarray], out: str | Path, fps: float) -> Path:
    """``frames`` (``[H, W, 3]`` uint8) as a looping GIF (PIL) or an H.264 MP4 (imageio-ffmpeg), by
    the suffix of ``out``; written to a temporary file beside it, then renamed."""
    out = check_video_path(out)
    if not frames:
        raise ValueError("write_video: no frames")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    try:
        if out.suffix.lower() == ".gif":
            from PIL import Image

            images = [Image.fromarray(f) for f in frames]
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                           duration=max(20, round(1000 / fps)), loop=0)
        else:
            import imageio.v2 as imageio

            with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=7) as writer:
                for frame in frames:
                    writer.append_data(frame)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def render_episode(env: gym.Env, policy: PolicyFn, task: dict[str, Any], *, seed: int, label: str
                   ) -> tuple[list[np.ndarray], float, int]:
    """One episode of ``policy`` on ``task`` in ``env`` (``render_mode="rgb_array"``), reset with
    ``seed``: a captioned frame after each step, the return and the length."""
    obs, _ = env.reset(seed=seed, options={"task": task})
    policy.reset()
    frames, total, t = [], 0.0, 0
    while True:
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        total, t = total + float(reward), t + 1
        frame = env.render()
        if not isinstance(frame, np.ndarray) or frame.ndim != 3:
            raise RecordError(f"{env.spec.id if env.spec else 'the env'}: render() gave {type(frame).__name__}, "
                              "not an [H, W, 3] image")
        frames.append(caption(frame, f"{label}, return {total:.1f}  (t={t})"))
        if terminated or truncated:
            return frames, total, t


def _has_camera(model: Any, name: str) -> bool:
    import mujoco

    return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name) >= 0


def record(run: Any, out: str | Path, *, task: dict[str, Any] | None = None, steps: int | None = None,
           seed: int = 0, log: Any = None) -> dict[str, Any]:
    """``metarl record``: adapt ``run`` to ``task`` (:func:`adapt_to`; default a held-out task drawn
    with ``seed``) and render one episode with the parameters after 0..``steps`` steps, acting
    deterministically, each reset with ``seed``; the frames (one per env step) are captioned
    ``step k, return R`` and written to ``out`` (.gif or .mp4). Returns ``{"task", "out", "frames",
    "episodes": [{"step", "return", "length", "sampled_return"}]}`` (``sampled_return``: the mean of
    the episodes the adaptation sampled with those parameters). ``log(line)`` reports progress."""
    out = check_video_path(out)
    cfg = rl_config(run, "record")
    probe = make_env(cfg)
    try:
        if task is None:
            task = evaluation_tasks(probe, 1, seed)[0]
        if "rgb_array" not in probe.metadata.get("render_modes", []):
            raise RecordError(f"{cfg.env.id} has no rgb_array renderer (its metadata render_modes: "
                              f"{probe.metadata.get('render_modes', [])}), so metarl record cannot draw it")
        mujoco = hasattr(probe.unwrapped, "mujoco_renderer")
        size = {"width": FRAME_SIZE, "height": FRAME_SIZE} if mujoco else {}
        if mujoco and _has_camera(probe.unwrapped.model, "track"):  # the built-in robots' tracking camera
            size["camera_name"] = "track"
        fps = float(probe.metadata.get("render_fps") or 20)
    finally:
        probe.close()
    if mujoco:
        mujoco_gl()  # before any MuJoCo renderer is made
    adaptation = adapt_to(run, task, steps=steps, seed=seed)
    env = gym.make(cfg.env.id, render_mode="rgb_array", **env_kwargs(cfg), **size)
    frames: list[np.ndarray] = []
    episodes = []
    try:
        for k, params in enumerate(adaptation.params):
            policy = PolicyFn(run.module, params, deterministic=True)
            new, total, length = render_episode(env, policy, adaptation.task, seed=seed, label=f"step {k}")
            frames += new
            episodes.append({"step": k, "return": total, "length": length, "sampled_return": adaptation.returns[k]})
            if log is not None:
                log(f"step {k}: return {total:.4g} in {length} steps (mean of the sampled episodes "
                    f"{adaptation.returns[k]:.4g})")
    finally:
        env.close()
    write_video(frames, out, fps)
    return {"task": adaptation.task, "out": str(out), "frames": len(frames), "episodes": episodes}
