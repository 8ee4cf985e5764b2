r"""A streaming HTTP server for the book's GPT, and a client that measures it.

:func:`make_app` builds an ASGI application with FastAPI (https://fastapi.tiangolo.com) that
answers two routes:

* ``GET /health``: ``{"status": "ok", ...}`` with the model's sizes, the limits and how many
  requests were answered and rejected;
* ``POST /generate`` with a JSON object ``{"prompt": str, "max_new_tokens": int,
  "temperature": float (default 1), "seed": int (optional)}``: the generated characters,
  streamed as plain text (``text/plain``, one chunk per token) as they are sampled. The seed
  that was used comes back in the ``X-Seed`` header; the same seed gives the same text.

A request is checked completely before the reply starts (:func:`parse_request`), since once the
status line ``200`` is sent it cannot change: malformed JSON gets ``400``, every other mistake
(a missing or unknown field, a wrong type, an empty prompt, characters outside the tokenizer's
vocabulary, a prompt longer than the model reads, too many tokens) ``422``, with a JSON body
``{"error": "..."}`` that names the field, what was expected and what was given.

:class:`BackgroundServer` runs an application with uvicorn (https://www.uvicorn.org) on
127.0.0.1 in a background thread, on a free port, and always stops it again: on :meth:`stop`,
at the end of a ``with`` block (also when the block raises), when the object is collected and
when the interpreter exits (``weakref.finalize``). :func:`timed_request` and :func:`load_test`
measure the time to the first token and to the last, for one request or many at once, with an
httpx client that ignores proxy settings (:func:`local_client`).

Each request generates in its own thread, one token per step, with its own key/value cache
(:func:`stream_tokens`): concurrent requests share the cores but are not batched into one
forward pass.
"""

from __future__ import annotations

import json
import math
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from fmbook.tokenizers import CharTokenizer
from fmbook.transformer import GPT

__all__ = [
    "BadRequest",
    "GenerateRequest",
    "parse_request",
    "stream_tokens",
    "make_app",
    "BackgroundServer",
    "port_is_open",
    "local_client",
    "Timing",
    "timed_request",
    "load_test",
]

HOST = "127.0.0.1"  # the loopback address: reachable from this machine only
FIELDS = ("prompt", "max_new_tokens", "temperature", "seed")
MAX_SEED = 2**63 - 1


