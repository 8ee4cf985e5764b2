"""The table of foundation models behind the history chapter's timeline.

``models.csv`` (beside this file) lists one model per row: name, date
(``YYYY-MM``, the month the model or its paper was first made public),
organisation, parameters, the parameters active for each token (mixtures of
experts only; empty for a dense model, which uses all of them), training
tokens (tokens seen in pretraining) or images (the size of the training set,
images or image-text pairs), modality, objective, open weights, and the
``book/references.bib`` key of the source of its numbers. A number the source
does not publish is left empty and loads as ``None``; it is never estimated.

:func:`models` loads the table; :func:`compact`, :func:`table_html` and
:func:`size_chart` show it (a number as ``175B``, the whole table as HTML, the
parameter count against the date).
"""

from __future__ import annotations

import csv
import datetime as dt
import html
from dataclasses import dataclass
from pathlib import Path

TABLE = Path(__file__).with_name("models.csv")
MODALITIES = ("text", "code", "image", "text-image")
OBJECTIVES = ("causal", "masked", "seq2seq", "diffusion", "contrastive")
OBJECTIVE_COLOURS = dict(zip(OBJECTIVES, ("C0", "C1", "C7", "C2", "C3")))
COLUMNS = (
    "name",
    "date",
    "organisation",
    "parameters",
    "active_parameters",
    "training_tokens",
    "training_images",
    "modality",
    "objective",
    "open_weights",
    "source",
    "notes",
)


@dataclass(frozen=True)
class ModelRecord:
    name: str
    date: dt.date  # first day of the month of publication
    organisation: str
    parameters: float | None
    active_parameters: float | None  # per token, for a mixture of experts; None: dense
    training_tokens: float | None
    training_images: float | None
    modality: str
    objective: str
    open_weights: bool
    source: str
    notes: str

    @property
    def year(self) -> float:
        """The date as a decimal year (mid-month), for plots and fits."""
        return self.date.year + (self.date.month - 0.5) / 12

    @property
    def parameters_per_token(self) -> float | None:
        """The parameters that process each token: the active ones of a mixture of experts,
        else all."""
        return self.active_parameters if self.active_parameters is not None else self.parameters

    @property
    def compute(self) -> float | None:
        r"""Training compute :math:`C \approx 6ND` in FLOP (Kaplan et al. 2020, section 2.1).

        :math:`N` is the number of parameters that process each token (the active ones
        of a mixture of experts) and :math:`D` the number of training tokens; ``None``
        unless the source publishes both.
        """
        if self.parameters_per_token is None or self.training_tokens is None:
            return None
        return 6 * self.parameters_per_token * self.training_tokens


def _number(row: dict, column: str, line: int) -> float | None:
    text = row[column].strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"{TABLE.name} line {line}: {column} must be a number or empty, got {text!r}"
        ) from None
    if not value > 0:
        raise ValueError(
            f"{TABLE.name} line {line}: {column} must be positive or empty, got {value}"
        )
    return value


def models(path: Path | None = None) -> list[ModelRecord]:
    """Every row of the table, checked against the schema, in date order."""
    path = Path(path) if path is not None else TABLE
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path.name}: columns must be {COLUMNS}, got {reader.fieldnames}")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                year, month = (int(p) for p in row["date"].split("-"))
                date = dt.date(year, month, 1)
            except ValueError:
                raise ValueError(
                    f"{path.name} line {line}: date must be YYYY-MM, got {row['date']!r}"
                ) from None
            if row["modality"] not in MODALITIES:
                raise ValueError(
                    f"{path.name} line {line}: modality must be one of {MODALITIES}, "
                    f"got {row['modality']!r}"
                )
            if row["objective"] not in OBJECTIVES:
                raise ValueError(
                    f"{path.name} line {line}: objective must be one of {OBJECTIVES}, "
                    f"got {row['objective']!r}"
                )
            if row["open_weights"] not in ("yes", "no"):
                raise ValueError(
                    f"{path.name} line {line}: open_weights must be yes or no, "
                    f"got {row['open_weights']!r}"
                )
            if not row["name"].strip() or not row["source"].strip():
                raise ValueError(f"{path.name} line {line}: name and source are required")
            active = _number(row, "active_parameters", line)
            if active is not None and (_number(row, "parameters", line) or 0) < active:
                raise ValueError(
                    f"{path.name} line {line}: active_parameters needs parameters and must not "
                    f"exceed them, got {active:g} active of {row['parameters'] or 'no'} parameters"
                )
            rows.append(
                ModelRecord(
                    name=row["name"].strip(),
                    date=date,
                    organisation=row["organisation"].strip(),
                    parameters=_number(row, "parameters", line),
                    active_parameters=_number(row, "active_parameters", line),
                    training_tokens=_number(row, "training_tokens", line),
                    training_images=_number(row, "training_images", line),
                    modality=row["modality"],
                    objective=row["objective"],
                    open_weights=row["open_weights"] == "yes",
                    source=row["source"].strip(),
                    notes=row["notes"].strip(),
                )
            )
    return sorted(rows, key=lambda r: (r.date, r.name))


