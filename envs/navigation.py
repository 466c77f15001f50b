"""2D point navigation (Finn et al. 2017, arXiv 1703.03400, sec. 5.3)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from metarl.envs.tasks import GoalTasks, Task, TaskEnvMixin

#: Largest displacement per step and axis; actions are clipped to [-MAX_STEP, MAX_STEP].
MAX_STEP = 0.1
#: The episode terminates once the point is closer than this to the goal.
GOAL_RADIUS = 0.01


class Navigation2DEnv(TaskEnvMixin, gym.Env):
    """A point in the plane moves to a goal it does not observe (unless ``oracle``).

    Spec (Finn et al. 2017, sec. 5.3, "2D navigation"):

    - state and observation: the point's position, ``float32``, shape ``(2,)``; every
      episode starts at the origin;
    - action: a displacement, ``float32``, shape ``(2,)``, clipped to ``[-0.1, 0.1]`` per axis;
    - task: ``{"goal": (x, y)}``, ``goal ~ U([-0.5, 0.5]^2)`` (``goal_range`` sets the half-width);
    - reward: ``-||p' - goal||_2`` with ``p'`` the position after the move;
    - termination: ``||p' - goal||_2 < 0.01``; time limit 100 steps (from ``register``).

    ``info`` has ``reward_task`` (equal to the reward) and ``distance``. Without a task the
    goal is ``(0.25, 0.25)``.

    ``oracle=True`` (``gymnasium.make(id, oracle=True)``): the observation is
    ``(x, y, goal_x, goal_y)``, ``float32``, shape ``(4,)``, the goal part bounded by the
    task space: the paper's oracle baseline sees the goal ("an oracle policy that receives
    the goal position as input", sec. 5.3).

    Departures: the paper's text gives the negative *squared* distance as the reward; like
    the reference code we use the distance itself, and ``squared=True`` gives the paper
    text's variant. The reference code ends an episode when both coordinates are within
    0.01 of the goal (a box); we use the Euclidean distance. The position is kept in
    ``float32`` so that :class:`envs.vector.VecNavigation2D`
    reproduces it exactly.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        task: Task | None = None,
        *,
        squared: bool = False,
        goal_range: float = 0.5,
        oracle: bool = False,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"Navigation2D: render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.action_space = spaces.Box(-MAX_STEP, MAX_STEP, shape=(2,), dtype=np.float32)
        self.squared = bool(squared)
        self._init_task(
            GoalTasks("box", float(goal_range), (0.5 * goal_range, 0.5 * goal_range), squared=self.squared),
            task,
            oracle,
        )
        self.observation_space = self._oracle_space(spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32))
        self._position = np.zeros(2, dtype=np.float32)
        self._path = [self._position.copy()]

    def _distance_terms(self) -> tuple[np.float32, np.float32]:
        goal = np.asarray(self._task["goal"], dtype=np.float32)
        d = goal - self._position
        sq = d[0] * d[0] + d[1] * d[1]
        return np.sqrt(sq), sq

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed, options=options)
        self._position = np.zeros(2, dtype=np.float32)
        self._path = [self._position.copy()]
        dist, _ = self._distance_terms()
        return self._oracle_obs(self._position.copy()), {"distance": float(dist)}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = np.clip(self._check_action(action, np.float32), -MAX_STEP, MAX_STEP)
        self._position = self._position + a
        self._path.append(self._position.copy())
        dist, sq = self._distance_terms()
        reward = float(-sq if self.squared else -dist)
        terminated = bool(dist < GOAL_RADIUS)
        info = {"reward_task": reward, "distance": float(dist)}
        return self._oracle_obs(self._position.copy()), reward, terminated, False, info

    def render(self) -> np.ndarray | None:
        """``render_mode="rgb_array"``: a ``[256, 256, 3]`` uint8 top view of the square
        ``[-1.2 r, 1.2 r]^2`` (``r = goal_range``): the task space (grey square), the goal
        (green), the path since the last reset (blue) and the point (red; drawn on the border
        when it has left the view). ``None`` without a render mode."""
        if self.render_mode is None:
            return None
        return render_navigation(self._path, self._task["goal"], float(self.task_space.size))


def render_navigation(path: list[np.ndarray], goal: Any, goal_range: float, size: int = 256) -> np.ndarray:
    """The picture :meth:`Navigation2DEnv.render` returns, drawn with PIL."""
    from PIL import Image, ImageDraw  # only when rendering

    half = 1.2 * goal_range
    scale = (size - 1) / (2 * half)

    def pixel(p: Any, clip: bool = False) -> tuple[float, float]:  # y up
        x, y = np.clip(p, -half, half) if clip else np.asarray(p, dtype=np.float64)
        return (x + half) * scale, (half - y) * scale

    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    (x0, y0), (x1, y1) = pixel((-goal_range, goal_range)), pixel((goal_range, -goal_range))
    draw.rectangle((x0, y0, x1, y1), outline=(200, 200, 200))
    ox, oy = pixel((0.0, 0.0))
    draw.line((ox - 4, oy, ox + 4, oy), fill=(160, 160, 160))
    draw.line((ox, oy - 4, ox, oy + 4), fill=(160, 160, 160))
    gx, gy = pixel(goal)
    r = max(5.0, GOAL_RADIUS * scale)
    draw.ellipse((gx - r, gy - r, gx + r, gy + r), fill=(40, 170, 60))
    if len(path) > 1:
        draw.line([pixel(p) for p in path], fill=(60, 110, 220), width=2)
    px, py = pixel(path[-1], clip=True)
    inside = bool(np.all(np.abs(path[-1]) <= half))
    draw.ellipse((px - 4, py - 4, px + 4, py + 4), fill=(220, 40, 40) if inside else None, outline=(220, 40, 40))
    return np.asarray(image, dtype=np.uint8)
