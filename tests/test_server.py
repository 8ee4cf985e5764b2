import gc
import json
import logging
import socket
import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient

from fmbook import server
from fmbook.sampling import MAX_TEMPERATURE, MIN_TEMPERATURE
from fmbook.tokenizers import CharTokenizer
from fmbook.transformer import GPT, GPTConfig

TOKENIZER = CharTokenizer("\n !,.:?abcdefghijklmnopqrstuvwxyz")
BLOCK, LIMIT = 16, 40


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=TOKENIZER.vocab_size, block_size=BLOCK, n_layer=2, n_head=2, n_embd=16
    )
    return GPT(config).eval()


@pytest.fixture(scope="module")
def gpt():
    return tiny_gpt()


@pytest.fixture(scope="module")
def app(gpt):
    return server.make_app(gpt, TOKENIZER, max_new_tokens=LIMIT)


def expected_text(gpt, prompt, n, seed, temperature=1.0):
    idx = torch.tensor([TOKENIZER.encode(prompt)])
    out = gpt.generate(
        idx, n, temperature=temperature, generator=torch.Generator().manual_seed(seed)
    )
    return TOKENIZER.decode(out[0, idx.shape[1] :])


def post(client, raw, **headers):
    """POST ``raw`` (a JSON-able value, or the body's exact text) to /generate."""
    content = raw if isinstance(raw, str | bytes) else json.dumps(raw)
    return client.post("/generate", content=content, headers=headers)


# Every bad request, the status it gets and words its message must hold. The schema refuses with
# 422 and names the field; the tokenizer refuses with 400; a body over the limit gets 413.
BAD = [
    ('{"prompt": "to be", ', 422, "body: not valid JSON"),
    ("[1, 2]", 422, "body: Input should be a valid dictionary"),
    ({"max_new_tokens": 5}, 422, "prompt: Field required"),
    ({"prompt": "to be"}, 422, "max_new_tokens: Field required"),
    (
        {"prompt": "a", "max_new_tokens": 5, "top_k": 3},
        422,
        "top_k: Extra inputs are not permitted",
    ),
    ({"prompt": 7, "max_new_tokens": 5}, 422, "prompt: Input should be a valid string"),
    ({"prompt": "", "max_new_tokens": 5}, 422, "prompt: String should have at least 1 character"),
    (
        {"prompt": "a", "max_new_tokens": LIMIT + 1},
        422,
        f"max_new_tokens: Input should be less than or equal to {LIMIT}",
    ),
    (
        {"prompt": "a", "max_new_tokens": 0},
        422,
        "max_new_tokens: Input should be greater than or equal to 1",
    ),
    (
        {"prompt": "a", "max_new_tokens": "5"},
        422,
        "max_new_tokens: Input should be a valid integer",
    ),
    (
        {"prompt": "a", "max_new_tokens": 5.5},
        422,
        "max_new_tokens: Input should be a valid integer",
    ),
    (
        {"prompt": "a", "max_new_tokens": True},
        422,
        "max_new_tokens: Input should be a valid integer",
    ),
    (
        {"prompt": "a", "max_new_tokens": 5, "temperature": 0},
        422,
        "temperature: Input should be greater than or equal to 1.17549e-38",
    ),
    (
        {"prompt": "a", "max_new_tokens": 5, "temperature": "hot"},
        422,
        "temperature: Input should be a valid number",
    ),
    (
        {"prompt": "a", "max_new_tokens": 5, "seed": -1},
        422,
        "seed: Input should be greater than or equal to 0",
    ),
    (
        {"prompt": "a", "max_new_tokens": 5, "seed": server.MAX_SEED + 1},
        422,
        "seed: Input should be less than or equal to",
    ),
    # numbers that are valid JSON but too long or too large to convert or compare safely
    (
        '{"prompt": "a", "max_new_tokens": 1e400}',
        422,
        "max_new_tokens: Input should be a valid integer",
    ),
    (
        '{"prompt": "a", "max_new_tokens": 5, "temperature": 1e400}',
        422,
        "temperature: Input should be a finite number",
    ),
    (
        '{"prompt": "a", "max_new_tokens": 5, "temperature": -1e400}',
        422,
        "temperature: Input should be a finite number",
    ),
    (
        '{"prompt": "a", "max_new_tokens": 5, "temperature": NaN}',
        422,
        "temperature: Input should be a finite number",
    ),
    (
        '{"prompt": "a", "max_new_tokens": 5, "temperature": 1e-300}',
        422,
        "temperature: Input should be greater than or equal to",
    ),
    (
        '{"prompt": "a", "max_new_tokens": 5, "seed": ' + "9" * 100 + "}",
        422,
        "seed: Input should be less than or equal to",
    ),
    (
        '{"prompt": "a", "max_new_tokens": ' + "9" * 600 + "}",
        422,
        "max_new_tokens: Input should be",
    ),
    # a lone surrogate, escaped in valid JSON, is no Unicode text
    ('{"prompt": "\\ud800", "max_new_tokens": 5}', 422, "prompt: Input should be a valid string"),
    # JSON nested deeply, but not deeper than the parser goes
    ("[" * 500 + "]" * 500, 422, "body: Input should be a valid dictionary"),
    (
        '{"prompt": ' + "[" * 500 + "]" * 500 + ', "max_new_tokens": 5}',
        422,
        "prompt: Input should be a valid string",
    ),
    # what the tokenizer refuses
    (
        {"prompt": "a" * (BLOCK + 1), "max_new_tokens": 5},
        400,
        f"prompt: expected at most {BLOCK} tokens (the model reads no more), got {BLOCK + 1}",
    ),
    (
        {"prompt": "Tö be€", "max_new_tokens": 5},
        400,
        "3 characters not in the model's vocabulary: 'T', 'ö', '€'",
    ),
    (
        {"prompt": "".join(map(chr, range(200, 260))), "max_new_tokens": 5},
        400,
        "60 characters not in the model's vocabulary: 'È',",
    ),
    # more than the server reads
    ({"prompt": "a" * 5000, "max_new_tokens": 5}, 413, "Content Too Large"),
]


