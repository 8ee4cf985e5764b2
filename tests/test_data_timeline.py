import dataclasses
import datetime as dt
import re

import matplotlib
import matplotlib.pyplot as plt
import pytest

from fmbook.data import models
from fmbook.data.timeline import TABLE, compact, size_chart, table_html
from scripts.book_config import ROOT

matplotlib.use("Agg")

ROWS = models()
BY_NAME = {r.name: r for r in ROWS}

# Numbers checked against each source (paper section or table in the comment). A change to
# models.csv that disagrees with its source fails here.
PUBLISHED = {
    # name: (date, parameters, active parameters, training tokens, training images, source)
    "Transformer (big)": ("2017-06", 213e6, None, None, None, "vaswani2017attention"),  # Table 3
    "BERT (large)": ("2018-10", 340e6, None, None, None, "devlin2019bert"),  # sec. 3
    "GPT-2": ("2019-02", 1.5e9, None, None, None, "radford2019language"),  # abstract
    "T5 (11B)": ("2019-10", 11e9, None, 1e12, None, "raffel2020exploring"),  # sec. 3.7
    "GPT-3": ("2020-05", 175e9, None, 300e9, None, "brown2020language"),  # secs. 2.1-2.2
    "DDPM (CIFAR-10)": ("2020-06", 35.7e6, None, None, 50000, "ho2020denoising"),  # appendix B
    "Gopher": ("2021-12", 280e9, None, 300e9, None, "rae2021scaling"),  # Hoffmann et al., Table 1
    "Chinchilla": ("2022-03", 70e9, None, 1.4e12, None, "hoffmann2022training"),  # Table 1
    "PaLM": ("2022-04", 540e9, None, 780e9, None, "chowdhery2023palm"),  # abstract, sec. 3
    "LLaMA (65B)": ("2023-02", 65.2e9, None, 1.4e12, None, "touvron2023llama"),  # Table 2
    "Mixtral 8x7B": ("2024-01", 47e9, 13e9, None, None, "jiang2024mixtral"),  # abstract
    "DeepSeek-V3": ("2024-12", 671e9, 37e9, 14.8e12, None, "deepseekai2024v3"),  # abstract
}


def test_at_least_thirty_models_from_2017_on():
    assert len(ROWS) >= 30
    names = {r.name.split(" (")[0] for r in ROWS}
    for required in [
        "Transformer",
        "BERT",
        "GPT",
        "GPT-2",
        "GPT-3",
        "DDPM",
        "CLIP",
        "ChatGPT",
        "LLaMA",
        "GPT-4",
        "Llama 2",
        "Mistral 7B",
        "SDXL",
        "Stable Diffusion",
        "Chinchilla",
        "PaLM",
        "InstructGPT",
        "Gopher",
    ]:
        assert required in names, required


def test_dates_and_sizes_are_plausible():
    for r in ROWS:
        assert dt.date(2017, 1, 1) <= r.date <= dt.date.today(), r.name
        assert r.parameters is None or 1e6 <= r.parameters <= 1e13, r.name
        assert r.training_tokens is None or 1e9 <= r.training_tokens <= 1e14, r.name
        assert r.training_images is None or 1e4 <= r.training_images <= 1e10, r.name
        assert r.parameters_per_token is None or r.parameters_per_token <= r.parameters


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_numbers_agree_with_their_source(name):
    date, params, active, tokens, images, source = PUBLISHED[name]
    r = BY_NAME[name]
    assert r.date.strftime("%Y-%m") == date
    assert r.source == source
    for got, want in [
        (r.parameters, params),
        (r.active_parameters, active),
        (r.training_tokens, tokens),
        (r.training_images, images),
    ]:
        assert got == (None if want is None else pytest.approx(want, rel=1e-9))


def test_every_source_is_in_the_bibliography():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    missing = sorted({r.source for r in ROWS} - keys)
    assert not missing, f"sources missing from references.bib: {missing}"


def test_compute_is_6nd_with_the_parameters_active_per_token():
    gpt4 = BY_NAME["GPT-4"]
    assert gpt4.parameters is None and gpt4.compute is None
    assert BY_NAME["GPT-3"].compute == pytest.approx(6 * 175e9 * 300e9)
    assert BY_NAME["GPT-3"].compute == pytest.approx(3.14e23, rel=0.01)  # Brown et al., Table D.1
    assert BY_NAME["T5 (11B)"].compute == pytest.approx(6 * 11e9 * 1e12)
    v3 = BY_NAME["DeepSeek-V3"]
    assert v3.compute == pytest.approx(6 * 37e9 * 14.8e12)  # active, not all 671B
    # Hoffmann et al.: Chinchilla used the same compute budget as Gopher
    ratio = BY_NAME["Chinchilla"].compute / BY_NAME["Gopher"].compute
    assert 0.9 < ratio < 1.3


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s: s.replace("2018-10", "2018/10", 1), "date"),
        (lambda s: s.replace(",340e6,", ",-340e6,", 1), "positive"),
        (lambda s: s.replace(",masked,yes,devlin", ",magic,yes,devlin", 1), "objective"),
        (lambda s: s.replace("name,date", "title,date", 1), "columns"),
        (lambda s: s.replace(",47e9,13e9,", ",13e9,47e9,", 1), "exceed"),
        (lambda s: s.replace(",47e9,13e9,", ",,13e9,", 1), "needs parameters"),
        (lambda s: s.replace(",yes,devlin", ",maybe,devlin", 1), "open_weights"),
        (lambda s: s.replace(",devlin2019bert,", ",,", 1), "required"),
    ],
)
def test_bad_rows_are_rejected(tmp_path, change, match):
    text = TABLE.read_text(encoding="utf-8")
    assert change(text) != text, "the change must apply to the table"
    bad = tmp_path / "models.csv"
    bad.write_text(change(text), encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        models(bad)


def test_compact_numbers():
    assert compact(None) == "—"
    assert compact(175e9) == "175B"
    assert compact(1.5e12) == "1.5T"
    assert compact(340e6) == "340M"
    assert compact(50000) == "50k"
    assert compact(12.0, " s") == "12 s"


def test_table_html_has_one_row_per_model_and_escapes_text():
    page = table_html(ROWS)
    assert page.count("<tr>") == len(ROWS) + 1  # the header, then one row per model
    assert "<td>GPT-3</td><td>2020-05</td>" in page and "<td>175B</td>" in page
    odd = dataclasses.replace(ROWS[0], name="A<B>&C")
    assert "<td>A&lt;B&gt;&amp;C</td>" in table_html([odd])


def test_size_chart_draws_every_model_of_a_modality():
    images = [r for r in ROWS if r.modality == "image"]
    fig = size_chart(ROWS, "image")
    ax, strip = fig.axes
    sized = sum(r.parameters is not None for r in images)
    assert len(ax.lines) == sized and len(strip.lines) == len(images) - sized
    assert len(ax.texts) + len(strip.texts) == len(images)  # one label per model
    plt.close(fig)
    with pytest.raises(ValueError, match="modality"):
        size_chart(ROWS, "audio")
