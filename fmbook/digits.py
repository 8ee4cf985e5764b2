"""8x8 handwritten digits for the diffusion chapter: data, the evaluator that scores samples, the zoo models.

The data are scikit-learn's ``load_digits`` (1,797 images of 8x8 pixels with
values 0-16, from the UCI "optical recognition of handwritten digits" set),
scaled to [-1, 1] and split once, stratified by class, into a training set and
500 held-out digits.

Generated digits are scored by :func:`score` with an :class:`Evaluator`
(a small convolutional classifier trained on the training digits, in the zoo as
``digits-evaluator``): class accuracy, Fréchet distance in the evaluator's
feature space and a classifier two-sample test, all against held-out digits.
The class-conditional diffusion model is ``ddpm-digits``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from fmbook import budget
from fmbook.diffusion import NoiseSchedule, ResidualMLPDenoiser
from fmbook.metrics import c2st, frechet_distance
from fmbook.runtime import draw_device
from fmbook.zoo import Recipe

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
    """Draw digits ``(n, 64)`` in [-1, 1] as a grid with ``rows`` rows, dark ink on white; returns the axes."""
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
    """``0, ..., 0, 1, ..., 9``: ``n_per_class`` of each class, the labels to ask a conditional model for."""
    if n_per_class < 1:
        raise ValueError(f"balanced_labels: n_per_class must be >= 1, got {n_per_class}")
    return torch.arange(NUM_CLASSES, device=device).repeat_interleave(n_per_class)


def random_shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift a batch of digits by up to one pixel in each direction (blank pixels are -1)."""
    padded = torch.nn.functional.pad(images(x), (1, 1, 1, 1), value=-1.0)
    dx, dy = torch.randint(0, 3, (2,), generator=generator, device=draw_device(generator, "cpu")).tolist()
    return padded[..., dy : dy + SIDE, dx : dx + SIDE].reshape(x.shape)


# -- the evaluator ------------------------------------------------------------------------


class Evaluator(torch.nn.Module):
    """A small CNN digit classifier; its last hidden layer (64 ReLU units) is the feature space of the metrics."""

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


def _evaluator_config() -> dict:
    return {"steps": budget.pick(test=300, full=1500), "batch_size": 128, "lr": 2e-3, "noise": 0.1, "seed": 0}


def _train_evaluator(model: Evaluator, config: dict) -> dict:
    """Cross-entropy on training digits, each batch shifted by up to a pixel and lightly noised."""
    from fmbook.runtime import seed
    from fmbook.train import fit

    seed(config["seed"])
    data, device = load(), next(model.parameters()).device
    g = torch.Generator().manual_seed(config["seed"])

    def batch():
        i = torch.randint(0, len(data.train_x), (config["batch_size"],), generator=g)
        x = random_shift(data.train_x[i], g) + config["noise"] * torch.randn(len(i), DIM, generator=g)
        return x.to(device), data.train_y[i].to(device)

    def loss(m, b):
        return torch.nn.functional.cross_entropy(m(b[0]), b[1])

    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=1e-4)
    history = fit(model, loss, batch, optimizer, config["steps"], schedule="cosine", title="digits evaluator")
    model.eval()
    return {"held_out_accuracy": accuracy(model, data.test_x, data.test_y), "seconds": history.seconds}


