import pytest

from fmbook import widgets


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