@pytest.mark.parametrize("body, status, words", BAD)
def test_each_bad_request_gets_its_status_and_a_message_that_names_the_field(
    app, body, status, words
):
    with TestClient(app) as client:
        reply = post(client, body, **{"content-type": "application/json"})
    assert reply.status_code == status, reply.text
    message = reply.text if status == 413 else server.error_message(reply.json())
    assert words in message, message


def test_every_bad_request_is_refused_before_the_reply_and_the_server_keeps_serving(gpt, app):
    with TestClient(app, raise_server_exceptions=True) as client:
        before = client.get("/health").json()
        for body, status, _ in BAD:
            assert post(client, body).status_code == status, body
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.json()["rejected"] - before["rejected"] == len(BAD)
        assert health.json()["answered"] == before["answered"]
        assert client.get("/generate").status_code == 405
        assert client.get("/nowhere").status_code == 404
        ok = post(client, {"prompt": "to be", "max_new_tokens": 3, "seed": 1})
        assert ok.status_code == 200 and ok.text == expected_text(gpt, "to be", 3, 1)


def test_a_body_over_the_limit_is_refused_whether_or_not_it_says_its_length(app):
    limit = server.max_body_bytes(BLOCK)
    body = json.dumps({"prompt": "a", "max_new_tokens": 5, "pad": " " * limit}).encode()

    def chunks():  # no Content-Length: the server counts the bytes as they come
        yield from (body[i : i + 100] for i in range(0, len(body), 100))

    with TestClient(app) as client:
        assert client.post("/generate", content=body).status_code == 413
        assert client.post("/generate", content=chunks()).status_code == 413


def test_json_nested_deeper_than_the_parser_goes_is_a_400(gpt):
    roomy = server.make_app(gpt, TOKENIZER, max_new_tokens=LIMIT, max_prompt=4000)
    with TestClient(roomy) as client:
        for raw in ("[" * 20000 + "]" * 20000, '{"prompt": ' + "[" * 20000 + "]" * 20000 + "}"):
            reply = post(client, raw, **{"content-type": "application/json"})
            assert reply.status_code == 400, reply.text
            assert "error parsing the body" in server.error_message(reply.json())
        assert client.get("/health").json()["rejected"] == 2


def test_whole_numbers_are_integers_as_in_json_schema(gpt, app):
    with TestClient(app) as client:
        reply = post(client, {"prompt": "to be", "max_new_tokens": 4.0, "seed": 3.0})
    assert reply.status_code == 200 and reply.text == expected_text(gpt, "to be", 4, 3)


