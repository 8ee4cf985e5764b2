import datetime as dt
import re

import pytest

from fmbook.data import models
from fmbook.data.timeline import MODALITIES, OBJECTIVES, TABLE
from tests.book_config import ROOT

ROWS = models()


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
    ]:
        assert required in names, required


def test_schema_and_ranges():
    for r in ROWS:
        assert dt.date(2017, 1, 1) <= r.date <= dt.date.today()
        assert r.modality in MODALITIES and r.objective in OBJECTIVES
        for value in (r.parameters, r.training_tokens, r.training_images):
            assert value is None or value > 0
    assert ROWS == sorted(ROWS, key=lambda r: (r.date, r.name))


def test_every_source_is_in_the_bibliography():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    missing = sorted({r.source for r in ROWS} - keys)
    assert not missing, f"sources missing from references.bib: {missing}"


def test_unpublished_numbers_stay_missing():
    gpt4 = next(r for r in ROWS if r.name == "GPT-4")
    assert gpt4.parameters is None and gpt4.compute is None
    gpt3 = next(r for r in ROWS if r.name == "GPT-3")
    assert gpt3.compute == pytest.approx(6 * 175e9 * 300e9)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s: s.replace("2018-10", "2018/10", 1), "date must be YYYY-MM"),
        (lambda s: s.replace(",340e6,", ",-340e6,", 1), "must be positive or empty"),
        (lambda s: s.replace(",masked,yes,devlin", ",magic,yes,devlin", 1), "objective must be one of"),
        (lambda s: s.replace("name,date", "title,date", 1), "columns must be"),
    ],
)
def test_bad_rows_are_rejected(tmp_path, change, match):
    bad = tmp_path / "models.csv"
    bad.write_text(change(TABLE.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        models(bad)
