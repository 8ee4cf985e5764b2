r"""The one training loop of the book.

:func:`fit` runs ``steps`` optimisation steps of a loss function on batches,
with an optional linear warm-up followed by cosine decay of the learning rate,

.. math::
    \eta(s) = \begin{cases}
        \eta_{\max}\, \frac{s + 1}{W} & s < W \\
        \eta_{\min} + \tfrac12(\eta_{\max} - \eta_{\min})
        \left(1 + \cos\frac{\pi (s - W)}{S - W}\right) & s \ge W,
    \end{cases}

optional gradient-norm clipping, optional mixed precision and periodic evaluation. In Jupyter
it shows a progress bar and a live plot of the train and evaluation losses that redraws in
place; headless (book build, nbval, scripts) it draws the final plot once and prints one
summary line. Ctrl-C stops it cleanly: the model and the history so far are returned.

The loop never waits for the device on its own account: each step's loss stays on the device,
and the losses are read (one host synchronisation) every :data:`SYNC_EVERY` steps, at an
evaluation and at the end. Under ``torchrun`` it trains data-parallel (:mod:`fmbook.parallel`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fmbook import parallel, threads
from fmbook.runtime import as_device, headless, in_notebook

LONG_RUN_STEPS = 200  # fit re-chooses the CPU threads (fmbook.threads) before a run this long
SYNC_EVERY = 16  # fit reads the losses from the device once per this many steps


@dataclass
class History:
    """What happened during :func:`fit`: losses per step, evaluations, timing."""

    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def steps_done(self) -> int:
        return len(self.step)

    def last_train_loss(self, window: int = 50) -> float:
        """Mean train loss of the last ``window`` steps (NaN before any step)."""
        tail = self.train_loss[-window:]
        return sum(tail) / len(tail) if tail else float("nan")

    @property
    def final_eval_loss(self) -> float:
        return self.eval_loss[-1] if self.eval_loss else float("nan")

    def curves(self) -> dict:
        """The training and evaluation curves and the time, as a model trained by a zoo recipe
        keeps them: ``step``, ``train_loss``, ``eval_step``, ``eval_loss`` and ``seconds``."""
        return {
            "step": self.step,
            "train_loss": self.train_loss,
            "eval_step": self.eval_step,
            "eval_loss": self.eval_loss,
            "seconds": self.seconds,
        }

    def as_meta(self) -> dict:
        """The training curve and time as plain values, what a zoo recipe keeps beside the weights:
        ``{"step": [...], "train_loss": [...], "seconds": s}``."""
        return {
            "step": list(self.step),
            "train_loss": list(self.train_loss),
            "seconds": self.seconds,
        }


def lr_at(step: int, steps: int, warmup: int = 0, min_ratio: float = 0.1) -> float:
    """Learning-rate multiplier at ``step`` (0-based) of ``steps``: linear warm-up, then cosine.

    Returns a factor in ``[min_ratio, 1]`` applied to each parameter group's base rate.
    """
    if steps < 1:
        raise ValueError(f"lr_at: steps must be >= 1, got {steps}")
    if not 0 <= warmup <= steps:
        raise ValueError(f"lr_at: warmup must be in [0, steps={steps}], got {warmup}")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"lr_at: min_ratio must be in [0, 1], got {min_ratio}")
    if step < warmup:
        return (step + 1) / warmup
    decay_steps = max(1, steps - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    return min_ratio + 0.5 * (1.0 - min_ratio) * (1.0 + math.cos(math.pi * progress))


class LossPlot:
    """Train and evaluation loss against step; redraws in place in Jupyter."""

    def __init__(self, title: str | None = None, live: bool = True, every_s: float = 1.0):
        import matplotlib.pyplot as plt

        self.live = live
        self.every_s = every_s
        self.fig, self.ax = plt.subplots(figsize=(6.4, 3.2))
        plt.close(self.fig)  # we display it ourselves; keep pyplot from showing it twice
        self.title = title
        self._handle = None
        self._last = 0.0

    def draw(self, history: History) -> None:
        ax = self.ax
        ax.clear()
        if history.step:
            ax.plot(
                history.step,
                history.train_loss,
                lw=0.8,
                alpha=0.4,
                color="C0",
                label="train (per step)",
            )
            ax.plot(
                history.step,
                _smooth(history.train_loss),
                lw=1.6,
                color="C0",
                label="train (smoothed)",
            )
        if history.eval_step:
            ax.plot(
                history.eval_step, history.eval_loss, "o-", ms=3.5, color="C1", label="evaluation"
            )
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        if self.title:
            ax.set_title(self.title)
        if history.step or history.eval_step:
            ax.legend(loc="upper right", frameon=False)
        ax.grid(alpha=0.3)
        self.fig.tight_layout()

    def update(self, history: History, force: bool = False) -> None:
        if not self.live:
            return
        now = time.perf_counter()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        self.draw(history)
        from IPython.display import display

        if self._handle is None:
            self._handle = display(self.fig, display_id=True)
        else:
            self._handle.update(self.fig)

    def finish(self, history: History) -> None:
        self.draw(history)
        if self.live and self._handle is not None:
            self._handle.update(self.fig)
            return
        try:
            from IPython.display import display

            if in_notebook():
                display(self.fig)
        except ImportError:  # plain Python without IPython: nothing to show
            pass


def _smooth(values: list[float], beta: float = 0.9) -> list[float]:
    """Bias-corrected exponential moving average, as in Adam's first moment."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def _batch_source(batches) -> Callable[[], object]:
    if callable(batches):
        return batches
    if isinstance(batches, Iterable):
        iterator = iter(batches)

        def next_batch():
            try:
                return next(iterator)
            except StopIteration:
                raise ValueError("fit: the batches ran out before the last step") from None

        return next_batch
    raise TypeError(
        f"fit: batches must be a callable returning a batch or an iterable of batches, "
        f"got {type(batches).__name__}"
    )