def compact(value: float | None, unit: str = "") -> str:
    """A number in three significant digits and a suffix (``175B``, ``1.5T``); ``—`` for None."""
    if value is None:
        return "—"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}{unit}"
    return f"{value:.3g}{unit}"


def table_html(rows: list[ModelRecord]) -> str:
    """The rows as an HTML table, numbers in :func:`compact` form (the notes left out)."""
    header = [
        "model",
        "date",
        "organisation",
        "parameters",
        "active",
        "tokens",
        "images",
        "modality",
        "objective",
        "open",
        "source",
    ]
    head = "".join(f"<th>{h}</th>" for h in header)
    body = []
    for r in rows:
        cells = (
            r.name,
            f"{r.date:%Y-%m}",
            r.organisation,
            compact(r.parameters),
            compact(r.active_parameters),
            compact(r.training_tokens),
            compact(r.training_images),
            r.modality,
            r.objective,
            "yes" if r.open_weights else "no",
            r.source,
        )
        body.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def size_chart(rows: list[ModelRecord], modality: str = "all"):
    """Parameters against date on a log axis, coloured by objective; a square marks closed
    weights. Rows without a published size sit on a strip below. Returns the figure."""
    import matplotlib.pyplot as plt  # loaded on first plot: the table itself needs no plotting

    if modality != "all" and modality not in MODALITIES:
        raise ValueError(
            f"size_chart: modality must be 'all' or one of {MODALITIES}, got {modality!r}"
        )
    shown = [r for r in rows if modality == "all" or r.modality == modality]
    fig, (ax, strip) = plt.subplots(
        2, 1, figsize=(7.5, 4.8), sharex=True, gridspec_kw={"height_ratios": [5, 1.4]}
    )
    unpublished = 0
    for r in shown:
        c = OBJECTIVE_COLOURS[r.objective]
        if r.parameters is None:
            strip.plot(r.year, 0, "o", mfc="none", mec=c, ms=8)
            lift = 6 + 12 * (unpublished % 2)  # stagger neighbouring labels
            unpublished += 1
            strip.annotate(
                r.name,
                (r.year, 0),
                textcoords="offset points",
                xytext=(2, lift),
                fontsize=6,
                rotation=35,
                ha="left",
                va="bottom",
            )
        else:
            ax.plot(r.year, r.parameters, "o" if r.open_weights else "s", color=c, ms=6)
            ax.annotate(
                r.name,
                (r.year, r.parameters),
                textcoords="offset points",
                xytext=(4, 3),
                fontsize=6,
            )
    ax.set_yscale("log")
    ax.set_ylim(1e7, 3e12)
    ax.set_ylabel("parameters")
    ax.set_title(f"foundation models, {modality}" if modality != "all" else "foundation models")
    ax.grid(alpha=0.3, which="major")
    handles = [
        plt.Line2D([], [], color=c, marker="o", ls="", label=o)
        for o, c in OBJECTIVE_COLOURS.items()
    ]
    handles += [
        plt.Line2D([], [], color="gray", marker="o", ls="", label="open weights"),
        plt.Line2D([], [], color="gray", marker="s", ls="", label="closed"),
    ]
    ax.legend(handles=handles, fontsize=7, frameon=False, loc="upper left", ncol=2)
    strip.set_yticks([])
    strip.set_ylim(-0.6, 3.4)
    strip.set_ylabel("not\npublished", fontsize=7, rotation=0, ha="right", va="center")
    strip.set_xlabel("date of publication")
    strip.set_xlim(2017, 2026)
    fig.tight_layout()
    return fig
