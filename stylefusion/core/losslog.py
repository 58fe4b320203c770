"""One loss-log CSV writer: a row per step, rows past a resumed step dropped, values kept to draw the curve."""

from __future__ import annotations

import contextlib
import csv
import os
from array import array
from pathlib import Path
from typing import Mapping, Sequence

from .errors import OutputError
from .images import atomic_path, create_temp_file, write_failure


class LossLog:
    """A loss-log CSV, one row per step. On resume, rows after the resumed step are dropped first.

    Values are also kept in memory, one compact float array per column, to draw the loss curve. The first
    column is the step; `int_columns` are written as integers, the others with 6 significant digits unless
    `formats` gives a column its own format spec (e.g. {"seconds": ".3f"}). A `pending` log is written under a
    temporary name until `commit()` puts it at `path`, so a run that fails before it has anything to show leaves an
    earlier run's log as it was (`close()` removes an uncommitted one).
    """

    def __init__(self, path: Path, columns: Sequence[str], resume_step: int | None = None,
                 int_columns: Sequence[str] = ("step", "epoch"), formats: Mapping[str, str] | None = None,
                 pending: bool = False) -> None:
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
        self._pending: Path | None = None
        try:
            if pending:
                self._pending = create_temp_file(path)
                self._write_start(self._pending)
            else:
                with atomic_path(path) as tmp:
                    self._write_start(tmp)
            self._open(self._pending or path)
        except OSError as exc:
            if self._pending is not None:
                self._pending.unlink(missing_ok=True)
            raise OutputError(f"cannot write loss log {path}: {exc.strerror or exc}") from None

    def _write_start(self, path: Path) -> None:
        """The header and the rows kept from a resumed run."""
        with open(path, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(self.names)
            writer.writerows(self._format(values) for values in zip(*self.columns.values()))

    def _open(self, path: Path) -> None:
        self.file = open(path, "a", newline="")
        self.writer = csv.writer(self.file, lineterminator="\n")  # csv's default ends lines in \r\n, also on Linux

    def commit(self) -> None:
        """Put a pending log at its path (replacing an earlier run's); nothing for a log already there."""
        if self._pending is None:
            return
        self.flush()
        self.file.close()  # closed for the rename: Windows cannot rename an open file
        try:
            os.replace(self._pending, self.path)
        except OSError as exc:
            raise OutputError(f"cannot write loss log {self.path}: {exc.strerror or exc}") from None
        self._pending = None
        self._open(self.path)

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
        """Close the file (safe after a failed flush); a log never committed is removed."""
        with contextlib.suppress(OSError):  # a failed flush was reported already
            self.file.close()
        if self._pending is not None:
            self._pending.unlink(missing_ok=True)

    def draw(self, path: Path, curves: Sequence[str], title: str) -> Path:
        """Draw the `curves` columns that have a positive value against the step, as a PNG."""
        from .plotting import draw_loss_curve  # Pillow drawing, only needed when writing the PNG
        series = {k: self.columns[k] for k in curves if any(v > 0 for v in self.columns[k])}
        return draw_loss_curve([int(s) for s in self.columns[self.names[0]]], series, path, title=title)
