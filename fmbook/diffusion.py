r"""Diffusion models (chapter 3): noise schedules, forward process, samplers, guidance, denoisers.

The forward process adds Gaussian noise in :math:`T` small steps (Ho et al. 2020, eq. 2),
:math:`q(x_t \mid x_{t-1}) = \mathcal{N}(\sqrt{1-\beta_t}\,x_{t-1}, \beta_t I)`.
With :math:`\alpha_t = 1 - \beta_t` and :math:`\bar\alpha_t = \prod_{s \le t}\alpha_s`
any step can be reached in one jump (eq. 4),

.. math:: q(x_t \mid x_0) = \mathcal{N}(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I).

What the module holds:

* :class:`NoiseSchedule` -- the :math:`\beta_t` (``linear``: Ho et al. 2020; ``cosine``: Nichol &
  Dhariwal 2021) and ``alphas``, ``alphas_cumprod`` (:math:`\bar\alpha_t`); ``q_sample`` (the jump);
  ``predict_x0_from_eps``; ``posterior`` (:math:`q(x_{t-1} \mid x_t, x_0)`); the reverse steps
  ``ddpm_step`` (ancestral sampling, Ho et al. 2020) and ``ddim_step`` (Song et al. 2021).
* :func:`sampling_steps` -- the sub-sequence of steps a DDIM sampler visits; :func:`sample` -- the
  whole reverse process, DDPM or DDIM, from :math:`x_T \sim \mathcal{N}(0, I)`.
* :func:`guided_eps` and :func:`conditional_eps` -- classifier-free guidance (Ho & Salimans 2021).
* the noise predictors :math:`\epsilon_\theta`: :class:`MLPDenoiser` (points in the plane) and
  :class:`ResidualMLPDenoiser` (class-conditional, for the 8x8 digits of :mod:`fmbook.digits`),
  told the step through a :class:`SinusoidalEmbedding`.

The loss that trains a noise predictor, :math:`L_\text{simple}`, lives with the other losses:
:func:`fmbook.objectives.noise_prediction_loss`.

Steps are indexed ``t = 0, ..., T-1`` in code (step ``t`` of the papers is index ``t-1`` here).
A schedule is kept in float64 on the CPU (MPS has no float64); each step's values are picked
there and cast to the dtype and device of the data they multiply.
"""

from __future__ import annotations

import math

import torch

from fmbook.runtime import draw_device


