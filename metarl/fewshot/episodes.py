"""N-way K-shot classification episodes (Vinyals et al. 2016, arXiv 1606.04080; Finn et al.
2017, arXiv 1703.03400 sec. 5.2).

An episode (task) draws N classes, and K support plus Q query examples of each class
without replacement; the N classes get the labels 0..N-1 in a random order, fresh for
every episode, so that a label carries no information across tasks. This is what makes
the problem meta-learnable: the model must adapt from the K support examples.

The data is one array ``images [C, M, *x_shape]``: C classes with M examples each (20
drawings per Omniglot character, 600 images per MiniImagenet class). Sampling draws all
indices for a whole meta-batch with torch's RNG (an explicit ``torch.Generator``) and
gathers the examples with one vectorised indexing operation for the support sets and
one for the query sets; there is no per-task or per-example Python loop. The array may
be a read-only ``np.memmap`` (the loaders' caches) and ``float32`` (used as is) or
``uint8`` (scaled to [0, 1]).

Class augmentation by rotation (Santoro et al. 2016, arXiv 1605.06065, used by Finn et al.
2017 for Omniglot) is done once, up front, by :func:`rotate_classes`: it returns the
``4 C`` classes "c rotated by 0/90/180/270 degrees" as one array, so that sampling stays
a single gather. Two rotations of one character can then appear in one episode as
different classes, as in the reference implementations. (Rotating per episode instead
costs more per meta-batch than the gather itself; 8-bit Omniglot arrays make the 4x copy
cheap: 75 MB for the paper's 1200 characters.)

Image augmentation by translation (:class:`ShiftedTasks`, off in the paper's configs) moves
each meta-training query image (or every image) by a random whole number of pixels, filling
with zeros (Omniglot's background). Ni et al. 2021 ("Data Augmentation for Meta-Learning",
ICML) found the query set the most useful place to augment. Validation and test episodes are
never shifted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from metarl.config import SHIFT_SETS
from metarl.fewshot.tasks import TaskBatch


def rotate_classes(
    images: np.ndarray, names: tuple[str, ...] | None = None
) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """New classes from rotations: ``[C, M, ..., H, W] -> [4 C, M, ..., H, W]`` (in memory).

    Class ``k * C + c`` is class ``c`` rotated by ``k * 90`` degrees counter-clockwise
    (:func:`numpy.rot90` on the last two axes), so the first C classes are the originals.
    Names get a ``"/rot90"``, ``"/rot180"``, ``"/rot270"`` suffix.
    """
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotations need square images, got {tuple(images.shape[-2:])}")
    out = np.concatenate([np.rot90(images, k, axes=(-2, -1)) for k in range(4)])
    if names is not None:
        names = tuple(n + suffix for suffix in ("", "/rot90", "/rot180", "/rot270") for n in names)
    return out, names


def _episode_seed(seed: int, index: int) -> int:
    """A 63-bit seed for episode ``index`` of the fixed set ``seed`` (independent streams)."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


