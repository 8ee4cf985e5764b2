import onnx
import pytest
import torch

from fmbook import export
from fmbook.transformer import GPT, GPTConfig

BLOCK, VOCAB = 12, 11


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=2, n_embd=16)
    return GPT(config).eval()


@pytest.fixture(scope="module")
def onnx_file(gpt, tmp_path_factory):
    return export.export_onnx(gpt, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="module")
def sess(onnx_file):
    return export.session(onnx_file, threads=1)


def test_the_file_is_a_valid_onnx_graph_with_the_weights_inside(gpt, onnx_file):
    model = onnx.load(onnx_file)
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["idx"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert not list(onnx_file.parent.glob("*.data"))  # no separate weights file
    assert onnx_file.stat().st_size > 4 * gpt.num_params()


@pytest.mark.parametrize("batch, length", [(1, 1), (1, 2), (3, 5), (2, BLOCK)])
def test_onnx_runtime_gives_pytorchs_logits_for_any_batch_and_length(gpt, sess, batch, length):
    idx = torch.randint(VOCAB, (batch, length), generator=torch.Generator().manual_seed(length))
    with torch.no_grad():
        want = gpt(idx)[0]
    got = export.onnx_logits(sess, idx)
    assert got.shape == (batch, length, VOCAB) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_greedy_with_onnx_runtime_gives_generates_greedy_tokens_past_the_block(gpt, sess):
    idx = torch.tensor([[1, 2, 3]])
    n = 2 * BLOCK
    want = gpt.generate(idx, n, top_k=1, use_cache=False)
    assert torch.equal(export.greedy(lambda x: export.onnx_logits(sess, x), idx, n, BLOCK), want)
    assert torch.equal(export.greedy(lambda x: gpt(x)[0], idx, n, BLOCK), want)


def test_greedy_by_hand_and_its_window():
    seen = []

    def next_is_last_plus_one(idx):  # logits that make (last id + 1) mod 5 the most likely
        seen.append(idx.shape[1])
        return torch.nn.functional.one_hot((idx + 1) % 5, 5).float()

    out = export.greedy(next_is_last_plus_one, torch.tensor([[3], [0]]), 4, block_size=2)
    assert out.tolist() == [[3, 4, 0, 1, 2], [0, 1, 2, 3, 4]]
    assert seen == [1, 2, 2, 2]  # the context never exceeds the block
    assert torch.equal(export.greedy(next_is_last_plus_one, out, 0, 2), out)


def test_export_leaves_the_model_as_it_was(gpt, tmp_path):
    gpt.train()
    try:
        before = {k: v.clone() for k, v in gpt.state_dict().items()}
        export.export_onnx(gpt, tmp_path / "again.onnx")
        assert gpt.training
        assert all(torch.equal(before[k], v) for k, v in gpt.state_dict().items())
    finally:
        gpt.eval()


def test_bad_inputs_are_refused_with_what_was_expected(gpt, sess, onnx_file, tmp_path):
    with pytest.raises(TypeError, match="GPT"):
        export.export_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match=r"\.onnx"):
        export.export_onnx(gpt, tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export.export_onnx(gpt, tmp_path / "missing" / "x.onnx")
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        export.session(tmp_path / "nothing.onnx")
    with pytest.raises(ValueError, match="threads"):
        export.session(onnx_file, threads=0)
    with pytest.raises(TypeError, match="torch.long"):
        export.onnx_logits(sess, torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        export.onnx_logits(sess, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="max_new_tokens"):
        export.greedy(lambda x: x, torch.zeros(1, 1, dtype=torch.long), -1, 4)
    with pytest.raises(ValueError, match="block_size"):
        export.greedy(lambda x: x, torch.zeros(1, 1, dtype=torch.long), 1, 0)


def test_the_session_can_write_the_graph_it_runs(onnx_file, tmp_path):
    export.session(onnx_file, optimized=tmp_path / "optimized.onnx")
    assert len(onnx.load(tmp_path / "optimized.onnx").graph.node) > 0