class NoiseSchedule:
    r"""The variances :math:`\beta_t` of the forward process and the quantities derived from
    them."""

    def __init__(self, betas: torch.Tensor):
        if isinstance(betas, torch.Tensor):
            betas = betas.detach().cpu()  # a schedule lives on the CPU, in float64
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) < 1:
            raise ValueError(
                "NoiseSchedule: betas must be a 1-D tensor with T >= 1 entries, "
                f"got shape {tuple(betas.shape)}"
            )
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError(
                "NoiseSchedule: every beta must be in (0, 1), "
                f"got min {betas.min().item():.3g}, max {betas.max().item():.3g}"
            )
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

    @property
    def T(self) -> int:
        return len(self.betas)

    @classmethod
    def linear(
        cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> NoiseSchedule:
        r"""Ho et al. (2020): :math:`\beta_t` linear from ``beta_start`` to ``beta_end``."""
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"NoiseSchedule.linear: T must be an int >= 1, got {T!r}")
        return cls(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
        r"""Nichol & Dhariwal (2021): :math:`\bar\alpha_t = f(t)/f(0)`,
        :math:`f(t) = \cos^2\big(\frac{t/T + s}{1+s}\cdot\frac{\pi}{2}\big)`,
        with :math:`\beta_t = 1 - \bar\alpha_t/\bar\alpha_{t-1}` clipped at ``max_beta``."""
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"NoiseSchedule.cosine: T must be an int >= 1, got {T!r}")
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        alphas_cumprod = f / f[0]
        betas = (1 - alphas_cumprod[1:] / alphas_cumprod[:-1]).clamp(max=max_beta)
        return cls(betas)

    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        r"""A sample of :math:`q(x_t \mid x_0)`:
        :math:`\sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon`.

        ``t`` is an int or a tensor of one step per example (shape ``(B,)``,
        ``x0`` of shape ``(B, ...)``); ``noise`` has the shape of ``x0``.
        """
        if noise.shape != x0.shape:
            raise ValueError(
                f"q_sample: noise must have the shape of x0 {tuple(x0.shape)}, "
                f"got {tuple(noise.shape)}"
            )
        t = self._check_t(t, "q_sample: t")
        abar = self._per_example(self.alphas_cumprod[t], t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    # -- the reverse process ------------------------------------------------------------

    def _abar_prev(self, t: torch.Tensor) -> torch.Tensor:
        r""":math:`\bar\alpha_{t-1}` for index ``t``, with :math:`\bar\alpha` of "before step 0"
        equal to 1."""
        prev = torch.cat([torch.ones(1, dtype=self.alphas_cumprod.dtype), self.alphas_cumprod[:-1]])
        return prev[t]

    def _check_t(self, t, name: str = "t") -> torch.Tensor:
        # on the CPU, where the schedule is: a CUDA index tensor cannot index a CPU tensor
        t = torch.as_tensor(t, dtype=torch.long).cpu()
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.T):
            raise ValueError(f"{name} must be in [0, T) = [0, {self.T}), got {t.tolist()}")
        return t

    def _per_example(
        self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor
    ) -> torch.Tensor:
        """``values[t]`` shaped to broadcast against ``like``: one value per example when ``t`` is
        1-D."""
        if t.ndim == 1 and (like.ndim == 0 or t.shape[0] != like.shape[0]):
            raise ValueError(
                f"one t per example: t has {t.shape[0]} entries, "
                f"the batch has shape {tuple(like.shape)}"
            )
        values = values.to(like.dtype).to(like.device)  # cast on the CPU first: MPS has no float64
        return values.view(-1, *([1] * (like.ndim - 1))) if t.ndim == 1 else values

    def predict_x0_from_eps(self, x_t: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        r"""Invert the jump:
        :math:`\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon) / \sqrt{\bar\alpha_t}`."""
        if eps.shape != x_t.shape:
            raise ValueError(
                f"predict_x0_from_eps: eps must have the shape of x_t {tuple(x_t.shape)}, "
                f"got {tuple(eps.shape)}"
            )
        t = self._check_t(t)
        abar = self._per_example(self.alphas_cumprod[t], t, x_t)
        return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()

    def posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, t
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Mean and variance of :math:`q(x_{t-1} \mid x_t, x_0)` (Ho et al. 2020, eq. 6-7):

        .. math::
            \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t} x_0
            + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t} x_t,
            \qquad \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t .
        """
        if x0.shape != x_t.shape:
            raise ValueError(
                "posterior: x0 and x_t must have the same shape, "
                f"got {tuple(x0.shape)} and {tuple(x_t.shape)}"
            )
        t = self._check_t(t)
        abar, abar_prev = self.alphas_cumprod[t], self._abar_prev(t)
        beta, alpha = self.betas[t], self.alphas[t]
        coef_x0 = self._per_example(abar_prev.sqrt() * beta / (1 - abar), t, x0)
        coef_xt = self._per_example(alpha.sqrt() * (1 - abar_prev) / (1 - abar), t, x0)
        variance = self._per_example((1 - abar_prev) / (1 - abar) * beta, t, x0)
        return coef_x0 * x0 + coef_xt * x_t, variance.expand_as(x0)

    def ddpm_step(
        self,
        x_t: torch.Tensor,
        t: int,
        eps: torch.Tensor,
        noise: torch.Tensor | None = None,
        clip: float | None = None,
    ) -> torch.Tensor:
        r"""One ancestral step :math:`x_t \to x_{t-1}` of DDPM (Ho et al. 2020, Algorithm 2), with
        :math:`\sigma_t^2 = \tilde\beta_t`:

        .. math::
            x_{t-1} = \frac{1}{\sqrt{\alpha_t}}
            \Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\epsilon\Big)
            + \sqrt{\tilde\beta_t}\,z ,

        computed as the posterior mean :math:`\tilde\mu_t(x_t, \hat x_0)` with :math:`\hat x_0`
        from the predicted noise ``eps`` (the same mean as above when ``clip`` is None), plus
        ``noise`` :math:`z` scaled; no noise at the last step (``t = 0``) or when ``noise`` is None.

        ``clip`` clamps :math:`\hat x_0` to ``[-clip, clip]``, the range of the data, before it is
        used (Ho et al.'s sampler does this for images in [-1, 1])."""
        if not isinstance(t, int):
            raise TypeError(
                "ddpm_step: t must be an int (one step for the whole batch), "
                f"got {type(t).__name__}"
            )
        x0 = _clip(self.predict_x0_from_eps(x_t, t, eps), clip)
        mean, variance = self.posterior(x0, x_t, t)
        if t == 0 or noise is None:
            return mean
        return mean + variance.sqrt() * noise

    def ddim_step(
        self,
        x_t: torch.Tensor,
        t: int,
        s: int,
        eps: torch.Tensor,
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
        clip: float | None = None,
    ) -> torch.Tensor:
        r"""One DDIM step from index ``t`` to an earlier index ``s`` (``s = -1``: the clean sample),
        Song et al. (2021), eqs. 12 and 16:

        .. math::
            x_s = \sqrt{\bar\alpha_s}\,\hat x_0
            + \sqrt{1 - \bar\alpha_s - \sigma^2}\,\epsilon + \sigma z,
            \qquad \sigma = \eta \sqrt{\frac{1-\bar\alpha_s}{1-\bar\alpha_t}}
            \sqrt{1-\frac{\bar\alpha_t}{\bar\alpha_s}} .

        ``eta = 0`` is deterministic; ``eta = 1`` between consecutive steps is DDPM's posterior
        variance. With ``clip``, :math:`\hat x_0` is clamped to ``[-clip, clip]`` and
        :math:`\epsilon` recomputed from it,
        :math:`\epsilon = (x_t - \sqrt{\bar\alpha_t}\,\hat x_0)/\sqrt{1-\bar\alpha_t}`, so that
        the two stay consistent.
        """
        if not isinstance(t, int) or not isinstance(s, int) or not -1 <= s < t < self.T:
            raise ValueError(
                f"ddim_step: need integers -1 <= s < t < T = {self.T}, got t={t!r}, s={s!r}"
            )
        if eta < 0:
            raise ValueError(f"ddim_step: eta must be >= 0, got {eta}")
        x0 = self.predict_x0_from_eps(x_t, t, eps)
        abar_t = self.alphas_cumprod[t].item()
        abar_s = 1.0 if s < 0 else self.alphas_cumprod[s].item()
        if clip is not None:
            x0 = _clip(x0, clip)
            eps = (x_t - math.sqrt(abar_t) * x0) / math.sqrt(1 - abar_t)
        sigma = eta * math.sqrt((1 - abar_s) / (1 - abar_t)) * math.sqrt(1 - abar_t / abar_s)
        x_s = math.sqrt(abar_s) * x0 + math.sqrt(max(1 - abar_s - sigma**2, 0.0)) * eps
        if sigma > 0 and noise is not None:
            x_s = x_s + sigma * noise
        return x_s


def _clip(x0: torch.Tensor, clip: float | None) -> torch.Tensor:
    if clip is None:
        return x0
    if not clip > 0:
        raise ValueError(f"clip must be > 0 or None, got {clip}")
    return x0.clamp(-clip, clip)


def guided_eps(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, w: float) -> torch.Tensor:
    r"""Classifier-free guidance (Ho & Salimans 2021):
    :math:`\tilde\epsilon = (1 + w)\,\epsilon(x, c) - w\,\epsilon(x)`."""
    if w < 0:
        raise ValueError(f"guided_eps: the guidance scale w must be >= 0, got {w}")
    if eps_cond.shape != eps_uncond.shape:
        raise ValueError(
            f"guided_eps: conditional and unconditional predictions differ in shape: "
            f"{tuple(eps_cond.shape)} and {tuple(eps_uncond.shape)}"
        )
    return (1 + w) * eps_cond - w * eps_uncond


def sampling_steps(T: int, n: int) -> list[int]:
    """``n`` evenly spaced step indices from ``T - 1`` down to 0: the sub-sequence a DDIM sampler
    visits.

    ``n = 1`` is the single index ``T - 1``: one jump from pure noise to the clean estimate.
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= T:
        raise ValueError(
            f"sampling_steps: the number of steps must be in [1, T = {T}] (an int), got {n!r}"
        )
    if n == 1:
        return [T - 1]
    return sorted({round(i * (T - 1) / max(n - 1, 1)) for i in range(n)}, reverse=True)


class SinusoidalEmbedding(torch.nn.Module):
    """The step ``t`` as sines and cosines of geometrically spaced frequencies
    (Vaswani et al. 2017)."""

    def __init__(self, dim: int, T: int):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"SinusoidalEmbedding: dim must be an even number >= 2, got {dim}")
        self.T = T
        self.register_buffer(
            "freqs",
            torch.exp(-math.log(1000.0) * torch.arange(dim // 2) / (dim // 2)),
            persistent=False,
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = (t.float() / self.T * 1000.0)[:, None] * self.freqs[None]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class MLPDenoiser(torch.nn.Module):
    r"""A noise predictor :math:`\epsilon_\theta(x_t, t)` for points in :math:`\mathbb{R}^d`: an MLP
    on ``[x_t, emb(t)]``."""

    def __init__(self, dim: int, T: int, width: int = 128, depth: int = 3, t_dim: int = 32):
        super().__init__()
        self.embed = SinusoidalEmbedding(t_dim, T)
        layers, d_in = [], dim + t_dim
        for _ in range(depth):
            layers += [torch.nn.Linear(d_in, width), torch.nn.SiLU()]
            d_in = width
        layers.append(torch.nn.Linear(width, dim))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or t.shape != (x.shape[0],):
            raise ValueError(
                "MLPDenoiser: expected x (B, d) and t (B,), "
                f"got {tuple(x.shape)} and {tuple(t.shape)}"
            )
        return self.net(torch.cat([x, self.embed(t)], dim=1))


class _ResidualBlock(torch.nn.Module):
    """``h + W_2 SiLU(W_1 (LayerNorm(h) + U e))``: a pre-norm MLP block told the step and class
    through ``e``."""

    def __init__(self, width: int, cond_dim: int):
        super().__init__()
        self.norm = torch.nn.LayerNorm(width)
        self.cond = torch.nn.Linear(cond_dim, width)
        self.fc1 = torch.nn.Linear(width, 2 * width)
        self.fc2 = torch.nn.Linear(2 * width, width)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(torch.nn.functional.silu(self.fc1(self.norm(h) + self.cond(e))))


class ResidualMLPDenoiser(torch.nn.Module):
    r"""A class-conditional noise predictor :math:`\epsilon_\theta(x_t, t, c)` for flattened images.

    The step and the class are embedded, summed into one vector ``e`` and added inside every
    residual block. Class ``num_classes`` is the "no label" token :math:`\varnothing` that
    classifier-free guidance needs for :math:`\epsilon_\theta(x_t, t, \varnothing)`.
    """

    def __init__(
        self,
        dim: int,
        T: int,
        num_classes: int,
        width: int = 256,
        depth: int = 4,
        emb_dim: int = 128,
    ):
        super().__init__()
        if num_classes < 1 or width < 1 or depth < 1:
            raise ValueError(
                "ResidualMLPDenoiser: num_classes, width and depth must be >= 1, "
                f"got {num_classes}, {width}, {depth}"
            )
        self.dim, self.num_classes = dim, num_classes
        self.time = SinusoidalEmbedding(emb_dim, T)
        self.label = torch.nn.Embedding(num_classes + 1, emb_dim)
        self.mix = torch.nn.Sequential(
            torch.nn.Linear(emb_dim, emb_dim),
            torch.nn.SiLU(),
            torch.nn.Linear(emb_dim, emb_dim),
            torch.nn.SiLU(),
        )
        self.inp = torch.nn.Linear(dim, width)
        self.blocks = torch.nn.ModuleList(_ResidualBlock(width, emb_dim) for _ in range(depth))
        self.out = torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, dim))

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim or t.shape != (x.shape[0],) or c.shape != t.shape:
            raise ValueError(
                f"ResidualMLPDenoiser: expected x (B, {self.dim}), t (B,) and c (B,), "
                f"got {tuple(x.shape)}, {tuple(t.shape)} and {tuple(c.shape)}"
            )
        e = self.mix(self.time(t) + self.label(c))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, e)
        return self.out(h)


def conditional_eps(model: ResidualMLPDenoiser, labels: torch.Tensor, w: float = 0.0):
    r"""``eps_fn(x, t)`` for :func:`sample` that asks ``model`` for class ``labels`` with guidance
    scale ``w``: :math:`\tilde\epsilon = (1 + w)\,\epsilon(x, c) - w\,\epsilon(x, \varnothing)`,
    both in one batch. ``w = 0`` is plain conditional sampling (one forward pass)."""
    if w < 0:
        raise ValueError(f"conditional_eps: the guidance scale w must be >= 0, got {w}")
    null = torch.full_like(labels, model.null_class)

    def eps_fn(x, t):
        if w == 0:
            return model(x, t, labels)
        both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
        cond, uncond = both.chunk(2)
        return guided_eps(cond, uncond, w)

    return eps_fn


@torch.no_grad()
def sample(
    eps_fn,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    n_steps: int | None = None,
    eta: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    trajectory: bool = False,
    clip: float | None = None,
):
    r"""Draw samples by running the reverse process from :math:`x_T \sim \mathcal{N}(0, I)`.

    ``eps_fn(x, t)`` predicts the noise for a batch at integer step tensor ``t``.
    With ``n_steps=None`` every step is taken with :meth:`NoiseSchedule.ddpm_step`
    (ancestral DDPM); otherwise DDIM steps (:meth:`NoiseSchedule.ddim_step`, with
    ``eta``) visit ``n_steps`` evenly spaced steps. ``clip`` clamps each step's
    :math:`\hat x_0` to the data range ``[-clip, clip]``. ``trajectory=True`` also returns
    the list of ``(t, x_t)`` visited. Noise is drawn on ``generator``'s device and moved to
    ``device``: with a CPU generator a seed gives the same noise on every device.
    """

    def randn():  # drawn on the generator's device, then moved: the same noise on every device
        return torch.randn(shape, generator=generator, device=draw_device(generator, device)).to(
            device
        )

    x = randn()
    path = [(schedule.T, x)]
    if n_steps is None:
        for t in range(schedule.T - 1, -1, -1):
            eps = eps_fn(x, torch.full((shape[0],), t, device=device, dtype=torch.long))
            x = schedule.ddpm_step(x, t, eps, randn() if t > 0 else None, clip=clip)
            path.append((t, x))
    else:
        steps = sampling_steps(schedule.T, n_steps)
        for t, s in zip(steps, steps[1:] + [-1]):
            eps = eps_fn(x, torch.full((shape[0],), t, device=device, dtype=torch.long))
            x = schedule.ddim_step(
                x, t, s, eps, eta=eta, noise=randn() if eta > 0 and s >= 0 else None, clip=clip
            )
            path.append((s + 1, x))
    return (x, path) if trajectory else x