@dataclass(frozen=True, eq=False)
class FewShotTasks:
    """A distribution over N-way K-shot episodes drawn from ``images [C, M, *x_shape]``.

    The interface matches the sinusoid task distribution: :meth:`sample` returns a
    :class:`~metarl.fewshot.tasks.TaskBatch` with

    - ``x_support [n_tasks, ways * shots, *x_shape]`` float32,
    - ``y_support [n_tasks, ways * shots]`` int64 in 0..ways-1,
    - ``x_query [n_tasks, ways * query, *x_shape]`` float32,
    - ``y_query [n_tasks, ways * query]`` int64,

    in a random order within each set (the label is not given away by the position).

    Attributes:
        images: ``[C, M, *x_shape]``, float32 (used as is) or uint8 (divided by 255).
        ways: N, classes per episode.
        shots: K, support examples per class.
        query: Q, query examples per class (15 in the paper's Omniglot/MiniImagenet runs).
        names: optional names of the C classes (for reports), ``len == C``.
    """

    images: np.ndarray
    ways: int
    shots: int
    query: int = 15
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.images.ndim < 3:
            raise ValueError(f"images must be [C, M, *x_shape], got shape {self.images.shape}")
        if self.images.dtype not in (np.float32, np.uint8):
            raise ValueError(f"images must be float32 or uint8, got {self.images.dtype}")
        if self.ways < 1 or self.shots < 1 or self.query < 0:
            raise ValueError(f"need ways >= 1, shots >= 1, query >= 0; got {self.ways}, {self.shots}, "
                             f"{self.query}")
        if self.ways > self.num_classes:
            raise ValueError(f"{self.ways}-way episodes need at least {self.ways} classes, "
                             f"this set has {self.num_classes}")
        if self.shots + self.query > self.examples_per_class:
            raise ValueError(f"shots + query = {self.shots + self.query} exceeds the "
                             f"{self.examples_per_class} examples per class")
        if self.names is not None and len(self.names) != self.images.shape[0]:
            raise ValueError(f"{len(self.names)} names for {self.images.shape[0]} classes")

    # ------------------------------------------------------------------ sizes
    @property
    def num_classes(self) -> int:
        """C, the classes episodes are drawn from."""
        return int(self.images.shape[0])

    @property
    def examples_per_class(self) -> int:
        """M, examples of each class."""
        return int(self.images.shape[1])

    @property
    def x_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. ``(1, 28, 28)`` or ``(3, 84, 84)``."""
        return tuple(int(s) for s in self.images.shape[2:])

    def _to_tensor(self, array: np.ndarray) -> torch.Tensor:
        array = np.ascontiguousarray(array)
        if not array.flags.writeable:  # a view of a read-only memmap: never share it
            array = array.copy()
        t = torch.from_numpy(array)
        if t.dtype == torch.uint8:
            return t.to(torch.float32).div_(255.0)
        return t

    def class_images(self, c: int) -> torch.Tensor:
        """All ``M`` examples of class ``c``: ``[M, *x_shape]`` float32."""
        if not 0 <= c < self.num_classes:
            raise IndexError(f"class {c} out of range 0..{self.num_classes - 1}")
        return self._to_tensor(self.images[c])

    # ------------------------------------------------------------------ sampling
    def sample_indices(self, n_tasks: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The random choices of :meth:`sample`: which classes, which examples.

        Returns:
            ``classes [n_tasks, ways]`` int64 class ids in 0..num_classes-1, distinct per
            task, where column j is the class labelled j; ``examples [n_tasks, ways,
            shots + query]`` int64 example ids in 0..M-1, distinct per (task, class), the
            first ``shots`` being the support set.
        """
        if n_tasks < 1:
            raise ValueError(f"n_tasks={n_tasks} must be >= 1")
        n, w, m = n_tasks, self.ways, self.shots + self.query
        # The w largest of C i.i.d. uniform keys: a uniformly random w-subset, listed in
        # decreasing key order, which is a uniformly random order (the labels).
        classes = torch.rand(n, self.num_classes, generator=generator).topk(w, dim=1).indices
        examples = torch.rand(n, w, self.examples_per_class, generator=generator).argsort(dim=2)[..., :m]
        return classes, examples

    def _gather(self, classes: torch.Tensor, examples: torch.Tensor, generator: torch.Generator) -> TaskBatch:
        n, w = classes.shape
        batch = torch.arange(n)[:, None]
        out = []
        for lo, per_class in ((0, self.shots), (self.shots, self.query)):
            # positions 0..w*per_class-1 in a random order; position p is example p % per_class of
            # the class labelled p // per_class.
            pos = torch.rand(n, w * per_class, generator=generator).argsort(dim=1)
            label = pos // per_class
            cls = classes.gather(1, label)
            ex = examples[batch, label, lo + pos % per_class]
            out += [self._to_tensor(self.images[cls.numpy(), ex.numpy()]), label]
        return TaskBatch(*out)

    def sample(self, n_tasks: int, generator: torch.Generator) -> TaskBatch:
        """Draw ``n_tasks`` episodes using ``generator`` (torch's RNG; reproducible per seed).

        Returns:
            A :class:`TaskBatch` (shapes in the class docstring) on the CPU.
        """
        classes, examples = self.sample_indices(n_tasks, generator)
        return self._gather(classes, examples, generator)

    def fixed_episodes(self, n: int, seed: int, *, start: int = 0) -> TaskBatch:
        """Episodes ``start .. start+n-1`` of the fixed evaluation set named by ``seed``.

        Episode i depends only on ``(seed, i)`` (its own ``torch.Generator`` seeded from
        ``numpy.random.SeedSequence([seed, i])``), never on ``n``, ``start`` or the global
        RNG, so evaluations are comparable across runs, and a large set can be produced in
        chunks (``start=0, 100, ...``) that equal the corresponding rows of one big call.
        Fixed for a given class list, episode shape and torch version.
        """
        if n < 1:
            raise ValueError(f"n={n} must be >= 1")
        parts = []
        for i in range(start, start + n):
            g = torch.Generator().manual_seed(_episode_seed(seed, i))
            parts.append(self.sample(1, g))
        return TaskBatch(*(torch.cat([getattr(p, f) for p in parts]) for f in
                           ("x_support", "y_support", "x_query", "y_query")))


