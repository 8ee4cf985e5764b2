r"""A streaming HTTP server for the book's GPT, and a client that measures it.

:func:`make_app` builds an ASGI application with FastAPI (https://fastapi.tiangolo.com) that
answers two routes:

* ``GET /health``: ``{"status": "ok", ...}`` with the model's sizes, the limits, how many
  requests were answered and refused, and how many tokens were generated;
* ``POST /generate`` with a JSON object ``{"prompt": str, "max_new_tokens": int,
  "temperature": float (default 1), "seed": int or null (optional)}``: the generated characters,
  streamed as plain text (``text/plain``, one chunk per token) as they are sampled. The seed
  that was used comes back in the ``X-Seed`` header; the same seed gives the same text.

A request is checked completely before the reply starts, since once the status line ``200`` is
sent it cannot change. The body is validated against a schema (:func:`request_model`, a pydantic
model with a type and a range for every field, which FastAPI also publishes as OpenAPI at
``/openapi.json``): a body that is not JSON, not an object, a missing, unknown, mistyped or
out-of-range field gets ``422`` with ``{"detail": [{"loc": [...], "msg": "<field>: ...",
"type": ...}]}``. The tokenizer then reads the prompt (:func:`check_prompt`): characters outside
its vocabulary, or more tokens than the model reads, get ``400`` with ``{"detail": "prompt:
..."}``. A body larger than :func:`max_body_bytes` gets ``413``. Every request the schema and the
tokenizer accept can be sampled (:mod:`fmbook.sampling` accepts every temperature in the
schema's range), so a stream that starts also finishes.

Each request generates in its own worker thread, one token per step, with its own key/value
cache (:func:`stream_tokens`): concurrent requests share the cores but are not batched into one
forward pass. When a client hangs up, its generation stops after the step under way.

:class:`BackgroundServer` runs an application with uvicorn (https://www.uvicorn.org) on
127.0.0.1 in a background thread, on a free port, and always stops it again: on :meth:`stop`,
at the end of a ``with`` block (also when the block raises), when the object is collected and
when the interpreter exits (``weakref.finalize``). :func:`timed_request` and :func:`load_test`
measure the time to the first token and to the last, for one request or many at once, with an
httpx client that ignores proxy settings (:func:`local_client`).
"""

import math
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from fmbook.sampling import MAX_TEMPERATURE, MIN_TEMPERATURE
from fmbook.tokenizers import CharTokenizer
from fmbook.transformer import GPT