def fit(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, object], torch.Tensor],
    batches,
    optimizer: torch.optim.Optimizer,
    steps: int,
    *,
    eval_fn: Callable[[torch.nn.Module], float] | None = None,
    eval_every: int | None = None,
    warmup: int = 0,
    schedule: str | None = None,
    min_lr_ratio: float = 0.1,
    grad_clip: float | None = None,
    autocast: torch.dtype | None = None,
    plot: bool = True,
    progress: bool = True,
    title: str | None = None,
) -> History:
    """Train ``model`` for ``steps`` steps and return its :class:`History`.

    Each step draws a batch (``batches()`` if callable, else the next item),
    computes ``loss = loss_fn(model, batch)``, back-propagates, clips the
    gradient norm to ``grad_clip`` if given and takes an optimizer step.
    ``schedule="cosine"`` applies :func:`lr_at` with ``warmup`` steps;
    ``eval_fn(model)`` runs under ``torch.no_grad()`` in eval mode every
    ``eval_every`` steps and after the last one. ``autocast=torch.bfloat16`` (or
    ``torch.float16``, with a gradient scaler) runs the forward pass and the loss in that
    precision (:func:`mixed_precision` says which one a device does well).

    Under ``torchrun`` (:mod:`fmbook.parallel`) each process trains a
    ``DistributedDataParallel`` copy on its share of every batch, the logged loss is the
    mean over all processes, and only rank 0 evaluates, prints and draws.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"fit: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"fit: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"fit: steps must be a positive int, got {steps!r}")
    if schedule not in (None, "cosine"):
        raise ValueError(f"fit: schedule must be None or 'cosine', got {schedule!r}")
    if schedule is None and warmup:
        raise ValueError("fit: warmup needs schedule='cosine'")
    if eval_every is not None and (eval_every < 1 or eval_fn is None):
        raise ValueError("fit: eval_every needs an eval_fn and must be >= 1")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"fit: grad_clip must be > 0 or None, got {grad_clip}")
    if autocast not in (None, torch.bfloat16, torch.float16):
        raise ValueError(
            f"fit: autocast must be None, torch.bfloat16 or torch.float16, got {autocast}"
        )
    if schedule == "cosine":
        lr_at(0, steps, warmup, min_lr_ratio)  # validates warmup and min_lr_ratio

    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    if steps >= LONG_RUN_STEPS:  # the load may have changed since the notebook started
        threads.apply(device)
    main = parallel.is_main()
    quiet = headless() or not main
    net = parallel.wrap(model)
    next_batch = _batch_source(batches)
    history = History()
    board = LossPlot(title=title, live=not quiet) if plot and main else None
    bar = None
    if progress and not quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=title or "training", leave=True)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    scaler = torch.amp.GradScaler(device.type) if autocast == torch.float16 else None
    pending: list[torch.Tensor] = []  # losses of the steps not yet read from the device

    def precision():
        if autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=autocast)

    def read_losses() -> None:
        if not pending:
            return
        values = parallel.mean(torch.stack(pending).float()).tolist()
        done = len(history.train_loss)
        pending.clear()
        for i, value in enumerate(values):
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"fit: the loss became {value} at step {done + i}; try a lower learning rate "
                    "or gradient clipping"
                )
        history.train_loss.extend(values)
        if bar is not None:
            bar.update(len(values))
            bar.set_postfix(loss=f"{history.last_train_loss(20):.3f}", refresh=False)
        if board is not None:
            board.update(history)

    def evaluate(step: int) -> None:
        read_losses()
        if not main:
            return
        was_training = model.training
        model.eval()
        with torch.no_grad():
            value = float(eval_fn(model))
        model.train(was_training)
        history.eval_step.append(step)
        history.eval_loss.append(value)

    start = time.perf_counter()
    model.train()
    try:
        for step in range(steps):
            factor = lr_at(step, steps, warmup, min_lr_ratio) if schedule else 1.0
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor
            batch = parallel.shard(next_batch())
            with precision():
                loss = loss_fn(net, batch)
            if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
                raise TypeError("fit: loss_fn must return a scalar tensor")
            optimizer.zero_grad(set_to_none=True)
            _backward_and_step(loss, model, optimizer, grad_clip, scaler)
            pending.append(loss.detach())
            history.step.append(step + 1)
            history.lr.append(base_lrs[0] * factor)
            if len(pending) >= SYNC_EVERY:
                read_losses()
            if (
                eval_fn is not None
                and eval_every
                and (step + 1) % eval_every == 0
                and step + 1 < steps
            ):
                evaluate(step + 1)
        if eval_fn is not None:
            evaluate(steps)
        read_losses()
    except KeyboardInterrupt:
        history.interrupted = True
    finally:
        if history.interrupted:
            read_losses()
        del history.step[len(history.train_loss) :]
        del history.lr[len(history.train_loss) :]
        history.seconds = time.perf_counter() - start
        if bar is not None:
            bar.close()
    if board is not None:
        board.finish(history)
    if main:
        print(_summary(history, steps))
    return history


def _backward_and_step(loss, model, optimizer, grad_clip, scaler) -> None:
    """Back-propagate ``loss`` and take one optimizer step, through the fp16 gradient scaler if
    there is one (it multiplies the loss by a factor :math:`S` so that small gradients survive
    float16, divides the gradients by :math:`S` again before clipping, and skips a step whose
    gradients overflowed)."""
    if scaler is None:
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()


def mixed_precision(device) -> torch.dtype | None:
    """The autocast dtype that training on ``device`` uses: ``torch.bfloat16`` on a CUDA GPU
    that supports it, ``torch.float16`` (with a gradient scaler) on older GPUs such as the T4,
    and ``None`` (float32) on the CPU and MPS.

    On a CPU with bf16 matrix instructions (:func:`cpu_has_bf16`) bf16 autocast makes a training
    step of the book's GPT about 1.5 times faster (``benchmarks/profile_step.py --autocast
    bf16``), but every CPU without them would then train other models than the book shows;
    the book's notebooks train in float32 there, and the benchmarks measure both.
    """
    device = as_device(device)
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def cpu_has_bf16() -> bool:
    """True when this CPU has bf16 matrix instructions (Intel AMX, or AVX-512 BF16), read from
    ``/proc/cpuinfo`` (False where there is none, e.g. on macOS)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def adamw(params, device, **options) -> torch.optim.AdamW:
    """``torch.optim.AdamW(params, **options)``, fused into one kernel per step on CUDA.

    Fusing changes the order of floating-point operations, not the update; on the CPU the
    book keeps PyTorch's default implementation, so its results do not move.
    """
    if as_device(device).type == "cuda":
        options.setdefault("fused", True)
    return torch.optim.AdamW(params, **options)


def _summary(history: History, steps: int) -> str:
    parts = [f"{history.steps_done}/{steps} steps in {history.seconds:.1f} s"]
    if history.train_loss:
        parts.append(f"train loss {history.last_train_loss():.3f}")
    if history.eval_loss:
        parts.append(f"eval loss {history.final_eval_loss:.3f}")
    if history.interrupted:
        parts.append("interrupted: returning the model and history so far")
    return " | ".join(parts)


def fit_cosine(
    model: torch.nn.Module, loss_fn, batches, config: dict, *, warmup: int, title: str
) -> History:
    """:func:`fit` with the schedule of the book's denoiser and in-context learner.

    AdamW at ``config["lr"]`` without weight decay, for ``config["steps"]`` steps: a linear
    warm-up over ``warmup`` steps, then a cosine decay (:func:`lr_at`), the gradient norm
    clipped at 1.
    """
    device = next(model.parameters()).device
    optimizer = adamw(model.parameters(), device, lr=config["lr"], weight_decay=0.0)
    return fit(
        model,
        loss_fn,
        batches,
        optimizer,
        config["steps"],
        warmup=warmup,
        schedule="cosine",
        grad_clip=1.0,
        title=title,
    )
