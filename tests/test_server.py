import gc
import json
import threading

import pytest
import torch
from fastapi.testclient import TestClient

from fmbook import server
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


def parse(body):
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return server.parse_request(raw, TOKENIZER, max_prompt=BLOCK, max_new_tokens=LIMIT)


# Every bad request, the status it gets and words its message must hold.
BAD = [
    ('{"prompt": "to be", ', 400, "not valid JSON"),
    ("[1, 2]", 422, "JSON object, got [1, 2] (list)"),
    ({"max_new_tokens": 5}, 422, "prompt: required"),
    ({"prompt": "to be"}, 422, "max_new_tokens: required"),
    ({"prompt": "a", "max_new_tokens": 5, "top_k": 3}, 422, "unknown fields ['top_k']"),
    ({"prompt": 7, "max_new_tokens": 5}, 422, "prompt: expected a string, got 7 (int)"),
    ({"prompt": "", "max_new_tokens": 5}, 422, "got an empty string"),
    ({"prompt": "a" * (BLOCK + 1), "max_new_tokens": 5}, 422, f"got {BLOCK + 1}"),
    ({"prompt": "Tö be€", "max_new_tokens": 5}, 422, "['T', 'ö', '€']"),
    ({"prompt": "a", "max_new_tokens": LIMIT + 1}, 422, f"from 1 to {LIMIT}, got {LIMIT + 1}"),
    ({"prompt": "a", "max_new_tokens": 0}, 422, "got 0 (int)"),
    ({"prompt": "a", "max_new_tokens": "5"}, 422, 'got "5" (str)'),
    ({"prompt": "a", "max_new_tokens": 5.0}, 422, "got 5.0 (float)"),
    ({"prompt": "a", "max_new_tokens": True}, 422, "got true (bool)"),
    ({"prompt": "a", "max_new_tokens": 5, "temperature": 0}, 422, "temperature: expected"),
    ({"prompt": "a", "max_new_tokens": 5, "temperature": "hot"}, 422, "temperature"),
    ({"prompt": "a", "max_new_tokens": 5, "seed": -1}, 422, "seed: expected"),
    ({"prompt": "a", "max_new_tokens": 5, "seed": 2**63}, 422, "seed: expected"),
]


@pytest.mark.parametrize("body, status, words", BAD)
def test_parse_request_refuses_each_bad_request_saying_what_was_expected(body, status, words):
    with pytest.raises(server.BadRequest) as err:
        parse(body)
    assert err.value.status == status
    assert words in err.value.message


def test_parse_request_accepts_a_good_request_with_defaults():
    req = parse({"prompt": "to be", "max_new_tokens": LIMIT})
    assert req == server.GenerateRequest("to be", TOKENIZER.encode("to be"), LIMIT, 1.0, None)
    req = parse({"prompt": "a", "max_new_tokens": 1, "temperature": 2, "seed": 0})
    assert (req.temperature, req.seed) == (2.0, 0)
    assert parse(b'{"prompt": "a", "max_new_tokens": 1, "seed": null}').seed is None


def test_every_bad_request_gets_its_status_and_a_json_message_and_the_server_keeps_serving(app):
    with TestClient(app) as client:
        before = client.get("/health").json()
        for body, status, words in BAD:
            raw = body if isinstance(body, str) else json.dumps(body)
            reply = client.post("/generate", content=raw)
            assert reply.status_code == status, body
            assert words in reply.json()["error"]
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.json()["rejected"] - before["rejected"] == len(BAD)
        assert client.get("/generate").status_code == 405
        assert client.get("/nowhere").status_code == 404
        ok = client.post("/generate", json={"prompt": "to be", "max_new_tokens": 3, "seed": 1})
        assert ok.status_code == 200 and len(ok.text) == 3


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