class BadRequest(Exception):
    """A request the server refuses: the HTTP ``status`` and a ``message`` for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class GenerateRequest:
    """A checked request: the prompt and its token ids, and how to sample."""

    prompt: str
    ids: list[int]
    max_new_tokens: int
    temperature: float
    seed: int | None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(value) -> str:
    text = json.dumps(value)
    return f"{text if len(text) <= 40 else text[:37] + '...'} ({type(value).__name__})"


def parse_request(
    body: bytes | str, tokenizer: CharTokenizer, *, max_prompt: int, max_new_tokens: int
) -> GenerateRequest:
    """The request in the JSON ``body``, checked; :class:`BadRequest` (400 or 422) otherwise.

    ``max_prompt`` is the most characters a prompt may have, ``max_new_tokens`` the most tokens
    a request may ask for.
    """
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadRequest(
            400,
            f'the body must be a JSON object such as {{"prompt": "ROMEO:", '
            f'"max_new_tokens": 40}}; it is not valid JSON ({err})',
        ) from None
    if not isinstance(data, dict):
        raise BadRequest(422, f"the body must be a JSON object, got {_describe(data)}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise BadRequest(422, f"unknown fields {unknown}; expected only {list(FIELDS)}")
    for field in ("prompt", "max_new_tokens"):
        if field not in data:
            raise BadRequest(422, f"{field}: required, but the body has no {field!r}")
    prompt, n, temperature = data["prompt"], data["max_new_tokens"], data.get("temperature", 1.0)
    seed = data.get("seed")
    if not isinstance(prompt, str):
        raise BadRequest(422, f"prompt: expected a string, got {_describe(prompt)}")
    if not prompt:
        raise BadRequest(422, "prompt: expected at least one character, got an empty string")
    if len(prompt) > max_prompt:
        raise BadRequest(
            422,
            f"prompt: expected at most {max_prompt} characters (the model reads no more), "
            f"got {len(prompt)}",
        )
    unseen = sorted({c for c in prompt if c not in tokenizer.stoi})
    if unseen:
        raise BadRequest(
            422,
            f"prompt: characters not in the model's vocabulary: {unseen} (it knows "
            f"{tokenizer.vocab_size} characters)",
        )
    if not _is_int(n) or not 1 <= n <= max_new_tokens:
        raise BadRequest(
            422,
            f"max_new_tokens: expected an integer from 1 to {max_new_tokens}, got {_describe(n)}",
        )
    if (
        not isinstance(temperature, (int, float))
        or isinstance(temperature, bool)
        or not (math.isfinite(temperature) and temperature > 0)
    ):
        raise BadRequest(
            422, f"temperature: expected a finite number > 0, got {_describe(temperature)}"
        )
    if seed is not None and (not _is_int(seed) or not 0 <= seed <= MAX_SEED):
        raise BadRequest(
            422, f"seed: expected an integer from 0 to 2**63 - 1 or null, got {_describe(seed)}"
        )
    return GenerateRequest(prompt, tokenizer.encode(prompt), n, float(temperature), seed)


@torch.no_grad()
def stream_tokens(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Iterator[int]:
    r"""Yield ``max_new_tokens`` token ids after the context ``idx`` ``(1, T)``, one at a time as
    each is sampled from :math:`\mathrm{softmax}(z / \tau)`.

    :meth:`fmbook.transformer.GPT.stream` for a single sequence, as plain ints: the tokens of
    :meth:`~fmbook.transformer.GPT.generate` with its key/value cache for the same ``generator``;
    the model must be in evaluation mode.
    """
    if not isinstance(model, GPT):
        raise TypeError(f"stream_tokens: expected a fmbook GPT, got {type(model).__name__}")
    if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or idx.shape[0] != 1:
        got = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"stream_tokens: expected ids of shape (1, T), got {got}")
    for token in model.stream(idx, max_new_tokens, temperature, generator=generator):
        yield int(token)


def make_app(
    model: GPT,
    tokenizer: CharTokenizer,
    *,
    max_new_tokens: int = 256,
    max_prompt: int | None = None,
):
    """The FastAPI application that serves ``model``: ``GET /health`` and ``POST /generate``.

    A prompt may have up to ``max_prompt`` characters (default: the model's block) and ask for
    up to ``max_new_tokens`` tokens. The model is put in evaluation mode.
    """
    if not isinstance(model, GPT):
        raise TypeError(f"make_app: expected a fmbook GPT, got {type(model).__name__}")
    if not isinstance(tokenizer, CharTokenizer) or tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(
            f"make_app: expected a CharTokenizer of at most {model.config.vocab_size} characters, "
            f"got {tokenizer!r}"
        )
    max_prompt = model.config.block_size if max_prompt is None else max_prompt
    for name, value in (("max_new_tokens", max_new_tokens), ("max_prompt", max_prompt)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"make_app: {name} must be an int >= 1, got {value!r}")
    model.eval()
    device = next(model.parameters()).device
    counts = {"answered": 0, "rejected": 0}
    app = FastAPI(title="fmbook GPT")

    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "block_size": model.config.block_size,
            "vocab_size": tokenizer.vocab_size,
            "max_prompt": max_prompt,
            "max_new_tokens": max_new_tokens,
            **counts,
        }

    @app.post("/generate")
    async def generate(request: Request):
        try:
            req = parse_request(
                await request.body(),
                tokenizer,
                max_prompt=max_prompt,
                max_new_tokens=max_new_tokens,
            )
        except BadRequest as err:
            counts["rejected"] += 1
            return JSONResponse({"error": err.message}, status_code=err.status)
        counts["answered"] += 1
        seed = secrets.randbits(63) if req.seed is None else req.seed
        generator = torch.Generator().manual_seed(seed)
        idx = torch.tensor([req.ids], dtype=torch.long, device=device)
        tokens = stream_tokens(model, idx, req.max_new_tokens, req.temperature, generator)
        # a plain iterator: Starlette runs each step in a worker thread, off the event loop
        chunks = (tokenizer.decode([token]) for token in tokens)
        return StreamingResponse(
            chunks, media_type="text/plain; charset=utf-8", headers={"X-Seed": str(seed)}
        )

    return app


def port_is_open(port: int, host: str = HOST, timeout: float = 1.0) -> bool:
    """True when something accepts connections on ``host:port``."""
    if not _is_int(port) or not 0 < port < 65536:
        raise ValueError(f"port_is_open: port must be an int in 1..65535, got {port!r}")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _shutdown(server, thread: threading.Thread, sock: socket.socket, timeout: float) -> None:
    """Ask uvicorn to exit, wait for its thread, force it if it does not end, close the socket."""
    server.should_exit = True
    if thread.is_alive():
        thread.join(timeout)
    if thread.is_alive():
        server.force_exit = True  # stop waiting for open connections
        thread.join(timeout)
    sock.close()


class BackgroundServer:
    """Serve the ASGI ``app`` with uvicorn on 127.0.0.1 in a background thread.

    ``port=0`` (the default) lets the operating system choose a free port; :attr:`port` and
    :attr:`url` say which. Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    The server stops in every case: at :meth:`stop`, at the end of a ``with`` block even when
    the block raises, when the object is garbage-collected and when the interpreter exits.
    """

    def __init__(self, app, port: int = 0, timeout: float = 10.0):
        import uvicorn

        if not _is_int(port) or not 0 <= port < 65536:
            raise ValueError(f"BackgroundServer: port must be an int in 0..65535, got {port!r}")
        self.timeout = timeout
        # IPPROTO_TCP named explicitly: asyncio then turns off Nagle's algorithm (TCP_NODELAY) on
        # every connection, which would otherwise hold back each small piece of a stream until
        # the client acknowledges the previous one (typically 40 ms later on Linux)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            self._socket.bind((HOST, port))
        except OSError:
            self._socket.close()
            raise
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            app, log_config=None, log_level="warning", access_log=False, timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"fmbook-server-{self.port}",
            daemon=True,
        )
        # holds no reference to self, so that collecting self can run it
        self._finalizer = weakref.finalize(
            self, _shutdown, self._server, self._thread, self._socket, timeout
        )

    @property
    def address(self) -> tuple[str, int]:
        """The host and port the server's socket is bound to."""
        return self._socket.getsockname()[:2]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self._server.started

    def start(self) -> BackgroundServer:
        """Start serving; return once the server accepts connections."""
        if not self._finalizer.alive:
            raise RuntimeError("BackgroundServer: this server was stopped; make a new one")
        if self._thread.is_alive():
            return self
        self._thread.start()
        deadline = time.perf_counter() + self.timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.perf_counter() > deadline:
                self.stop()
                raise RuntimeError(f"BackgroundServer: uvicorn did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and close the port (again: nothing happens)."""
        self._finalizer()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"BackgroundServer({self.url}, {state})"


def local_client(timeout: float = 120.0, **kwargs):
    """An ``httpx.Client`` for a server on this machine: it ignores the proxies that the
    environment may name (``HTTP_PROXY``), which would not reach 127.0.0.1."""
    import httpx

    return httpx.Client(timeout=timeout, trust_env=False, **kwargs)


@dataclass(frozen=True)
class Timing:
    """One streamed request: its status, the text received and three clock readings
    (``time.perf_counter``): sent, first character received, last character received."""

    status: int
    text: str
    sent: float
    first: float
    done: float

    @property
    def time_to_first_token(self) -> float:
        return self.first - self.sent

    @property
    def latency(self) -> float:
        return self.done - self.sent


def timed_request(client, url: str, body: dict) -> Timing:
    """POST ``body`` to ``url``'s ``/generate`` with the ``httpx.Client`` ``client`` (see
    :func:`local_client`) and read the reply as it streams in."""
    parts: list[str] = []
    first = math.nan
    sent = time.perf_counter()
    with client.stream("POST", f"{url}/generate", json=body) as reply:
        for chunk in reply.iter_text():
            if chunk and not parts:
                first = time.perf_counter()
            if chunk:
                parts.append(chunk)
    return Timing(reply.status_code, "".join(parts), sent, first, time.perf_counter())


def load_test(
    url: str, bodies: list[dict], concurrency: int, timeout: float = 120.0
) -> tuple[list[Timing], float]:
    """Send every request of ``bodies`` to ``url``, at most ``concurrency`` at a time (one
    thread each); return the :class:`Timing` of each, in order, and the seconds it all took."""
    if not _is_int(concurrency) or concurrency < 1:
        raise ValueError(f"load_test: concurrency must be an int >= 1, got {concurrency!r}")
    if not bodies:
        raise ValueError("load_test: no requests to send")
    with (
        local_client(timeout) as client,
        ThreadPoolExecutor(concurrency, thread_name_prefix="fmbook-client") as pool,
    ):
        start = time.perf_counter()
        timings = list(pool.map(lambda body: timed_request(client, url, body), bodies))
        seconds = time.perf_counter() - start
    return timings, seconds
