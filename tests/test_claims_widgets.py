import json

import pytest

from fmbook import claims, widgets

TOML = """
[loss]
description = "a loss"
test = { max = 2.0 }
full = { max = 1.0 }

[acc]
test = { min = 0.5, max = 1.0 }
full = { min = 0.9, max = 1.0 }
"""


@pytest.fixture
def nb(tmp_path, monkeypatch):
    monkeypatch.setenv("FMBOOK_CLAIMS_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("FMBOOK_BUDGET", "test")
    (tmp_path / "demo.claims.toml").write_text(TOML)
    return claims.notebook("demo", folder=tmp_path)


def test_record_writes_json_and_check_passes(nb, tmp_path):
    claims.record("loss", 1.5, "nats")
    nb.record("acc", 0.75, "fraction")
    doc = json.loads((tmp_path / "out" / "demo.test.json").read_text())
    assert doc["budget"] == "test" and doc["notebook"] == "demo"
    assert doc["claims"]["loss"]["value"] == 1.5 and doc["claims"]["loss"]["unit"] == "nats"
    results = claims.check()
    assert all(r.ok for r in results) and {r.name for r in results} == {"loss", "acc"}


def test_check_fails_out_of_bounds(nb):
    nb.record("loss", 2.5)
    nb.record("acc", 0.75)
    with pytest.raises(AssertionError, match="FAIL loss = 2.5"):
        nb.check()
    assert [r.ok for r in nb.check(raise_on_failure=False)] == [True, False]


def test_check_fails_when_a_threshold_was_not_measured_or_a_claim_has_none(nb):
    nb.record("loss", 1.0)
    with pytest.raises(AssertionError, match="thresholds never measured: acc"):
        nb.check()
    nb.record("acc", 0.8)
    nb.record("extra", 3.0)
    with pytest.raises(AssertionError, match="claims without a threshold: extra"):
        nb.check()


def test_full_budget_uses_its_own_bounds(nb, monkeypatch):
    monkeypatch.setenv("FMBOOK_BUDGET", "full")
    full = claims.notebook("demo", folder=nb.folder)
    full.record("loss", 1.5)
    full.record("acc", 0.95)
    with pytest.raises(AssertionError, match="FAIL loss"):
        full.check()


@pytest.mark.parametrize(
    ("name", "value", "error", "match"),
    [
        ("bad name", 1.0, ValueError, "letters, digits"),
        ("loss", "high", TypeError, "must be a number"),
        ("loss", float("nan"), ValueError, "must be finite"),
    ],
)
def test_record_rejects_bad_input(nb, name, value, error, match):
    with pytest.raises(error, match=match):
        nb.record(name, value)


def test_bad_thresholds_file(tmp_path):
    (tmp_path / "x.claims.toml").write_text("[loss]\nfull = { max = 1 }\n")
    with pytest.raises(ValueError, match="no bound for budget 'test'"):
        claims.load_thresholds(tmp_path / "x.claims.toml", "test")
    (tmp_path / "y.claims.toml").write_text("[loss]\ntest = { below = 1 }\n")
    with pytest.raises(ValueError, match="'min' and/or 'max'"):
        claims.load_thresholds(tmp_path / "y.claims.toml", "test")
    with pytest.raises(FileNotFoundError, match="no thresholds file"):
        claims.load_thresholds(tmp_path / "z.claims.toml", "test")


def test_record_before_notebook_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(claims, "_current", None)
    with pytest.raises(RuntimeError, match="fmbook.claims.notebook"):
        claims.record("x", 1.0)


def test_slider_headless_is_a_scrubber_with_every_frame(monkeypatch):
    monkeypatch.setenv("FMBOOK_HEADLESS", "1")
    out = widgets.slider(lambda v: f"value is {v}", [1, 2, 3], label="v", start=2)
    html = out.data
    assert html.count('class="fmbook-scrubber-frame"') == 3
    assert "value is 1" in html and "value is 3" in html
    assert 'value="1"' in html  # starts at the frame of 2
    assert "<script>" in html


def test_slider_headless_renders_figures_as_images(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setenv("FMBOOK_HEADLESS", "1")

    def draw(k):
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot(range(k))
        return fig

    html = widgets.slider(draw, [2, 3], label="k").data
    assert html.count("data:image/png;base64,") == 2
    assert plt.get_fignums() == []  # every frame's figure closed


def test_slider_live_is_an_ipywidget(monkeypatch):
    import ipywidgets

    monkeypatch.setenv("FMBOOK_HEADLESS", "0")
    box = widgets.slider(lambda v: str(v), ["a", "b"], label="letter")
    assert isinstance(box, ipywidgets.VBox)
    control = box.children[0]
    assert isinstance(control, ipywidgets.SelectionSlider) and control.value == 0


def test_slider_bad_input():
    with pytest.raises(ValueError, match="values is empty"):
        widgets.slider(str, [])
    with pytest.raises(ValueError, match="start=5 is not one of the values"):
        widgets.slider(str, [1, 2], start=5)
    with pytest.raises(TypeError, match="render must be callable"):
        widgets.slider("nope", [1])


def test_scrubber_rejects_mismatched_frames():
    with pytest.raises(ValueError, match="as many labels as frames"):
        widgets.scrubber_html(["a", "b"], ["1"], "x")


def test_measured_reads_a_notebooks_claims_and_runs_it_when_missing(tmp_path, monkeypatch):
    import nbformat

    from fmbook import claims

    monkeypatch.setenv("FMBOOK_CLAIMS_DIR", str(tmp_path / "claims"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from fmbook import claims\nclaims.notebook('tiny')\nclaims.record('answer', 6 * 7, 'units')\nclaims.check()"
        )
    ]
    nbformat.write(nb, tmp_path / "tiny.ipynb")
    (tmp_path / "tiny.claims.toml").write_text(
        "[answer]\ntest = { min = 42, max = 42 }\nfull = { min = 42, max = 42 }\n"
    )
    with pytest.raises(FileNotFoundError, match="no recorded claims"):
        claims.measured("tiny", tmp_path, run_missing=False)
    assert claims.measured("tiny", tmp_path) == {"answer": 42.0}  # ran the notebook
    (tmp_path / "tiny.ipynb").unlink()
    assert claims.measured("tiny", tmp_path) == {"answer": 42.0}  # now from the recorded file
    with pytest.raises(FileNotFoundError, match="no notebook"):
        claims.measured("other", tmp_path)
