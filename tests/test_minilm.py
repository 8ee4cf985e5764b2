import hashlib

import pytest
import torch

from fmbook import minilm


def test_package_weights_have_the_published_hash():
    file = minilm.model_dir() / "model.safetensors"
    assert minilm.sha256(file) == minilm.SHA256
    minilm.verify(file)


def test_sha256_is_the_digest_of_the_whole_file(tmp_path):
    data = bytes(range(256)) * 5000  # more than one chunk
    file = tmp_path / "weights.bin"
    file.write_bytes(data)
    assert minilm.sha256(file) == hashlib.sha256(data).hexdigest()
    file.write_bytes(data[:-1] + b"x")  # one byte changed at the very end
    assert minilm.sha256(file) != hashlib.sha256(data).hexdigest()


def test_verify_refuses_a_file_with_another_hash(tmp_path):
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"not the weights")
    with pytest.raises(ValueError, match="refusing"):
        minilm.verify(fake)


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(minilm.mean_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))
    with pytest.raises(ValueError, match="disagree"):
        minilm.mean_pool(hidden, torch.ones(1, 2))


def test_embeddings_are_unit_length_and_paraphrases_are_closest():
    tokenizer, model = minilm.load(device="cpu")
    with pytest.raises(ValueError, match="source"):
        minilm.load(source="elsewhere")
    e = minilm.embed(
        [
            "The cat sits on the mat.",
            "A cat is sitting on a mat.",
            "Stock markets fell sharply today.",
        ],
        tokenizer,
        model,
    )
    assert e.shape == (3, 384)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    similarity = e @ e.T
    assert similarity[0, 1] > 0.7 > 0.2 > similarity[0, 2]
    # padding a batch does not change an embedding
    alone = minilm.embed(["The cat sits on the mat."], tokenizer, model)
    torch.testing.assert_close(alone[0], e[0], atol=1e-5, rtol=1e-5)
    # without normalising: the mean-pooled states, whose direction is the embedding
    pooled = minilm.embed(["The cat sits on the mat."], tokenizer, model, normalize=False)
    assert pooled.norm() > 1.5
    torch.testing.assert_close(pooled[0] / pooled[0].norm(), e[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="list"):
        minilm.embed("one string", tokenizer, model)


@pytest.mark.parametrize(("headless", "bar_during_load"), [("1", False), ("0", True)])
def test_load_shows_no_progress_bar_headless_and_restores_the_setting(
    monkeypatch, headless, bar_during_load
):
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    seen = []
    real = AutoModel.from_pretrained

    def spy(*args, **kwargs):
        seen.append(hf_logging.is_progress_bar_enabled())
        return real(*args, **kwargs)

    monkeypatch.setenv("FMBOOK_HEADLESS", headless)
    monkeypatch.setattr(AutoModel, "from_pretrained", spy)
    hf_logging.enable_progress_bar()
    minilm.load("package", device="cpu")
    assert seen == [bar_during_load]
    assert hf_logging.is_progress_bar_enabled()  # the reader's own setting comes back
