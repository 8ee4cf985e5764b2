"""Interactive controls that still work in the static book.

:func:`slider` shows ``render(value)`` for one of a few ``values``. In a live
Jupyter kernel it is an ipywidgets slider that re-renders on change. Headless
(book build, nbval) every frame is rendered up front into a self-contained
HTML *scrubber* (a range input and the frames, a few lines of inline script),
so the reader of the rendered page can still move the slider.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
from collections.abc import Callable, Sequence

from fmbook.runtime import headless


def _frame_html(obj) -> str:
    """HTML for one frame: a matplotlib figure (as PNG), a string, or anything with
    ``_repr_html_``."""
    from matplotlib.figure import Figure

    if isinstance(obj, Figure):
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        obj.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(obj)
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        return f'<img alt="frame" style="max-width:100%" src="data:image/png;base64,{data}"/>'
    if isinstance(obj, str):
        return f'<pre style="white-space:pre-wrap;margin:0">{html.escape(obj)}</pre>'
    if hasattr(obj, "_repr_html_"):
        return obj._repr_html_()
    raise TypeError(
        f"slider: render(value) must return a matplotlib Figure, a str or an object with "
        f"_repr_html_, got {type(obj).__name__}"
    )


def scrubber_html(frames: Sequence[str], labels: Sequence[str], label: str, start: int = 0) -> str:
    """A static slider over pre-rendered HTML ``frames``; ``labels[i]`` names frame ``i``."""
    if len(frames) != len(labels) or not frames:
        raise ValueError(
            f"scrubber_html: need as many labels as frames (at least one), got "
            f"{len(frames)} frames and {len(labels)} labels"
        )
    if not 0 <= start < len(frames):
        raise ValueError(f"scrubber_html: start must be in [0, {len(frames)}), got {start}")
    uid = "fmbook-scrubber-" + hashlib.sha1("".join(frames).encode()).hexdigest()[:12]
    parts = [
        f'<div class="fmbook-scrubber" id="{uid}" data-frames="{len(frames)}">',
        (
            f'<label style="display:flex;gap:0.6em;align-items:center">{html.escape(label)}'
            f'<input type="range" min="0" max="{len(frames) - 1}" step="1" value="{start}" '
            f'aria-label="{html.escape(label)}" style="flex:1;max-width:24em"/>'
            f'<output class="fmbook-scrubber-value">{html.escape(labels[start])}</output></label>'
        ),
    ]
    for i, (frame, name) in enumerate(zip(frames, labels)):
        hidden = "" if i == start else ' style="display:none"'
        parts.append(
            f'<div class="fmbook-scrubber-frame" data-index="{i}" '
            f'data-label="{html.escape(name)}"{hidden}>{frame}</div>'
        )
    parts.append("</div>")
    parts.append(
        "<script>(function(){"
        f'var root=document.getElementById("{uid}");if(!root)return;'
        'var input=root.querySelector("input"),out=root.querySelector("output"),'
        'frames=root.querySelectorAll(".fmbook-scrubber-frame");'
        "function show(){var i=+input.value;frames.forEach(function(f,j){"
        'f.style.display=(i===j)?"":"none";if(i===j)out.textContent=f.dataset.label;});}'
        'input.addEventListener("input",show);})();</script>'
    )
    return "\n".join(parts)


def slider(
    render: Callable[[object], object],
    values: Sequence,
    label: str = "value",
    start=None,
    fmt: Callable[[object], str] = str,
):
    """Show ``render(v)`` with a slider over ``values``; interactive live, a scrubber headless.

    ``render`` returns a matplotlib figure, a string (shown as preformatted
    text) or an object with ``_repr_html_``. Returns the ipywidgets box (live)
    or the ``IPython.display.HTML`` scrubber (headless), which Jupyter shows.
    """
    values = list(values)
    if not values:
        raise ValueError("slider: values is empty; expected at least one value")
    if not callable(render):
        raise TypeError(f"slider: render must be callable, got {type(render).__name__}")
    if start is None:
        start_index = 0
    elif start in values:
        start_index = values.index(start)
    else:
        raise ValueError(f"slider: start={start!r} is not one of the values {values!r}")
    labels = [fmt(v) for v in values]
    if headless():
        from IPython.display import HTML

        frames = [_frame_html(render(v)) for v in values]
        return HTML(scrubber_html(frames, labels, label, start_index))

    import ipywidgets as widgets
    from IPython.display import HTML, display

    cache: dict[int, str] = {}
    control = widgets.SelectionSlider(
        options=list(zip(labels, range(len(values)))),
        value=start_index,
        description=label,
        continuous_update=False,
        style={"description_width": "initial"},
        layout=widgets.Layout(width="32em"),
    )
    output = widgets.Output()

    def show(index: int) -> None:
        if index not in cache:
            cache[index] = _frame_html(render(values[index]))
        with output:
            output.clear_output(wait=True)
            display(HTML(cache[index]))

    control.observe(lambda change: show(change["new"]), names="value")
    show(start_index)
    return widgets.VBox([control, output])