__all__ = [
    "MAX_SEED",
    "request_model",
    "check_prompt",
    "max_body_bytes",
    "error_message",
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
# the largest integer that every JSON client reads exactly (JavaScript's Number.MAX_SAFE_INTEGER):
# a seed sent back to the server must be the one it sent
MAX_SEED = 2**53 - 1


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _whole_number(value):
    """A float with no fractional part as an int: JSON Schema counts ``10.0`` as an integer."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def request_model(max_new_tokens: int) -> type[BaseModel]:
    """The schema of a ``POST /generate`` body, for a server that generates up to
    ``max_new_tokens`` tokens a request: a pydantic model, strict (no ``"5"`` for 5, no ``true``
    for 1; ``5.0`` is 5, as in JSON Schema) and closed (no unknown fields)."""
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise ValueError(
            f"request_model: max_new_tokens must be an int >= 1, got {max_new_tokens!r}"
        )
    limit = max_new_tokens  # the class body's own field max_new_tokens hides the argument

    class GenerateRequest(BaseModel):
        """A request for a continuation of ``prompt``."""

        model_config = ConfigDict(extra="forbid", strict=True)

        prompt: str = Field(min_length=1, description="the text to continue")
        max_new_tokens: Annotated[int, Field(ge=1, le=limit), BeforeValidator(_whole_number)] = (
            Field(description="how many tokens to generate")
        )
        temperature: float = Field(
            1.0,
            ge=MIN_TEMPERATURE,
            le=MAX_TEMPERATURE,
            allow_inf_nan=False,
            description="divides the logits before the softmax: < 1 sharper, > 1 flatter",
        )
        seed: Annotated[int, Field(ge=0, le=MAX_SEED), BeforeValidator(_whole_number)] | None = (
            Field(None, description="the sampler's seed; null: the server draws one")
        )

    return GenerateRequest


def check_prompt(prompt: str, tokenizer: CharTokenizer, max_prompt: int) -> list[int]:
    """The token ids of ``prompt``, or ``HTTPException(400)`` when the tokenizer cannot read it
    (characters outside its vocabulary) or it is longer than ``max_prompt`` tokens."""
    unseen = sorted({c for c in prompt if c not in tokenizer.stoi})
    if unseen:
        shown = ", ".join(map(repr, unseen[:10])) + (", ..." if len(unseen) > 10 else "")
        raise HTTPException(
            400,
            f"prompt: {len(unseen)} character{'s' * (len(unseen) > 1)} not in the model's "
            f"vocabulary: {shown} (it knows "
            f"{tokenizer.vocab_size} characters)",
        )
    ids = tokenizer.encode(prompt)
    if len(ids) > max_prompt:
        raise HTTPException(
            400,
            f"prompt: expected at most {max_prompt} tokens (the model reads no more), "
            f"got {len(ids)}",
        )
    return ids


def max_body_bytes(max_prompt: int) -> int:
    """The largest body a server for prompts of ``max_prompt`` characters reads: room for the
    longest prompt with every character escaped in JSON (12 bytes, ``\\ud83d\\ude00``), and 1 KiB
    for the rest."""
    return 1024 + 12 * max_prompt


class Refusal(BaseModel):
    """The body of a 400 reply."""

    detail: str


class Health(BaseModel):
    """The body of ``GET /health``."""

    status: str
    block_size: int
    vocab_size: int
    max_prompt: int
    max_new_tokens: int
    answered: int
    rejected: int
    tokens: int


_BOUNDS = {
    "greater_than_equal": ("ge", "greater than or equal to"),
    "less_than_equal": ("le", "less than or equal to"),
    "greater_than": ("gt", "greater than"),
    "less_than": ("lt", "less than"),
}


def _describe(error: dict) -> dict:
    """One error of a :class:`RequestValidationError`, with the field named in its message and
    without the input it was given (which may be huge, or not JSON: ``1e400`` is ``inf``)."""
    loc = list(error.get("loc", ()))
    field = ".".join(str(part) for part in (loc[1:] if loc[:1] == ["body"] else loc)) or "body"
    msg = error.get("msg", "invalid")
    ctx, kind = error.get("ctx") or {}, str(error.get("type", "invalid"))
    if kind == "json_invalid" and isinstance(ctx.get("error"), str):
        field, msg = "body", f"not valid JSON: {ctx['error']} (at character {loc[-1]})"
    elif kind in _BOUNDS and isinstance(ctx.get(_BOUNDS[kind][0]), int | float):
        limit = ctx[_BOUNDS[kind][0]]  # pydantic writes 1.2e-38 as 0.0000...; we write 1.2e-38
        msg = f"Input should be {_BOUNDS[kind][1]} {limit:.6g}" if isinstance(limit, float) else msg
    return {
        "loc": [p if isinstance(p, int | str) else str(p) for p in loc],
        "msg": f"{field}: {msg}",
        "type": kind,
    }


def error_message(reply: dict) -> str:
    """The message of a 4xx reply's JSON body, as one line: the 400 reply's ``detail`` string, or
    the 422 reply's messages joined by ``"; "``."""
    detail = reply.get("detail") if isinstance(reply, dict) else None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        return "; ".join(str(item.get("msg", item)) for item in detail)
    return str(reply)


def stream_tokens(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Iterator[int]:
    r"""The ``max_new_tokens`` token ids after the context ``idx`` ``(1, T)``, as plain ints, each
    yielded as soon as it is sampled from :math:`\mathrm{softmax}(z / \tau)`.

    :meth:`fmbook.transformer.GPT.stream` for a single sequence: the tokens of
    :meth:`~fmbook.transformer.GPT.generate` with its key/value cache for the same ``generator``.
    Everything is checked here, when it is called, before the first token; the model must be in
    evaluation mode.
    """
    if not isinstance(model, GPT):
        raise TypeError(f"stream_tokens: expected a fmbook GPT, got {type(model).__name__}")
    if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or idx.shape[0] != 1:
        got = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"stream_tokens: expected ids of shape (1, T), got {got}")
    steps = model.stream(idx, max_new_tokens, temperature, generator=generator)
    return (int(token) for token in steps)


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
    if not isinstance(tokenizer, CharTokenizer) or tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(
            f"make_app: expected a CharTokenizer of the model's {model.config.vocab_size} "
            f"characters (every token the model samples must decode), got {tokenizer!r}"
        )
    max_prompt = model.config.block_size if max_prompt is None else max_prompt
    for name, value in (("max_new_tokens", max_new_tokens), ("max_prompt", max_prompt)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"make_app: {name} must be an int >= 1, got {value!r}")
    model.eval()
    device = next(model.parameters()).device
    counts = {"answered": 0, "rejected": 0, "tokens": 0}
    lock = threading.Lock()  # tokens are counted in the worker threads
    GenerateRequest = request_model(max_new_tokens)
    # strict_content_type=False: a JSON body sent without a Content-Type header is read as JSON
    app = FastAPI(
        title="fmbook GPT", max_body_size=max_body_bytes(max_prompt), strict_content_type=False
    )

    @app.exception_handler(RequestValidationError)
    async def refuse_invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        counts["rejected"] += 1
        return JSONResponse({"detail": [_describe(e) for e in err.errors()]}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def refuse(request: Request, err: StarletteHTTPException):
        counts["rejected"] += 400 <= err.status_code < 500
        return await http_exception_handler(request, err)

    @app.get("/health", response_model=Health)
    def health() -> dict:
        return {
            "status": "ok",
            "block_size": model.config.block_size,
            "vocab_size": tokenizer.vocab_size,
            "max_prompt": max_prompt,
            "max_new_tokens": max_new_tokens,
            **counts,
        }

    def generated(tokens: Iterator[int]) -> Iterator[str]:
        # a plain iterator: Starlette runs each step in a worker thread, off the event loop, and
        # stops asking for steps when the client hangs up
        for token in tokens:
            with lock:
                counts["tokens"] += 1
            yield tokenizer.decode([token])

    @app.post(
        "/generate",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "the generated characters, streamed as they are sampled",
                "content": {"text/plain": {"schema": {"type": "string"}}},
                "headers": {
                    "X-Seed": {"description": "the seed used", "schema": {"type": "string"}}
                },
            },
            400: {"model": Refusal, "description": "the tokenizer cannot read the prompt"},
            413: {
                "description": "the body is too large",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
        },
    )
    async def generate(body: GenerateRequest) -> StreamingResponse:  # type: ignore[valid-type]
        ids = check_prompt(body.prompt, tokenizer, max_prompt)
        seed = secrets.randbelow(MAX_SEED + 1) if body.seed is None else body.seed
        generator = torch.Generator().manual_seed(seed)
        idx = torch.tensor([ids], dtype=torch.long, device=device)
        tokens = stream_tokens(model, idx, body.max_new_tokens, body.temperature, generator)
        counts["answered"] += 1
        return StreamingResponse(
            generated(tokens), media_type="text/plain; charset=utf-8", headers={"X-Seed": str(seed)}
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

    def start(self) -> "BackgroundServer":
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

    def __enter__(self) -> "BackgroundServer":
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
