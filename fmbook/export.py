r"""The book's GPT as an ONNX graph, run by ONNX Runtime.

PyTorch runs a model as a Python program, one operation after the other. An exporter traces that
program once and writes the operations and the weights as a graph in the ONNX format (Open Neural
Network Exchange, https://onnx.ai); an inference runtime such as ONNX Runtime
(https://onnxruntime.ai) loads the file without Python's model code, rewrites the graph (it folds
constants and fuses chains of operations into single kernels) and runs it.

:func:`export_onnx` exports the forward pass of :class:`fmbook.transformer.GPT` without the
key/value cache, ``idx (B, T) -> logits (B, T, V)``, with the batch ``B`` and the length
``1 <= T <= block_size`` left free (``torch.onnx.export`` with ``dynamo=True``, which needs the
``onnxscript`` package). :func:`session` opens the file in ONNX Runtime on the CPU,
:func:`onnx_logits` runs it, and :func:`greedy` generates with any function from ids to logits:

.. math:: x_{t+1} = \operatorname*{argmax}_v \, z_t(v), \qquad
    z = f(x_{t-T+1}, \dots, x_t),\ T = \min(t, \text{block}).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fmbook.transformer import GPT

__all__ = ["Logits", "quiet", "export_onnx", "session", "onnx_logits", "greedy"]


class Logits(nn.Module):
    """``idx (B, T) -> logits (B, T, V)``: a GPT's forward pass with one tensor in and one out,
    the shape of a graph's inputs and outputs (the loss and the cache stay behind)."""

    def __init__(self, gpt: GPT):
        super().__init__()
        if not isinstance(gpt, GPT):
            raise TypeError(f"Logits: expected a fmbook GPT, got {type(gpt).__name__}")
        self.gpt = gpt

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.gpt(idx)[0]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporter's warnings and log lines (operators of packages that are not
    installed, deprecations inside PyTorch) for the ``with`` block."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(gpt: GPT, path: str | Path) -> Path:
    """Write ``gpt``'s forward pass without the cache to the ONNX file ``path``; return ``path``.

    Traced once with an example batch by ``torch.onnx.export(..., dynamo=True)``; the graph takes
    ``idx`` (int64, ``(B, T)``, any ``B`` and ``1 <= T <= block_size``) and returns ``logits``
    (float32, ``(B, T, V)``). The weights are stored inside the file. The model is copied to the
    CPU in evaluation mode first; ``gpt`` itself is not changed.
    """
    if not isinstance(gpt, GPT):
        raise TypeError(f"export_onnx: expected a fmbook GPT, got {type(gpt).__name__}")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"export_onnx: the file name must end in .onnx, got {path.name!r}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"export_onnx: folder {path.parent} does not exist")

    module = Logits(copy.deepcopy(gpt).cpu()).eval()
    block = gpt.config.block_size
    example = torch.zeros(2, min(2, block), dtype=torch.long)
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", min=1, max=block)
    with quiet(), torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            path,
            dynamo=True,
            external_data=False,  # one file: the graph and its weights
            input_names=["idx"],
            output_names=["logits"],
            dynamic_shapes={"idx": {0: batch, 1: length}},
            verbose=False,
        )
    return path


def session(path: str | Path, threads: int | None = None, optimized: str | Path | None = None):
    """An ONNX Runtime inference session for the file ``path`` on the CPU
    (``CPUExecutionProvider``), with every graph optimisation enabled.

    ``threads`` is its number of intra-op threads (default: PyTorch's, so that both use the
    same cores). ``optimized``, if given, is where the session writes the graph it runs after
    its basic and extended rewrites, to be read with ``onnx.load``.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"session: no ONNX file {path}")
    threads = torch.get_num_threads() if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"session: threads must be an int >= 1, got {threads!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized is not None:
        # a file written at the highest level may hold kernels for this machine only
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(sess, idx: torch.Tensor) -> torch.Tensor:
    """The logits ``(B, T, V)`` that the session ``sess`` computes for the ids ``idx``
    ``(B, T)``, as a CPU tensor."""
    if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or idx.shape[1] < 1:
        got = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"onnx_logits: expected ids (B, T) with T >= 1, got {got}")
    if idx.dtype != torch.long:
        raise TypeError(f"onnx_logits: ids must have dtype torch.long, got {idx.dtype}")
    (logits,) = sess.run(["logits"], {"idx": np.ascontiguousarray(idx.cpu().numpy())})
    return torch.from_numpy(logits)


def greedy(
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    idx: torch.Tensor,
    max_new_tokens: int,
    block_size: int,
) -> torch.Tensor:
    """Append ``max_new_tokens`` tokens to ``idx`` ``(B, T)``, each the most likely next token
    after the last ``block_size`` ones, ``logits_of`` giving the logits ``(B, T, V)``.

    Without a cache, as :meth:`fmbook.transformer.GPT.generate` with ``use_cache=False`` and
    ``top_k=1``: both give the same tokens when the logits are the same.
    """
    if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or idx.shape[1] < 1:
        raise ValueError("greedy: idx must be a (batch, time) tensor with at least one token")
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 0
    ):
        raise ValueError(f"greedy: max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"greedy: block_size must be an int >= 1, got {block_size!r}")
    for _ in range(max_new_tokens):
        logits = logits_of(idx[:, -block_size:])
        nxt = logits[:, -1].argmax(-1, keepdim=True).to(idx.device)
        idx = torch.cat([idx, nxt], dim=1)
    return idx
