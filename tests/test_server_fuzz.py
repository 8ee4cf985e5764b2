"""The server against Schemathesis: requests generated from the OpenAPI schema it publishes.

Positive cases (bodies the schema accepts) and negative ones (bodies it refuses), sent in-process
through the ASGI interface. Every reply must be a status the schema declares, with a body and
headers that fit it and no 5xx; a valid body is refused only by the tokenizer (400, for a prompt it
cannot read), and every stream that starts delivers all the tokens it was asked for.
"""

import schemathesis
import torch
from hypothesis import HealthCheck, settings
from schemathesis.generation import GenerationMode

from fmbook import server
from fmbook.tokenizers import CharTokenizer
from fmbook.transformer import GPT, GPTConfig

TOKENIZER = CharTokenizer("\n !,.:?abcdefghijklmnopqrstuvwxyz")
BLOCK, LIMIT = 16, 24
EXAMPLES = 500  # the whole file takes well under a minute (under 10 s on 2 cores)
# derandomize=True below: the same cases on every run, so that a failure reproduces; set it to
# False for a while to let the fuzzer explore new ones


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=TOKENIZER.vocab_size, block_size=BLOCK, n_layer=1, n_head=2, n_embd=8
    )
    model = GPT(config).eval()
    with torch.no_grad():  # large weights: logits of tens, as a trained model has
        for p in model.parameters():
            p.normal_(0.0, 1.0)
    return model


GPT_MODEL = tiny_gpt()
APP = server.make_app(GPT_MODEL, TOKENIZER, max_new_tokens=LIMIT)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES
)
# a body the schema accepts is refused only by the tokenizer (400), which the check below verifies
schema.config.checks.positive_data_acceptance.expected_statuses = ["200", "400"]
# a body the schema refuses gets 422, or 413 when it is larger than the server reads
negative = schema.config.checks.negative_data_rejection
negative.expected_statuses = [*negative.expected_statuses, "413"]
VOCAB = sorted(TOKENIZER.stoi)


@schema.hook("map_body")
def into_the_vocabulary(context, body):
    """Rewrite every other generated prompt into the model's characters, so that many requests
    reach the model (random strings almost always hold a character it never saw)."""
    if isinstance(body, dict) and isinstance(body.get("prompt"), str) and len(body["prompt"]) % 2:
        body = {**body, "prompt": "".join(VOCAB[ord(c) % len(VOCAB)] for c in body["prompt"])}
    return body


SEEN = {"positive": {}, "negative": {}}  # status -> how many replies, per mode


def readable(prompt) -> bool:
    """Whether the tokenizer reads ``prompt``: the only reason to refuse a body the schema takes."""
    return (
        isinstance(prompt, str)
        and all(c in TOKENIZER.stoi for c in prompt)
        and len(prompt) <= BLOCK
    )


@schemathesis.check
def whole_stream_or_tokenizer_refusal(ctx, response, case):
    """A 200 carries exactly max_new_tokens characters and its seed; a 400 is for a prompt the
    tokenizer cannot read; and a body the schema accepts gets one of the two."""
    if case.path != "/generate" or case.method.upper() != "POST":
        return None
    body = case.body if isinstance(case.body, dict) else {}
    if response.status_code == 200:
        text = response.content.decode("utf-8")
        assert len(text) == body["max_new_tokens"], (len(text), body)
        assert int(response.headers["x-seed"][0]) >= 0
    if response.status_code == 400:
        assert not readable(body.get("prompt")), body
    return None


@schema.include(path="/generate").parametrize()
@settings(
    deadline=None, suppress_health_check=list(HealthCheck), max_examples=EXAMPLES, derandomize=True
)
def test_fuzz_generate(case):
    response = case.call_and_validate(additional_checks=[whole_stream_or_tokenizer_refusal])
    mode = case.meta.generation.mode.value if case.meta is not None else "positive"
    SEEN[mode][response.status_code] = SEEN[mode].get(response.status_code, 0) + 1
    assert response.status_code < 500


@schema.include(path="/health").parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=20, derandomize=True)
def test_fuzz_health(case):
    case.call_and_validate()


def test_the_fuzzer_reached_the_model_and_the_schema_checks():
    """Both kinds of case were sent: streams that ran and bodies the schema refused."""
    print("replies by status:", SEEN)
    assert SEEN["positive"].get(200, 0) >= 20
    assert SEEN["negative"].get(422, 0) >= 20
