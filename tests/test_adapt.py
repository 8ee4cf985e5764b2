import random

import matplotlib
import numpy as np
import pytest
import torch

from fmbook.adapt import (
    FitLog,
    LoRALinear,
    PooledClassifier,
    SurprisalClassifier,
    add_lora,
    count_parameters,
    finetune,
    fit_probe,
    fit_probes,
    likelihood_features,
    next_token_log_probs,
    plot_label_efficiency,
    pooled_features,
    predict,
    pseudo_log_probs,
)
from fmbook.data.spelling import TextTask, spelling_task
from fmbook.transformer import BERT, GPT, GPTConfig

matplotlib.use("Agg")


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()


def test_lora_starts_identical_to_the_base_model_and_trains_only_A_and_B():
    model = tiny_gpt()
    idx = torch.randint(0, 20, (3, 16), generator=torch.Generator().manual_seed(1))
    before = model(idx)[0]
    names = add_lora(model, ["attn.qkv", "attn.proj"], rank=4)
    assert names == [
        "blocks.0.attn.qkv",
        "blocks.0.attn.proj",
        "blocks.1.attn.qkv",
        "blocks.1.attn.proj",
    ]
    torch.testing.assert_close(
        model(idx)[0], before, rtol=0, atol=0
    )  # B = 0: exactly the base model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        f"blocks.{i}.attn.{m}.{ab}" for i in (0, 1) for m in ("qkv", "proj") for ab in "AB"
    }
    n_train, n_total = count_parameters(model)
    # qkv: A (4 x 16) + B (48 x 4); proj: A (4 x 16) + B (16 x 4); two layers
    assert n_train == 2 * ((4 * 16 + 48 * 4) + (4 * 16 + 16 * 4))
    assert n_total == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def test_lora_update_is_the_low_rank_product_and_merges():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    lora = LoRALinear(base, rank=2, alpha=4.0)
    with torch.no_grad():
        lora.B.normal_()
    x = torch.randn(7, 6)
    expected = base(x) + (4.0 / 2) * x @ (lora.B @ lora.A).T
    torch.testing.assert_close(lora(x), expected)
    torch.testing.assert_close(lora.merged()(x), expected)
    assert torch.linalg.matrix_rank(lora.merged().weight - base.weight) <= 2