EVALUATOR = Recipe(
    "digits-evaluator",
    _evaluator_config,
    lambda config: Evaluator(),
    _train_evaluator,
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
    """Fréchet distance and C2ST of ``samples`` against ``reference`` (default: the 500 held-out digits)
    in the evaluator's feature space, and the class accuracy when the requested ``labels`` are given.

    Compare the Fréchet distance only with one computed from as many samples (see :func:`real_floor`).
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
    """:func:`score` of ``n`` real training digits against the held-out ones: the best a generator can hope for."""
    data = load()
    i = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(seed))[:n]
    return score(evaluator, data.train_x[i], data.train_y[i])


# -- the class-conditional diffusion model -------------------------------------------------------


def _ddpm_config() -> dict:
    return {
        "T": 1000,
        "schedule": "cosine",
        "width": 256,
        "depth": 4,
        "steps": budget.pick(test=500, full=8000, gpu=30000),
        "batch_size": 256,
        "lr": 1e-3,
        "p_uncond": 0.1,
        "seed": 0,
    }


def schedule_of(config: dict) -> NoiseSchedule:
    """The noise schedule a ``ddpm-digits`` config names."""
    return getattr(NoiseSchedule, config["schedule"])(config["T"])


def diffusion_loss(
    model: ResidualMLPDenoiser,
    x0: torch.Tensor,
    labels: torch.Tensor,
    schedule: NoiseSchedule,
    p_uncond: float,
    generator: torch.Generator,
) -> torch.Tensor:
    r"""Ho et al.'s simple loss with a label that is sometimes hidden (Ho & Salimans 2021):

    .. math:: \mathbb{E}_{x_0, c, t, \epsilon}\,\big\lVert \epsilon - \epsilon_\theta(\sqrt{\bar\alpha_t}\,x_0
              + \sqrt{1-\bar\alpha_t}\,\epsilon,\ t,\ c') \big\rVert^2 ,

    with :math:`t` uniform over the steps and :math:`c' = \varnothing` with probability ``p_uncond``, else :math:`c`.
    Random numbers are drawn from ``generator`` on its device and the noised digits computed on the CPU:
    with a CPU generator a run is the same on every device.
    """
    if not 0 <= p_uncond < 1:
        raise ValueError(f"diffusion_loss: p_uncond must be in [0, 1), got {p_uncond}")
    device, B, at = x0.device, len(x0), draw_device(generator, "cpu")
    t = torch.randint(0, schedule.T, (B,), generator=generator, device=at).cpu()
    noise = torch.randn(x0.shape, generator=generator, device=at).cpu()
    hide = torch.rand(B, generator=generator, device=at).cpu() < p_uncond
    c = torch.where(hide, model.null_class, labels.cpu())
    x_t = schedule.q_sample(x0.cpu(), t, noise)
    return (model(x_t.to(device), t.to(device), c.to(device)) - noise.to(device)).square().mean()


def build_ddpm(config: dict) -> ResidualMLPDenoiser:
    """A fresh (untrained) denoiser of the size a ``ddpm-digits`` config names."""
    return ResidualMLPDenoiser(DIM, config["T"], NUM_CLASSES, width=config["width"], depth=config["depth"])


def _train_ddpm(model: ResidualMLPDenoiser, config: dict) -> dict:
    """AdamW with warm-up and cosine decay on :func:`diffusion_loss`, batches of training digits."""
    from fmbook.runtime import seed
    from fmbook.train import fit

    seed(config["seed"])
    data, device = load(), next(model.parameters()).device
    schedule = schedule_of(config)
    g = torch.Generator().manual_seed(config["seed"])

    def batch():
        i = torch.randint(0, len(data.train_x), (config["batch_size"],), generator=g)
        return data.train_x[i].to(device), data.train_y[i].to(device)

    def loss(m, b):
        return diffusion_loss(m, b[0], b[1], schedule, config["p_uncond"], g)

    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.0)
    steps = config["steps"]
    history = fit(
        model,
        loss,
        batch,
        optimizer,
        steps,
        warmup=steps // 30,
        schedule="cosine",
        grad_clip=1.0,
        title="ddpm-digits",
    )
    return {"step": history.step, "train_loss": history.train_loss, "seconds": history.seconds}


DDPM = Recipe(
    "ddpm-digits",
    _ddpm_config,
    build_ddpm,
    _train_ddpm,
    "class-conditional noise predictor for the 8x8 digits (label hidden 10% of the time)",
)
