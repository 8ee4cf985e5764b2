"""8x8 handwritten digits for the diffusion chapter: data, the evaluator of samples, the zoo models.

The data are scikit-learn's ``load_digits`` (1,797 images of 8x8 pixels with
values 0-16, from the UCI "optical recognition of handwritten digits" set),
scaled to [-1, 1] and split once, stratified by class, into a training set and
500 held-out digits.

Generated digits are scored by :func:`score` with an :class:`Evaluator`
(a small convolutional classifier trained on the training digits, in the zoo as
``digits-evaluator``): class accuracy, Fréchet distance in the evaluator's
feature space and a classifier two-sample test, all against held-out digits.

The class-conditional diffusion model is ``ddpm-digits``: :func:`ddpm` loads it with its
noise schedule and :func:`generate` draws digits from it (DDPM or DDIM, with guidance).
The two zoo recipes follow the book's naming: ``ddpm_config``, ``build_ddpm``,
``train_ddpm``, ``DDPM_RECIPE`` and ``evaluator_config``, ``build_evaluator``,
``train_evaluator``, ``EVALUATOR_RECIPE``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from fmbook import runtime, zoo
from fmbook.budget import pick
from fmbook.diffusion import NoiseSchedule, ResidualMLPDenoiser, conditional_eps, sample
from fmbook.metrics import c2st, frechet_distance
from fmbook.objectives import noise_prediction_loss
from fmbook.runtime import draw_device
from fmbook.train import History, LossPlot, fit, fit_cosine

SIDE = 8
DIM = SIDE * SIDE
NUM_CLASSES = 10
HELD_OUT = 500


@dataclass(frozen=True)
class Digits:
    """Training and held-out digits: images flattened to 64 values in [-1, 1], labels 0-9."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


@functools.lru_cache(maxsize=1)
def load() -> Digits:
    """The digits scaled to [-1, 1] (``x / 8 - 1``), with 500 held out (stratified, fixed seed)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    raw = load_digits()
    x = torch.tensor(raw.data, dtype=torch.float32) / 8 - 1
    y = torch.tensor(raw.target, dtype=torch.long)
    train, test = train_test_split(
        torch.arange(len(x)).numpy(), test_size=HELD_OUT, stratify=raw.target, random_state=0
    )
    return Digits(x[train], y[train], x[test], y[test])


def images(x: torch.Tensor) -> torch.Tensor:
    """Flattened digits ``(..., 64)`` as images ``(..., 8, 8)``."""
    if x.shape[-1] != DIM:
        raise ValueError(f"images: expected a last dimension of {DIM}, got shape {tuple(x.shape)}")
    return x.reshape(*x.shape[:-1], SIDE, SIDE)


def show_grid(x: torch.Tensor, rows: int, title: str | None = None, ax=None):
    """Draw digits ``(n, 64)`` in [-1, 1] as a grid of ``rows`` rows, dark ink on white.

    Returns the axes."""
    import matplotlib.pyplot as plt

    x = images(x.detach().float().cpu().clamp(-1, 1))
    cols = len(x) // rows
    if rows < 1 or cols < 1:
        raise ValueError(f"show_grid: cannot lay out {len(x)} digits in {rows} rows")
    tiles = x[: rows * cols].reshape(rows, cols, SIDE, SIDE)
    padded = torch.nn.functional.pad(tiles, (1, 1, 1, 1), value=-1.0)
    canvas = padded.permute(0, 2, 1, 3).reshape(rows * (SIDE + 2), cols * (SIDE + 2))
    if ax is None:
        _, ax = plt.subplots(figsize=(cols * 0.42, rows * 0.42))
    ax.imshow((-canvas).numpy(), cmap="gray", vmin=-1, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def balanced_labels(n_per_class: int, device=None) -> torch.Tensor:
    """``0, ..., 0, 1, ..., 9``: ``n_per_class`` of each class, to ask a conditional model for."""
    if n_per_class < 1:
        raise ValueError(f"balanced_labels: n_per_class must be >= 1, got {n_per_class}")
    return torch.arange(NUM_CLASSES, device=device).repeat_interleave(n_per_class)


def random_shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift a batch of digits by up to one pixel in each direction (blank pixels are -1)."""
    padded = torch.nn.functional.pad(images(x), (1, 1, 1, 1), value=-1.0)
    at = draw_device(generator, "cpu")
    dx, dy = torch.randint(0, 3, (2,), generator=generator, device=at).tolist()
    return padded[..., dy : dy + SIDE, dx : dx + SIDE].reshape(x.shape)