def test_the_smallest_and_largest_temperatures_stream_to_the_end(app):
    """The schema's extremes: greedy, and uniform, with large logits that overflowed before."""
    with TestClient(app) as client:
        for temperature in (MIN_TEMPERATURE, 1e-30, 1e-3, 1e3, MAX_TEMPERATURE):
            body = {"prompt": "to be", "max_new_tokens": LIMIT, "temperature": temperature}
            reply = post(client, body)
            assert reply.status_code == 200 and len(reply.text) == LIMIT, temperature


def test_the_openapi_schema_declares_every_field_with_its_range(app):
    with TestClient(app) as client:
        spec = client.get("/openapi.json").json()
    fields = spec["components"]["schemas"]["GenerateRequest"]
    assert fields["additionalProperties"] is False
    assert fields["required"] == ["prompt", "max_new_tokens"]
    props = fields["properties"]
    assert props["prompt"]["minLength"] == 1
    assert (props["max_new_tokens"]["minimum"], props["max_new_tokens"]["maximum"]) == (1, LIMIT)
    assert props["temperature"]["minimum"] == MIN_TEMPERATURE
    assert props["temperature"]["maximum"] == MAX_TEMPERATURE
    assert props["seed"]["anyOf"][0]["maximum"] == server.MAX_SEED
    declared = spec["paths"]["/generate"]["post"]["responses"]
    assert set(declared) == {"200", "400", "413", "422"}


def test_the_streamed_text_is_what_generate_gives_for_the_seed_past_the_block(gpt, app):
    n = LIMIT  # more than a block: the cache starts again on the way
    with TestClient(app) as client:
        reply = client.post(
            "/generate",
            json={"prompt": "to be", "max_new_tokens": n, "temperature": 0.8, "seed": 7},
        )
    assert reply.headers["content-type"].startswith("text/plain")
    assert reply.headers["x-seed"] == "7"
    assert reply.text == expected_text(gpt, "to be", n, 7, temperature=0.8)


def test_without_a_seed_the_server_draws_one_and_says_which(gpt, app):
    with TestClient(app) as client:
        reply = client.post("/generate", json={"prompt": "or not", "max_new_tokens": 12})
    seed = int(reply.headers["x-seed"])
    assert reply.text == expected_text(gpt, "or not", 12, seed)


def test_stream_tokens_yields_generates_tokens_one_at_a_time_and_checks_inputs(gpt):
    idx = torch.tensor([TOKENIZER.encode("what")])
    tokens = server.stream_tokens(gpt, idx, 2 * BLOCK, generator=torch.Generator().manual_seed(3))
    first = next(tokens)
    assert isinstance(first, int)
    want = gpt.generate(idx, 2 * BLOCK, generator=torch.Generator().manual_seed(3))
    assert [first, *tokens] == want[0, idx.shape[1] :].tolist()
    with pytest.raises(ValueError, match=r"\(1, T\)"):
        next(server.stream_tokens(gpt, idx.repeat(2, 1), 1))
    with pytest.raises(TypeError, match="GPT"):
        next(server.stream_tokens(torch.nn.Linear(2, 2), idx, 1))
    gpt.train()
    try:
        with pytest.raises(ValueError, match="training mode"):
            next(server.stream_tokens(gpt, idx, 1))
    finally:
        gpt.eval()


def test_make_app_checks_its_arguments(gpt):
    with pytest.raises(TypeError, match="GPT"):
        server.make_app(torch.nn.Linear(2, 2), TOKENIZER)
    with pytest.raises(ValueError, match="CharTokenizer"):
        server.make_app(gpt, CharTokenizer("abc" + "".join(map(chr, range(200, 260)))))
    with pytest.raises(ValueError, match="max_new_tokens"):
        server.make_app(gpt, TOKENIZER, max_new_tokens=0)


def server_threads():
    return [t for t in threading.enumerate() if t.name.startswith("fmbook-")]


def test_the_server_listens_on_localhost_streams_and_closes_its_port(gpt, app):
    with server.BackgroundServer(app) as running:
        port = running.port
        assert running.url == f"http://127.0.0.1:{port}" and port > 0
        assert running.address == ("127.0.0.1", port)  # the loopback interface only
        assert server.port_is_open(port) and running.running
        with server.local_client() as client:
            assert client.get(f"{running.url}/health").json()["status"] == "ok"
        body = {"prompt": "to be", "max_new_tokens": 20, "seed": 5}
        with server.local_client() as client:
            timing = server.timed_request(client, running.url, body)
    assert timing.status == 200 and timing.text == expected_text(gpt, "to be", 20, 5)
    assert 0 < timing.time_to_first_token <= timing.latency
    assert not server.port_is_open(port)
    assert not running.running and "stopped" in repr(running)
    assert not server_threads()
    running.stop()  # stopping twice does nothing
    with pytest.raises(RuntimeError, match="stopped"):
        running.start()