def test_lora_learns_while_the_base_weights_stay_bit_identical():
    model = tiny_gpt()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    add_lora(model, ["qkv"], rank=2)
    clf = PooledClassifier(model, 2)
    opt = torch.optim.Adam([p for p in clf.parameters() if p.requires_grad], lr=1e-2)
    idx = torch.randint(0, 20, (8, 16), generator=torch.Generator().manual_seed(2))
    y, lengths = torch.arange(8) % 2, torch.full((8,), 16)
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(clf(idx, lengths), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, p in clf.backbone.named_parameters():
        if name.endswith((".A", ".B")):
            continue
        key = name.replace(".base.", ".")
        assert torch.equal(p, frozen[key]), name
    assert clf.backbone.blocks[0].attn.qkv.B.abs().sum() > 0


def test_lora_rejects_bad_rank_and_unknown_modules():
    model = tiny_gpt()
    with pytest.raises(ValueError, match="rank"):
        add_lora(model, ["qkv"], rank=0)
    with pytest.raises(ValueError, match="attn.query"):
        add_lora(model, ["attn.query"], rank=2)
    with pytest.raises(ValueError, match="non-empty list"):
        add_lora(model, "qkv", rank=2)
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(torch.nn.Conv1d(2, 2, 1), rank=1)


def test_surprisal_features_are_the_language_model_losses_and_ignore_padding():
    model = tiny_gpt()
    clf = SurprisalClassifier(model, 2, top=3)
    idx = torch.randint(0, 20, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = model(idx)[0]
    for lengths in (torch.tensor([10, 16]), torch.tensor([5, 9])):  # the second batch is cut to 9
        feats = clf.features(idx, lengths)
        for row, n in enumerate(lengths.tolist()):
            s = torch.stack(
                [-torch.log_softmax(logits[row, t - 1], -1)[idx[row, t]] for t in range(1, n)]
            )
            torch.testing.assert_close(
                feats[row], torch.cat([s.topk(3).values, s.mean()[None]]), atol=1e-5, rtol=1e-5
            )
    lengths = torch.tensor([10, 16])
    feats = clf.features(idx, lengths)
    # a causal model's features of a padded passage do not depend on what the padding is
    other = idx.clone()
    other[0, 10:] = (other[0, 10:] + 1) % 20
    torch.testing.assert_close(clf.features(other, lengths)[0], feats[0])
    with pytest.raises(ValueError, match="lengths"):
        clf.features(idx, torch.tensor([3]))


# -- features of a frozen model, probes, early stopping, the figure ----------------------------


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    return BERT(GPTConfig(vocab_size=21, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()


def lines_of(lengths, seed=1, vocab=20, T=16, pad=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (len(lengths), T), generator=g)
    lengths = torch.tensor(lengths)
    padded = ids.masked_fill(torch.arange(T)[None] >= lengths[:, None], pad)
    return ids, padded, lengths


def test_pooled_features_are_the_mean_state_of_each_line_fed_alone():
    ids, padded, lengths = lines_of([5, 16, 5, 9, 12])
    for model in (tiny_gpt(), tiny_bert()):
        feats = pooled_features(model, padded, lengths, max_tokens=10)  # several chunks per length
        with torch.no_grad():
            expected = torch.stack(
                [
                    model.features(padded[i : i + 1, :n])[0].mean(0)
                    for i, n in enumerate(lengths.tolist())
                ]
            )
        torch.testing.assert_close(feats, expected, atol=1e-5, rtol=1e-5)
        # what sits in the padding does not matter, for the bidirectional model too
        torch.testing.assert_close(
            pooled_features(model, ids, lengths), feats, atol=1e-5, rtol=1e-5
        )
    with pytest.raises(ValueError, match="lengths"):
        pooled_features(tiny_gpt(), padded, torch.tensor([0, 16, 5, 9, 12]))


def test_next_token_log_probs_sum_to_the_log_likelihood():
    model = tiny_gpt()
    _, padded, lengths = lines_of([7, 16, 3])
    logp = next_token_log_probs(model, padded, lengths)
    with torch.no_grad():
        for i, n in enumerate(lengths.tolist()):
            x = padded[i : i + 1, :n]
            nll = model(x[:, :-1], x[:, 1:])[1].item() * (n - 1)  # mean loss times the count
            assert logp[i, 0] == 0 and (logp[i, n:] == 0).all()
            assert logp[i].sum().item() == pytest.approx(-nll, rel=1e-5)


def test_pseudo_log_likelihood_equals_a_loop_over_masked_positions():
    model, mask_id = tiny_bert(), 20
    ids, padded, lengths = lines_of([6, 16, 6, 11])
    terms = pseudo_log_probs(model, padded, lengths, mask_id, max_tokens=50)
    with torch.no_grad():
        for i, n in enumerate(lengths.tolist()):
            line = padded[i, :n]
            expected = []
            for t in range(n):  # mask one position at a time, score the true character there
                masked = line.clone()
                masked[t] = mask_id
                logits = model(masked[None])[0][0, t]
                expected.append(torch.log_softmax(logits, -1)[line[t]])
            torch.testing.assert_close(terms[i, :n], torch.stack(expected), atol=1e-5, rtol=1e-5)
            assert (terms[i, n:] == 0).all() and (terms[i, :n] < 0).all()
    torch.testing.assert_close(
        pseudo_log_probs(model, ids, lengths, mask_id), terms, atol=1e-5, rtol=1e-5
    )
    with pytest.raises(ValueError, match="mask id"):
        pseudo_log_probs(
            model, padded.clamp(max=19).index_fill(1, torch.tensor([0]), 20), lengths, 20
        )
    with pytest.raises(ValueError, match="mask_id"):
        pseudo_log_probs(model, padded, lengths, 21)


def test_likelihood_features_summarise_the_scored_characters():
    log_probs = torch.tensor([[0.0, -1.0, -3.0, -0.5, 0.0], [-2.0, -0.1, -0.2, -4.0, -1.0]])
    feats = likelihood_features(log_probs, torch.tensor([3, 5]), top=2)
    torch.testing.assert_close(feats, torch.tensor([[3.0, 1.0, 4.5 / 3], [4.0, 2.0, 7.3 / 5]]))
    with pytest.raises(ValueError, match="top"):
        likelihood_features(log_probs, torch.tensor([3, 5]), top=6)
    with pytest.raises(ValueError, match="log_probs"):
        likelihood_features(log_probs, torch.tensor([3]))


def test_fit_probe_chooses_the_regularisation_on_the_validation_split():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    x = rng.normal(size=(60, 30)) + 0.8 * y[:, None] * (
        np.arange(30) < 3
    )  # 3 useful of 30 dimensions
    probe = fit_probe(x[:20], y[:20], x[20:], y[20:], Cs=(1e-3, 1e-1, 10.0))
    scores = {}
    for C in (1e-3, 1e-1, 10.0):
        regression = LogisticRegression(C=C, solver="liblinear", max_iter=5000, random_state=0)
        m = make_pipeline(StandardScaler(), regression).fit(x[:20], y[:20])
        scores[C] = (m.predict(x[20:]) == y[20:]).mean()
    best = max(scores.values())
    assert len(set(scores.values())) > 1  # the choice matters
    assert probe.val_accuracy == best and probe.C == min(c for c, s in scores.items() if s == best)
    assert (probe.predict(x[20:]) == y[20:]).mean() == best
    assert probe.n_parameters == 30 + 1  # a weight per feature and a bias
    weight, bias = probe.linear_head()  # the probe as a head on the raw features
    logits = torch.as_tensor(x[20:], dtype=torch.float32) @ weight.T + bias
    assert (logits.argmax(1).numpy() == probe.predict(x[20:])).all()
    torch.testing.assert_close(
        logits.softmax(1)[:, 1].double(),
        torch.as_tensor(probe.pipeline.predict_proba(x[20:])[:, 1]),
        atol=1e-5,
        rtol=0,
    )
    texts = ["the cat sat", "teh cat sta", "a dog ran", "a odg rna"] * 3
    labels = [1, 0, 1, 0] * 3
    text_probe = fit_probe(
        texts,
        labels,
        texts,
        labels,
        vectorizer=TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 3)),
    )
    assert text_probe.val_accuracy == 1.0
    with pytest.raises(ValueError, match="two classes"):
        fit_probe(x[:4], np.zeros(4), x[4:8], y[4:8])
    with pytest.raises(ValueError, match="labels"):
        fit_probe(x[:4], y[:3], x[4:8], y[4:8])


def test_finetune_stops_early_and_keeps_its_best_validation_step():
    encode = lambda s: [ord(ch) % 20 for ch in s]  # noqa: E731
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij") for _ in range(4)) for _ in range(30)]
    lines = [
        " ".join(rng.sample(words, rng.choice([2, 3]))) for _ in range(60)
    ]  # 9 or 14 characters
    task = spelling_task(lines, encode, length=16, pad_id=0, seed=0)
    train, val = task.subset(torch.arange(0, 30)), task.subset(torch.arange(30, len(task)))
    runs = []
    rates = {"head_lr": 1e-2, "body_lr": 1e-3, "eval_every": 5, "seed": 0}
    for _ in range(2):
        clf = PooledClassifier(tiny_gpt(), 2)
        log = finetune(clf, train, val, max_steps=400, patience=2, **rates)
        runs.append((log, [p.detach().clone() for p in clf.parameters()]))
        assert isinstance(log, FitLog) and log.steps < 400 and log.best_step <= log.steps - 2 * 5
        assert (predict(clf, val) == val.labels).float().mean().item() == log.val_accuracy
        one_by_one = torch.cat([predict(clf, val.subset([i])) for i in range(len(val))])
        assert torch.equal(predict(clf, val, batch_size=7), one_by_one)  # in the task's order
    assert runs[0][0] == runs[1][0]  # the same seed, the same run
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    with pytest.raises(ValueError, match="patience"):
        finetune(clf, train, val, max_steps=5, patience=0, **rates)
    with pytest.raises(ValueError, match="body_lr"):
        finetune(clf, train, val, max_steps=5, patience=1, **{**rates, "body_lr": None})


def test_plot_label_efficiency_draws_mean_and_spread_over_draws():
    correct = {
        "a": {4: [np.r_[np.ones(5), np.zeros(5)], np.ones(10)], 16: [np.ones(10), np.ones(10)]},
        "b": {4: [np.full(10, 0.5)], 16: [np.r_[np.ones(8), np.zeros(2)]]},
    }
    panels = {"left": ["a"], "right": ["a", "b"]}
    fig = plot_label_efficiency(correct, panels, [4, 16], lines={"zero-shot": 0.6})
    left, right = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["left", "right"]
    data_line, _, (bars,) = left.containers[0]  # the mean over draws and the std bars
    assert data_line.get_xdata().tolist() == [4, 16]
    assert data_line.get_ydata().tolist() == [0.75, 1.0]
    assert bars.get_segments()[0][:, 1].tolist() == [0.5, 1.0]  # draws at 0.5 and 1: std 0.25
    a_again, b_line = right.containers[0][0], right.containers[1][0]
    assert a_again.get_linestyle() == "--"  # "a" again, as the reference: dashed
    assert b_line.get_linestyle() == "-" and b_line.get_ydata().tolist() == [0.5, 0.8]
    assert right.get_legend_handles_labels()[1] == ["zero-shot", "chance", "a", "b"]
    with pytest.raises(ValueError, match="results"):
        plot_label_efficiency(correct, {"left": ["c"]}, [4, 16])
    matplotlib.pyplot.close(fig)


def test_fit_probes_fits_each_feature_set_on_the_same_rows_of_the_labelled_split():
    rng = np.random.default_rng(1)
    labels = torch.tensor([0, 1] * 20)
    task = TextTask(
        tuple("x" * 40), labels, torch.zeros(40, 2, dtype=torch.long), torch.ones(40), ("a", "b")
    )
    part = {"labelled": torch.arange(0, 20), "val": torch.arange(20, 40)}
    stacked_labels = torch.cat([task.labels[:20], task.labels[20:]]).numpy()
    useful = torch.tensor(rng.normal(size=(40, 4)) + 2.0 * stacked_labels[:, None])
    features = {"useful": useful, "noise": torch.tensor(rng.normal(size=(40, 4)))}
    labelled, val = task.subset(part["labelled"]), task.subset(part["val"])
    rows = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    probes = fit_probes(features, part, rows, labelled, val)
    assert list(probes) == ["useful", "noise"]
    for name, f in features.items():
        alone = fit_probe(f[:20][rows], labelled.labels[rows], f[20:], val.labels)
        assert probes[name].C == alone.C and probes[name].val_accuracy == alone.val_accuracy
    assert probes["useful"].val_accuracy > probes["noise"].val_accuracy
