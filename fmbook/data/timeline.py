"""The table of foundation models behind the history chapter's timeline.

``models.csv`` (beside this file) lists one model per row: name, date
(``YYYY-MM``, the month the model or its paper was first made public),
organisation, parameters, the parameters active for each token (mixtures of
experts only; empty for a dense model, which uses all of them), training
tokens (tokens seen in pretraining) or images (the size of the training set,
images or image-text pairs), modality, objective, open weights, and the
``book/references.bib`` key of the source of its numbers. A number the source
does not publish is left empty and loads as ``None``; it is never estimated.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

TABLE = Path(__file__).with_name("models.csv")
MODALITIES = ("text", "code", "image", "text-image")
OBJECTIVES = ("causal", "masked", "seq2seq", "diffusion", "contrastive")
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
        """The parameters that process each token: the active ones of a mixture of experts, else all."""
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
        raise ValueError(f"{TABLE.name} line {line}: {column} must be positive or empty, got {value}")
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
                    f"{path.name} line {line}: modality must be one of {MODALITIES}, got {row['modality']!r}"
                )
            if row["objective"] not in OBJECTIVES:
                raise ValueError(
                    f"{path.name} line {line}: objective must be one of {OBJECTIVES}, got {row['objective']!r}"
                )
            if row["open_weights"] not in ("yes", "no"):
                raise ValueError(
                    f"{path.name} line {line}: open_weights must be yes or no, got {row['open_weights']!r}"
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
