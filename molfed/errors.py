"""User-facing exceptions of molfed.

Exception texts end up in Prefect's database (as state messages) and in logs, so
they must never contain partner data: an :class:`InputError` names the file, the
row number and the column, never the value of a SMILES or label cell.

Row numbers are counted the way a user finds the row in the file:

* CSV/TSV: the line number in the (decompressed) file, header included, so the
  first data row is row 2 (a quoted cell with embedded newlines counts as the
  line it starts on);
* SDF: the 1-based record number (the first molecule is row 1);
* Parquet: the 1-based row index (the first row is row 1).
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["ConfigError", "InputError", "MolfedError"]


class MolfedError(Exception):
    """User-facing error; the CLI prints ``str(e)`` as one line and exits with code 2."""


class InputError(MolfedError):
    """A partner input file cannot be used.

    Parameters
    ----------
    message
        What is wrong, without any cell value from a SMILES or label column.
    path
        The file concerned, as given by the user.
    row
        Row number as a user counts it (see the module docstring).
    column
        Column (or SDF property) name.
    partner
        Partner name; when given, the text starts with ``partner '<name>': ``.

    Examples
    --------
    >>> str(InputError("label is not a number", path="libs/a.csv", row=7, column="expt"))
    "libs/a.csv, row 7, column 'expt': label is not a number"
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        row: int | None = None,
        column: str | None = None,
        partner: str | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.row = row
        self.column = column
        self.partner = partner
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.path is not None:
            where.append(str(self.path))
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        text = f"{', '.join(where)}: {self.message}" if where else self.message
        if self.partner is not None:
            text = f"partner {self.partner!r}: {text}"
        return text

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        # Keep the keyword-only fields when pickled (e.g. across process pools).
        rebuild = functools.partial(
            type(self),
            self.message,
            path=self.path,
            row=self.row,
            column=self.column,
            partner=self.partner,
        )
        return rebuild, ()


class ConfigError(MolfedError):
    """An experiment configuration is invalid; the caller supplies the message."""