# -- the evaluator ------------------------------------------------------------------------


class Evaluator(torch.nn.Module):
    """A small CNN digit classifier; its last hidden layer (64 ReLU units) holds the features
    that the metrics compare."""

    def __init__(self, features: int = 64):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(32, 64, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(64, 64, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Flatten(),
            torch.nn.Linear(64 * 2 * 2, features),
            torch.nn.ReLU(),
        )
        self.head = torch.nn.Linear(features, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(images(x).unsqueeze(-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def evaluator_config(budget: str | None = None) -> dict:
    """The ``digits-evaluator`` recipe: training steps, batch, learning rate, input noise, seed."""
    return {
        "steps": pick(test=300, full=1500, budget=budget),
        "batch_size": 128,
        "lr": 2e-3,
        "noise": 0.1,
        "seed": 0,
    }


def build_evaluator(config: dict) -> Evaluator:
    """A fresh (untrained) :class:`Evaluator`; its size does not depend on the config."""
    return Evaluator()


def train_evaluator(model: Evaluator, config: dict) -> dict:
    """Cross-entropy on training digits, each batch shifted by up to a pixel and lightly noised."""
    runtime.seed(config["seed"])
    data, device = load(), next(model.parameters()).device
    g = torch.Generator().manual_seed(config["seed"])

    def batch():
        i = torch.randint(0, len(data.train_x), (config["batch_size"],), generator=g)
        shifted = random_shift(data.train_x[i], g)  # drawn first, then the noise
        x = shifted + config["noise"] * torch.randn(len(i), DIM, generator=g)
        return x.to(device), data.train_y[i].to(device)

    def loss(m, b):
        return torch.nn.functional.cross_entropy(m(b[0]), b[1])

    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=1e-4)
    steps = config["steps"]
    history = fit(model, loss, batch, optimizer, steps, schedule="cosine", title="digits evaluator")
    model.eval()
    held_out = accuracy(model, data.test_x, data.test_y)
    return {"held_out_accuracy": held_out, "seconds": history.seconds}


EVALUATOR_RECIPE = zoo.Recipe(
    "digits-evaluator",
    evaluator_config,
    build_evaluator,
    train_evaluator,
    "CNN classifier of the 8x8 digits whose features score generated digits",
)


@torch.no_grad()
def accuracy(evaluator: Evaluator, x: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``x`` that the evaluator assigns to ``labels``."""
    device = next(evaluator.parameters()).device
    return (evaluator(x.to(device)).argmax(1).cpu() == labels.cpu()).float().mean().item()


@torch.no_grad()
def score(
    evaluator: Evaluator, samples: torch.Tensor, labels: torch.Tensor | None = None, reference=None
) -> dict:
    """Fréchet distance and C2ST of ``samples`` against ``reference`` (default: the 500 held-out
    digits) in the evaluator's feature space, and the class accuracy when the requested ``labels``
    are given.

    Compare the Fréchet distance only with one computed from as many samples (:func:`real_floor`).
    """
    reference = load().test_x if reference is None else reference
    device = next(evaluator.parameters()).device
    if samples.ndim != 2 or samples.shape[1] != DIM:
        raise ValueError(f"score: samples must have shape (n, {DIM}), got {tuple(samples.shape)}")
    n = min(len(samples), len(reference))
    fs = evaluator.features(samples.to(device)).cpu()
    fr = evaluator.features(reference.to(device)).cpu()
    out = {"fd": frechet_distance(fs, fr), "c2st": c2st(fs[:n], fr[:n])}
    if labels is not None:
        out["accuracy"] = accuracy(evaluator, samples, labels)
    return out


def real_floor(evaluator: Evaluator, n: int = HELD_OUT, seed: int = 0) -> dict:
    """:func:`score` of ``n`` real training digits against the held-out ones.

    The best a generator can hope for."""
    data = load()
    i = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(seed))[:n]
    return score(evaluator, data.train_x[i], data.train_y[i])


# -- the class-conditional diffusion model -------------------------------------------------------


def ddpm_config(budget: str | None = None) -> dict:
    """The ``ddpm-digits`` recipe: schedule, denoiser size and training settings, side by side."""
    return {
        "T": 1000,
        "schedule": "cosine",
        "width": 256,
        "depth": 4,
        "steps": pick(test=500, full=8000, budget=budget),
        "batch_size": 256,
        "lr": 1e-3,
        "p_uncond": 0.1,
        "seed": 0,
    }


def schedule_of(config: dict) -> NoiseSchedule:
    """The noise schedule a ``ddpm-digits`` config names."""
    return getattr(NoiseSchedule, config["schedule"])(config["T"])


def build_ddpm(config: dict) -> ResidualMLPDenoiser:
    """A fresh (untrained) denoiser of the size a ``ddpm-digits`` config names."""
    width, depth = config["width"], config["depth"]
    return ResidualMLPDenoiser(DIM, config["T"], NUM_CLASSES, width=width, depth=depth)


def train_ddpm(model: ResidualMLPDenoiser, config: dict) -> dict:
    """AdamW with warm-up and cosine decay on :func:`fmbook.objectives.noise_prediction_loss`,
    batches of training digits with their labels (hidden a fraction ``p_uncond`` of the time)."""
    runtime.seed(config["seed"])
    data, device = load(), next(model.parameters()).device
    schedule = schedule_of(config)
    g = torch.Generator().manual_seed(config["seed"])

    def batch():
        i = torch.randint(0, len(data.train_x), (config["batch_size"],), generator=g)
        return data.train_x[i].to(device), data.train_y[i].to(device)

    def loss(m, b):
        return noise_prediction_loss(m, b[0], schedule, b[1], config["p_uncond"], g)

    history = fit_cosine(
        model, loss, batch, config, warmup=config["steps"] // 30, title="ddpm-digits"
    )
    return history.as_meta()


DDPM_RECIPE = zoo.Recipe(
    "ddpm-digits",
    ddpm_config,
    build_ddpm,
    train_ddpm,
    "class-conditional noise predictor for the 8x8 digits (label hidden 10% of the time)",
)


def ddpm(device=None, with_meta: bool = False, loss_plot: bool = False):
    """The zoo's ``ddpm-digits`` at the current budget (trained or from the cache) and its schedule.

    Returns ``(model, schedule)``, or ``(model, schedule, meta)`` with ``with_meta=True`` (see
    :func:`fmbook.zoo.load`). With ``loss_plot=True`` a model that came from the cache shows the
    loss curve of its training run (a model trained now has just shown it).
    """
    model, meta = zoo.load(DDPM_RECIPE.name, device=device, with_meta=True)
    if loss_plot and meta["cached"]:
        history = History(step=meta["step"], train_loss=meta["train_loss"], seconds=meta["seconds"])
        LossPlot(title=f"{DDPM_RECIPE.name} (from the cache)", live=False).finish(history)
    schedule = schedule_of(zoo.recipe(DDPM_RECIPE.name).config())
    return (model, schedule, meta) if with_meta else (model, schedule)


def generate(
    model: ResidualMLPDenoiser,
    labels: torch.Tensor | int,
    steps: int | None = None,
    eta: float = 1.0,
    w: float = 0.0,
    seed: int = 1,
    clip: float | None = 1.0,
    schedule: NoiseSchedule | None = None,
) -> torch.Tensor:
    r"""Digits ``(n, 64)`` on the CPU from the class-conditional ``model``, one per label.

    ``labels`` is a tensor of classes, or a count ``n`` of digits without a label (class
    :math:`\varnothing`). ``steps=None`` runs ancestral DDPM over every step; an int runs DDIM with
    ``eta`` over that many steps (:func:`fmbook.diffusion.sample`). ``w`` is the classifier-free
    guidance scale (:func:`fmbook.diffusion.conditional_eps`), ``clip`` clamps :math:`\hat x_0` to
    the pixel range, and the starting noise and every later draw come from a CPU generator seeded
    with ``seed``: the same seed gives the same digits on every device. ``schedule`` defaults to the
    one the ``ddpm-digits`` recipe trains with.
    """
    if isinstance(labels, bool) or not isinstance(labels, (int, torch.Tensor)):
        kind = type(labels).__name__
        raise TypeError(f"generate: labels must be a tensor of classes or a count, got {kind}")
    if isinstance(labels, int):
        if labels < 1:
            raise ValueError(f"generate: the count of digits must be >= 1, got {labels}")
        labels = torch.full((labels,), model.null_class)
    if labels.ndim != 1 or len(labels) < 1:
        shape = tuple(labels.shape)
        raise ValueError(f"generate: labels must be a non-empty 1-D tensor, got shape {shape}")
    schedule = schedule_of(ddpm_config()) if schedule is None else schedule
    device = next(model.parameters()).device
    eps_fn = conditional_eps(model, labels.to(device), w)
    x = sample(
        eps_fn,
        schedule,
        (len(labels), DIM),
        n_steps=steps,
        eta=eta,
        clip=clip,
        generator=torch.Generator().manual_seed(seed),
        device=device,
    )
    return x.cpu()