def shift_images(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of ``x [..., H, W]`` moved by its own random ``(dy, dx)`` in ``[-max_shift, max_shift]^2``.

    Whole pixels, so no pixel is blurred; what moves in from outside the image is zero (Omniglot's
    background). One vectorised gather for the whole batch. ``max_shift=0`` returns ``x`` itself.
    """
    if max_shift < 0:
        raise ValueError(f"max_shift={max_shift} must be >= 0")
    if max_shift == 0:
        return x
    *lead, h, w = x.shape
    flat = x.reshape(-1, 1, h, w)
    n, s = flat.shape[0], max_shift
    padded = F.pad(flat, (s, s, s, s))[:, 0]  # [n, h + 2s, w + 2s]
    # Offsets into the padded image: o = s - d for a shift d, so o in [0, 2s].
    off = torch.randint(0, 2 * s + 1, (n, 2), generator=generator)
    rows = (off[:, 0:1] + torch.arange(h))[:, :, None]  # [n, h, 1]
    cols = (off[:, 1:2] + torch.arange(w))[:, None, :]  # [n, 1, w]
    return padded[torch.arange(n)[:, None, None], rows, cols].reshape(*lead, h, w)


@dataclass(frozen=True, eq=False)
class ShiftedTasks:
    """Episodes of ``tasks`` with their query (or support and query) images shifted at random.

    Regularises meta-training on a small class pool (Omniglot's 4,800 rotated characters are each
    drawn over a thousand times in a 45,000-iteration run): every draw of a character comes at a new
    position. The shifts use the sampling generator, so runs stay reproducible and resumable.

    Attributes:
        tasks: the distribution to draw from (anything with ``sample(n_tasks, generator)``).
        max_shift: largest shift in pixels along each axis.
        sets: ``"query"`` (Ni et al. 2021's choice) or ``"both"``.
    """

    tasks: Any
    max_shift: int
    sets: str = "query"

    def __post_init__(self) -> None:
        if self.max_shift < 0:
            raise ValueError(f"max_shift={self.max_shift} must be >= 0")
        if self.sets not in SHIFT_SETS:
            raise ValueError(f"sets={self.sets!r} must be one of {SHIFT_SETS}")

    def sample(self, n_tasks: int, generator: torch.Generator) -> TaskBatch:
        """A batch of ``tasks`` with the chosen sets shifted (labels and order unchanged)."""
        b = self.tasks.sample(n_tasks, generator)
        support = shift_images(b.x_support, self.max_shift, generator) if self.sets == "both" else b.x_support
        return TaskBatch(support, b.y_support, shift_images(b.x_query, self.max_shift, generator), b.y_query)