def test_the_server_stops_when_the_with_block_raises(app):
    with pytest.raises(RuntimeError, match="the cell failed"):
        with server.BackgroundServer(app) as running:
            port = running.port
            assert server.port_is_open(port)
            raise RuntimeError("the cell failed")
    assert not server.port_is_open(port)
    assert not server_threads()


def test_a_forgotten_server_stops_when_it_is_collected(app):
    running = server.BackgroundServer(app).start()
    port = running.port
    assert server.port_is_open(port)
    del running
    gc.collect()
    assert not server.port_is_open(port)
    assert not server_threads()


def test_load_test_sends_every_request_and_times_each(gpt, app):
    bodies = [{"prompt": "to", "max_new_tokens": 8, "seed": s} for s in range(6)]
    with server.BackgroundServer(app) as running:
        timings, seconds = server.load_test(running.url, bodies, concurrency=3)
    assert [t.text for t in timings] == [expected_text(gpt, "to", 8, s) for s in range(6)]
    assert all(t.status == 200 and t.sent <= t.first <= t.done for t in timings)
    assert 0 < max(t.latency for t in timings) <= seconds
    assert not server_threads()
    with pytest.raises(ValueError, match="concurrency"):
        server.load_test("http://127.0.0.1:1", bodies, concurrency=0)


def test_bad_ports_are_refused():
    with pytest.raises(ValueError, match="port"):
        server.port_is_open(0)
    with pytest.raises(ValueError, match="port"):
        server.BackgroundServer(None, port=70000)


class Records(logging.Handler):
    """Every log record, from every logger (uvicorn's, Starlette's, asyncio's)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def log():
    records, root = Records(), logging.getLogger()
    level = root.level
    root.addHandler(records)
    root.setLevel(logging.DEBUG)
    yield records.records
    root.removeHandler(records)
    root.setLevel(level)


def raw_request(port: int, body: bytes, length: int | None = None) -> socket.socket:
    """Open a connection and send a POST /generate whose Content-Length is ``length``."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        "POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def tokens_generated(url: str) -> int:
    with server.local_client() as client:
        return client.get(f"{url}/health").json()["tokens"]


def settled_tokens(url: str, quiet: float = 0.3, timeout: float = 10.0) -> int:
    """The token count once it has not moved for ``quiet`` seconds."""
    deadline, last = time.perf_counter() + timeout, tokens_generated(url)
    while time.perf_counter() < deadline:
        time.sleep(quiet)
        now = tokens_generated(url)
        if now == last:
            return now
        last = now
    raise AssertionError(f"tokens still being generated after {timeout} s")


def test_clients_that_hang_up_leave_no_traceback_and_stop_their_generation(gpt, log):
    many = 100_000  # far more tokens than a test waits for
    app = server.make_app(gpt, TOKENIZER, max_new_tokens=many)
    with server.BackgroundServer(app) as running:
        # 1. hangs up before its body is complete
        sock = raw_request(running.port, b'{"prompt": "to', length=200)
        time.sleep(0.1)
        sock.close()
        # 2. hangs up once the reply has started
        body = json.dumps({"prompt": "to be", "max_new_tokens": many, "seed": 1}).encode()
        sock = raw_request(running.port, body)
        assert sock.recv(64).startswith(b"HTTP/1.1 200")
        sock.close()
        # 3. an httpx client that stops reading after a few pieces
        with server.local_client() as client:
            with client.stream("POST", f"{running.url}/generate", json=json.loads(body)) as reply:
                for i, _ in enumerate(reply.iter_text()):
                    if i == 5:
                        break
        generated = settled_tokens(running.url)
        assert generated < 1000  # both stopped within a few steps of their client leaving
        # the server still answers, with the text generate gives for the seed
        with server.local_client() as client:
            timing = server.timed_request(
                client, running.url, {"prompt": "to be", "max_new_tokens": 30, "seed": 4}
            )
        assert timing.status == 200 and timing.text == expected_text(gpt, "to be", 30, 4)
    assert not server.port_is_open(running.port) and not server_threads()
    problems = [r for r in log if r.exc_info or r.levelno >= logging.ERROR]
    assert not problems, [r.getMessage() for r in problems]
