"""One loss-log CSV writer: a row per step, rows past a resumed step dropped, values kept to draw the curve."""

from __future__ import annotations

import contextlib
import csv
from array import array
from pathlib import Path
from typing import Mapping, Sequence

from .errors import OutputError
from .images import atomic_path, write_failure


class LossLog:
    """A loss-log CSV, one row per step. On resume, rows after the resumed step are dropped first.

    Values are also kept in memory, one compact float array per column, to draw the loss curve. The first
    column is the step; `int_columns` are written as integers, the others with 6 significant digits unless
    `formats` gives a column its own format spec (e.g. {"seconds": ".3f"}).
    """

    def __init__(self, path: Path, columns: Sequence[str], resume_step: int | None = None,
                 int_columns: Sequence[str] = ("step", "epoch"), formats: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.names = tuple(columns)
        self.formats = [(formats or {}).get(k, "d" if k in int_columns else ".6g") for k in self.names]
        self.columns = {k: array("d") for k in self.names}
        if resume_step is not None and path.exists():
            try:
                with open(path, newline="") as f:
                    for row in csv.DictReader(f):
                        try:
                            values = [float(row[k]) for k in self.names]
                        except (KeyError, TypeError, ValueError):
                            continue  # a half-written last line
                        if values[0] <= resume_step:
                            self._keep(values)
            except OSError:
                self.columns = {k: array("d") for k in self.names}
        try:
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(self.names)
                writer.writerows(self._format(values) for values in zip(*self.columns.values()))
            self.file = open(path, "a", newline="")
        except OSError as exc:
            raise OutputError(f"cannot write loss log {path}: {exc.strerror or exc}") from None
        self.writer = csv.writer(self.file)

    def _keep(self, values: list[float]) -> None:
        for column, value in zip(self.columns.values(), values):
            column.append(value)

    def _format(self, values: Sequence[float]) -> list[str]:
        return [format(int(v) if spec == "d" else v, spec) for spec, v in zip(self.formats, values)]

    def add(self, row: Mapping[str, float]) -> None:
        """Append one row (a value for every column)."""
        values = [float(row[k]) for k in self.names]
        self._keep(values)
        try:
            self.writer.writerow(self._format(values))
        except OSError as exc:
            raise OutputError(f"cannot write loss log {self.path}: {write_failure(self.path, exc)}") from None

    def flush(self) -> None:
        """Push the rows to disk (OutputError when the disk refuses)."""
        try:
            self.file.flush()
        except OSError as exc:
            raise OutputError(f"cannot write loss log {self.path}: {write_failure(self.path, exc)}") from None

    def close(self) -> None:
        """Close the file; safe after a failed flush."""
        with contextlib.suppress(OSError):  # a failed flush was reported already
            self.file.close()

    def draw(self, path: Path, curves: Sequence[str], title: str) -> Path:
        """Draw the `curves` columns that have a positive value against the step, as a PNG."""
        from .plotting import draw_loss_curve  # Pillow drawing, only needed when writing the PNG
        series = {k: self.columns[k] for k in curves if any(v > 0 for v in self.columns[k])}
        return draw_loss_curve([int(s) for s in self.columns[self.names[0]]], series, path, title=title)
