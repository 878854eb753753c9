"""The container manifest schema: reading, normalising and validating manifests.

Every manifest row that enters the engine passes through :func:`validate`. Rows that fail are
not dropped: they come back in ``rejects`` with the source row number, the column and a reason a
person can act on, and they can be written to a quarantine file. Rows in = valid + rejected.

Example
-------
>>> from riskengine.schema import read_manifests, validate
>>> df = read_manifests("arrivals.csv")                          # doctest: +SKIP
>>> result = validate(df)                                        # doctest: +SKIP
>>> len(result.valid) + result.n_rejected == len(df)             # doctest: +SKIP
True
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

ROW_COLUMN = "source_row"
MALFORMED_COLUMN = "_malformed"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # str | int | float | datetime | date | flag
    required: bool
    description: str


# The documented schema; datasets/manifest_schema.md is the human-readable version.
COLUMNS: tuple[Column, ...] = (
    Column("manifest_id", "str", True, "Unique id of the manifest line (one container on one B/L)."),
    Column("container_id", "str", True, "ISO 6346 container number with check digit, e.g. CSQU3054383."),
    Column("container_type", "str", True, "ISO 6346 size/type code, e.g. 22G1 (20 ft dry), 45R1 (40 ft high-cube reefer)."),
    Column("bl_number", "str", True, "Bill of lading number."),
    Column("vessel_imo", "str", True, "IMO ship number, 7 digits; an invalid check digit is a warning only."),
    Column("voyage", "str", True, "Carrier voyage number."),
    Column("carrier", "str", True, "Ocean carrier."),
    Column("shipper", "str", True, "Shipper (exporter) name."),
    Column("consignee", "str", True, "Consignee (importer) name."),
    Column("notify_party", "str", False, "Notify party; may be empty."),
    Column("origin_country", "str", True, "Country of origin of the goods, ISO 3166 alpha-2."),
    Column("port_of_loading", "str", True, "UN/LOCODE of the port of loading."),
    Column("transshipment_ports", "str", False, "UN/LOCODEs of transshipment ports in order, joined by ';' (empty when direct)."),
    Column("port_of_discharge", "str", True, "UN/LOCODE of the port of discharge."),
    Column("terminal", "str", False, "Terminal at the port of discharge, e.g. NLRTM-ECT."),
    Column("hs_code", "str", True, "Harmonized System code, 6 to 10 digits (empty only for empty containers)."),
    Column("goods_description", "str", True, "Goods description as declared; 'EMPTY CONTAINER' for empties."),
    Column("packages", "int", True, "Number of packages (0 for empty containers)."),
    Column("gross_weight_kg", "float", True, "Declared gross weight of the cargo in kg."),
    Column("vgm_kg", "float", True, "Verified gross mass (SOLAS) of the packed container in kg."),
    Column("declared_value", "float", True, "Declared value of the goods."),
    Column("currency", "str", True, "ISO 4217 currency of the declared value and freight."),
    Column("freight_charges", "float", False, "Freight charges, same currency."),
    Column("freight_payment", "str", True, "prepaid | collect | cash | third_party."),
    Column("seal_number", "str", True, "Seal number on the manifest."),
    Column("seal_number_gate", "str", False, "Seal number read at the terminal gate (optional)."),
    Column("filed_at", "datetime", True, "When the manifest was filed (UTC)."),
    Column("gate_in_at", "datetime", False, "Gate-in at the port of loading (UTC, optional)."),
    Column("cut_off_at", "datetime", False, "Vessel cut-off at the port of loading (UTC, optional)."),
    Column("last_amended_at", "datetime", False, "Last amendment of the manifest (UTC, optional)."),
    Column("arrival_date", "date", True, "Expected arrival date at the port of discharge."),
)

# Ground truth and history columns carried by generated data and by the outcome store.
PASSTHROUGH_COLUMNS: tuple[Column, ...] = (
    Column("is_illicit", "flag", False, "Ground truth / outcome: 1 when drugs were found."),
    Column("modus_operandi", "str", False, "Ground truth: none, rip_on_rip_off, front_company, misdeclaration, reefer_machinery, structural."),
    Column("concealment_location", "str", False, "Ground truth: none, cargo, doors, reefer_unit, walls, floor, roof."),
    Column("amount_kg", "float", False, "Ground truth: amount concealed in kg."),
    Column("inspected", "flag", False, "1 when the container was physically inspected."),
    Column("selection", "str", False, "How an inspected container was selected: none, random, targeted."),
    Column("outcome_at", "datetime", False, "When the inspection outcome became known."),
)

MANIFEST_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS)
REQUIRED_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.required)
OPTIONAL_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if not c.required)
_SPEC = {c.name: c for c in COLUMNS + PASSTHROUGH_COLUMNS}

FREIGHT_PAYMENTS = ("prepaid", "collect", "cash", "third_party")
EMPTY_DESCRIPTION = "EMPTY CONTAINER"
MAX_FIELD_CHARS = {"goods_description": 2000}
DEFAULT_MAX_FIELD_CHARS = 256
MAX_WEIGHT_KG = 60_000.0

# ISO 3166-1 alpha-2 (officially assigned codes).
ISO_COUNTRIES = frozenset(
    """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR
    BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC
    EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK
    HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB
    LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ
    NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU
    RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN
    TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW""".split()
)

_LOCODE = r"[A-Z]{2}[A-Z2-9]{3}"


class SchemaError(ValueError):
    """The input as a whole does not fit the schema (e.g. a required column is missing)."""


@dataclass
class ValidationResult:
    """Outcome of :func:`validate`.

    ``valid`` holds normalised rows (typed columns, ``source_row`` kept); ``rejects`` holds the
    rejected rows as received plus ``source_row``, ``reject_column``, ``reject_reason`` (the first
    problem) and ``reject_reasons`` (all problems, joined by "; "). ``warnings`` lists problems
    that do not reject a row (e.g. an IMO number with a bad check digit).
    """

    valid: pd.DataFrame
    rejects: pd.DataFrame
    warnings: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=[ROW_COLUMN, "column", "message"]))

    @property
    def n_valid(self) -> int:
        return len(self.valid)

    @property
    def n_rejected(self) -> int:
        return len(self.rejects)

    def top_reasons(self, n: int = 10) -> pd.DataFrame:
        """The most frequent reject reasons (by column and reason class) with counts."""
        if self.rejects.empty:
            return pd.DataFrame(columns=["column", "reason", "rows"])
        reason_class = (self.rejects["reject_reason"].astype(str)
                        .str.replace(r"'[^']*'", "'…'", regex=True)
                        .str.replace(r"^(\w+) -?\d[\d.,eE+-]*", r"\1 …", regex=True)
                        .str.replace(r"row \d+", "row …", regex=True))
        counts = (
            pd.DataFrame({"column": self.rejects["reject_column"], "reason": reason_class})
            .value_counts()
            .rename("rows")
            .reset_index()
        )
        return counts.head(n)

    def write_quarantine(self, path: str | Path) -> Path:
        """Write the rejected rows (with reasons) to CSV or Parquet, by extension."""
        return write_table(self.rejects, path)


# --------------------------------------------------------------------------------------------
# Check digits (vectorised)
# --------------------------------------------------------------------------------------------

def _iso6346_letter_values() -> np.ndarray:
    # Letters take 10..38 skipping multiples of 11 (11, 22, 33), digits their own value.
    values = np.full(128, -1, dtype=np.int64)
    values[ord("0"): ord("9") + 1] = np.arange(10)
    v = 10
    for ch in range(ord("A"), ord("Z") + 1):
        if v % 11 == 0:
            v += 1
        values[ch] = v
        v += 1
    return values


_ISO6346_VALUES = _iso6346_letter_values()
_ISO6346_WEIGHTS = 2 ** np.arange(10, dtype=np.int64)


def _char_matrix(s: pd.Series, width: int) -> np.ndarray:
    """Strings of exactly ``width`` ASCII characters as an (n, width) array of code points."""
    arr = s.to_numpy(dtype=f"U{width}")
    return arr.view(np.uint32).reshape(len(arr), width).astype(np.int64)


def iso6346_valid(container_id: pd.Series) -> pd.Series:
    """True where the value is an ISO 6346 container number with a correct check digit.

    >>> iso6346_valid(pd.Series(["CSQU3054383", "CSQU3054384"])).tolist()
    [True, False]
    """
    s = container_id.astype("string").fillna("")
    fmt = s.str.fullmatch(r"[A-Z]{3}[UJZR]\d{7}").fillna(False).to_numpy(dtype=bool)
    ok = np.zeros(len(s), dtype=bool)
    if fmt.any():
        codes = _char_matrix(s[fmt], 11)
        total = (_ISO6346_VALUES[codes[:, :10]] * _ISO6346_WEIGHTS).sum(axis=1)
        check = total % 11 % 10
        ok[fmt] = check == (codes[:, 10] - ord("0"))
    return pd.Series(ok, index=container_id.index)


def iso6346_check_digit(prefix: str) -> int:
    """Check digit for the first 10 characters of a container number (owner code + serial)."""
    codes = np.array([ord(c) for c in prefix.upper()], dtype=np.int64)
    return int((_ISO6346_VALUES[codes] * _ISO6346_WEIGHTS).sum() % 11 % 10)


def imo_valid(imo: pd.Series) -> pd.Series:
    """True where a 7-digit IMO number has a correct check digit (weights 7..2 on digits 1-6)."""
    s = imo.astype("string").fillna("")
    fmt = s.str.fullmatch(r"\d{7}").fillna(False).to_numpy(dtype=bool)
    ok = np.zeros(len(s), dtype=bool)
    if fmt.any():
        d = _char_matrix(s[fmt], 7) - ord("0")
        total = (d[:, :6] * np.arange(7, 1, -1)).sum(axis=1)
        ok[fmt] = total % 10 == d[:, 6]
    return pd.Series(ok, index=imo.index)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

def _detect_encoding(sample: bytes) -> str:
    if sample.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"  # the codec reads the byte-order mark
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        # A multi-byte character may be cut at the sample's end.
        if exc.start >= len(sample) - 3:
            return "utf-8"
        try:
            sample.decode("cp1252")
        except UnicodeDecodeError:
            # Bytes Windows-1252 leaves undefined (0x81, 0x8D, ...): Latin-1 maps every byte.
            log.warning("input is neither UTF-8 nor Windows-1252 (byte %d); reading it as Latin-1", exc.start)
            return "latin-1"
        log.warning("input is not UTF-8 (byte %d); reading it as Windows-1252", exc.start)
        return "cp1252"


def _detect_delimiter(text: str) -> str:
    try:
        return csv.Sniffer().sniff(text.split("\n", 1)[0], delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def iter_manifest_chunks(
    path: str | Path, *, chunk_rows: int = 250_000, columns: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    """Stream a CSV or Parquet manifest file in chunks of about ``chunk_rows`` rows.

    CSV columns arrive as strings (so HS codes keep their leading zeros); the delimiter and
    encoding are detected. Lines that cannot be parsed (wrong number of fields, bad quoting) are
    not dropped: they come as rows whose ``_malformed`` column says why, and :func:`validate`
    rejects them. Every chunk carries ``source_row`` (1-based data row in the file).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"manifest file not found: {p}")
    if p.is_dir():
        raise IsADirectoryError(f"expected a CSV or Parquet file, got a directory: {p}")
    suffix = p.suffix.lower()
    if suffix in (".parquet", ".pq"):
        yield from _iter_parquet(p, chunk_rows, columns)
    elif suffix in (".csv", ".txt", ".tsv", ".gz"):
        yield from _iter_csv(p, chunk_rows, columns)
    else:
        raise ValueError(f"unsupported manifest file type {p.suffix!r} for {p}: expected .csv or .parquet")


def _iter_parquet(p: Path, chunk_rows: int, columns: list[str] | None) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(p)
    except Exception as exc:  # pyarrow raises several types for broken files
        raise ValueError(f"cannot read Parquet file {p}: {exc}") from exc
    cols = None
    if columns is not None:
        cols = [c for c in columns if c in pf.schema_arrow.names]
    start = 0
    batches = pf.iter_batches(batch_size=chunk_rows, columns=cols)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # a damaged page surfaces only when it is read
            raise ValueError(f"cannot read Parquet file {p} after row {start}: {exc}") from exc
        df = batch.to_pandas()
        df[ROW_COLUMN] = np.arange(start + 1, start + len(df) + 1)
        start += len(df)
        yield df


def _iter_csv(p: Path, chunk_rows: int, columns: list[str] | None) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from riskengine.csvsafe import unescape_formulas

    opener = _open_maybe_gzip(p)
    with opener() as fh:
        sample = fh.read(1 << 20)
    if not sample.strip():
        raise ValueError(f"manifest file is empty: {p}")
    nul = sample.find(b"\x00")
    if nul >= 0 and not sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError(
            f"{p} is not a text CSV file: it holds NUL bytes (the first at byte {nul}), as binary "
            "files do. Expected delimited text (UTF-8, UTF-16 with a byte-order mark, or "
            "Windows-1252); export the manifests as CSV or Parquet."
        )
    encoding = _detect_encoding(sample)
    text = sample.decode(encoding, errors="replace")
    delimiter = _detect_delimiter(text)
    header = next(csv.reader(io.StringIO(text.split("\n", 1)[0]), delimiter=delimiter))
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise SchemaError(f"{p}: duplicate column names in the header: {dup}")

    malformed: list[tuple[int | None, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        malformed.append((row.number, row.text))
        return "skip"

    read_opts = pacsv.ReadOptions(
        encoding="utf8" if encoding.startswith("utf-8") else encoding,
        block_size=8 << 20,
        column_names=header,
        skip_rows=1,
        use_threads=False,
    )
    parse_opts = pacsv.ParseOptions(
        delimiter=delimiter, invalid_row_handler=on_invalid, newlines_in_values=False
    )
    conv_opts = pacsv.ConvertOptions(
        column_types={h: pa.string() for h in header},
        include_columns=[h for h in header if columns is None or h in columns or h == ""],
        strings_can_be_null=True,
        null_values=[""],
        quoted_strings_can_be_null=True,
    )
    with opener() as fh:
        if encoding == "utf-8-sig":
            fh.read(3)
        stream = fh
        if encoding != "utf-16":  # the cap counts single-byte newlines
            stream = io.BufferedReader(_LineCappedReader(fh, MAX_LINE_BYTES), buffer_size=1 << 20)
        try:
            reader = pacsv.open_csv(stream, read_options=read_opts, parse_options=parse_opts, convert_options=conv_opts)
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot parse CSV file {p}: {exc}") from exc
        emitted = 0
        pending: list[pd.DataFrame] = []
        pending_rows = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
                hint = ""
                if isinstance(exc, UnicodeDecodeError) or "UTF8" in str(exc):
                    hint = (f" (read as {encoding} from its first MiB; the file mixes encodings: "
                            "convert it to UTF-8)")
                raise ValueError(f"cannot parse CSV file {p} after row {emitted + pending_rows}: {exc}{hint}") from exc
            if batch.num_rows:
                # a CSV the engine wrote escapes formula cells (riskengine.csvsafe): read back
                # the values themselves
                pending.append(unescape_formulas(batch.to_pandas()))
                pending_rows += batch.num_rows
            if pending_rows + len(malformed) >= chunk_rows:
                emitted = yield from _emit_csv_chunk(pending, malformed, emitted, header, delimiter)
                pending, pending_rows, malformed[:] = [], 0, []
        if pending or malformed:
            yield from _emit_csv_chunk(pending, malformed, emitted, header, delimiter)


def _split_malformed(malformed, header, delimiter):
    """Split what the CSV parser refused into physical lines.

    An unclosed quote makes the parser swallow the following lines into one record; those
    lines are re-read on their own so that only the broken line is rejected.
    """
    good: list[tuple[int | None, list[str]]] = []
    bad: list[tuple[int | None, str, str]] = []
    for number, text in malformed:
        if (text or "").startswith(_LONG_LINE_MARK):
            size = text[len(_LONG_LINE_MARK):].strip()
            bad.append((None if number is None else number - 1,
                        f"line is {int(size or 0):,} bytes long, more than the limit of "
                        f"{MAX_LINE_BYTES:,} bytes per line, and was not read (a manifest line is a "
                        "few hundred bytes: look for a pasted document or a missing line break)", ""))
            continue
        lines = (text or "").split("\n")
        for k, line in enumerate(lines):
            line_no = None if number is None else number - 1 + k  # pyarrow counts the header line
            fields = next(csv.reader([line], delimiter=delimiter), [])
            if k > 0 and len(fields) == len(header):
                good.append((line_no, fields))
                continue
            why = (
                f"malformed line: {len(fields)} fields where the header has {len(header)} "
                f"(check quoting and the delimiter {delimiter!r}); line starts {line[:80]!r}"
            )
            bad.append((line_no, why, line))
    return good, bad


def _emit_csv_chunk(pending, malformed, emitted, header, delimiter):
    good = pd.concat(pending, ignore_index=True) if pending else pd.DataFrame(columns=header, dtype="string")
    recovered, bad = _split_malformed(malformed, header, delimiter)
    if recovered:
        rec = pd.DataFrame([f for _, f in recovered], columns=header, dtype="string")
        rec = rec.mask(rec == "", pd.NA)
    total = len(good) + len(recovered) + len(bad)
    # Refused lines keep their place: the rows the parser accepted are numbered around them.
    special = [n for n, _ in recovered] + [n for n, _, _ in bad]
    known = sorted(n - emitted for n in special if n is not None and 0 < n - emitted <= total)
    slots = np.ones(total, dtype=bool)
    if known:
        slots[np.array(known) - 1] = False
    good_rows = np.flatnonzero(slots)[: len(good)] + emitted + 1
    good[ROW_COLUMN] = good_rows
    frames = [good]
    used = set(good_rows.tolist()) | {n for n in special if n is not None}
    free = (n for n in range(emitted + 1, emitted + 2 * total + 2) if n not in used)
    if recovered:
        rec[ROW_COLUMN] = [n if n is not None else next(free) for n, _ in recovered]
        frames.append(rec)
    if bad:
        frames.append(pd.DataFrame({
            ROW_COLUMN: [n if n is not None else next(free) for n, _, _ in bad],
            MALFORMED_COLUMN: [why for _, why, _ in bad],
        }))
    out = pd.concat(frames, ignore_index=True).sort_values(ROW_COLUMN, kind="stable").reset_index(drop=True)
    yield out
    return emitted + total


#: Longest CSV line read; a longer line becomes one rejected row (memory stays bounded).
MAX_LINE_BYTES = 1 << 20
_LONG_LINE_MARK = "\x1fline-too-long:"


class _LineCappedReader(io.RawIOBase):
    """A byte stream passed through unchanged, except that a line longer than ``limit`` bytes is
    replaced by one short marker line (which the CSV parser refuses, so it becomes a rejected
    row). One runaway field, such as a 20 MB goods description, then costs one row, not the
    memory or the whole file. At most ``limit`` bytes of a line are held at a time.
    """

    _PIECE = 1 << 20

    def __init__(self, raw, limit: int) -> None:
        super().__init__()
        self._raw, self._limit = raw, limit
        self._out = bytearray()   # bytes ready to hand out
        self._line = bytearray()  # the current, unfinished line
        self._skipped = 0         # bytes of the over-long line being dropped (0: none)
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._out and not self._eof:
            self._fill()
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        del self._out[:n]
        return n

    def _marker(self) -> bytes:
        size, self._skipped = self._skipped, 0
        return f"{_LONG_LINE_MARK}{size}\n".encode("ascii")

    def _fill(self) -> None:
        data = self._raw.read(self._PIECE)
        if not data:
            self._eof = True
            if self._skipped:
                self._out += self._marker()
            self._out += self._line
            self._line = bytearray()
            return
        nl = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
        if not self._skipped:
            if not len(nl):
                if len(self._line) + len(data) <= self._limit:
                    self._line += data
                    return
            elif (len(self._line) + nl[0] + 1 <= self._limit and len(data) - nl[-1] - 1 <= self._limit
                  and (len(nl) < 2 or np.diff(nl).max() <= self._limit)):
                self._out += self._line
                self._out += data[: nl[-1] + 1]
                self._line = bytearray(data[nl[-1] + 1:])
                return
        # An over-long line starts or continues in this piece: go line by line (rare).
        start = 0
        for end in [*nl.tolist(), None]:
            seg = data[start:] if end is None else data[start: end + 1]
            if self._skipped or len(self._line) + len(seg) > self._limit:
                self._skipped += len(self._line) + len(seg)
                self._line = bytearray()
                if end is not None:
                    self._out += self._marker()
            elif end is None:
                self._line += seg
            else:
                self._out += self._line
                self._out += seg
                self._line = bytearray()
            if end is None:
                break
            start = end + 1


def _open_maybe_gzip(p: Path):
    if p.suffix.lower() == ".gz":
        import gzip

        return lambda: gzip.open(p, "rb")
    return lambda: open(p, "rb")


def read_manifests(path: str | Path, *, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a whole CSV or Parquet manifest file (see :func:`iter_manifest_chunks`)."""
    chunks = list(iter_manifest_chunks(path, columns=columns))
    if not chunks:
        return pd.DataFrame(columns=list(MANIFEST_COLUMNS) + [ROW_COLUMN])
    return pd.concat(chunks, ignore_index=True)


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a frame to CSV or Parquet by the file's extension, creating parent folders.

    A CSV has its formula cells escaped (:func:`riskengine.csvsafe.write_csv`): quarantine
    files repeat what the sender wrote, and analysts open them in spreadsheets.
    """
    from riskengine.csvsafe import write_csv

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix.lower() in (".parquet", ".pq"):
        df.to_parquet(p, index=False)
    elif p.suffix.lower() in (".csv", ".txt"):
        write_csv(df, p)
    else:
        raise ValueError(f"unsupported output type {p.suffix!r} for {p}: use .csv or .parquet")
    return p


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

class _Problems:
    """Collects (row mask, column, reason) triples; the first problem of a row is its headline."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.first_col = np.full(n, None, dtype=object)
        self.first_reason = np.full(n, None, dtype=object)
        self.all_reasons: list[tuple[np.ndarray, pd.Series | str]] = []

    def add(self, mask: np.ndarray | pd.Series, column: str, reason: pd.Series | str) -> None:
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        if isinstance(reason, _Lazy):
            idx = np.flatnonzero(mask)
            full = np.empty(self.n, dtype=object)
            full[idx] = reason.at(idx)
            reason = full
        reasons = reason if isinstance(reason, str) else np.asarray(reason, dtype=object)
        new = mask & (self.first_reason == None)  # noqa: E711 - elementwise on object array
        self.first_col[new] = column
        self.first_reason[new] = reasons if isinstance(reasons, str) else reasons[new]
        self.all_reasons.append((mask, reasons))

    @property
    def rejected(self) -> np.ndarray:
        return self.first_reason != None  # noqa: E711

    def joined(self, idx: np.ndarray, only_first: np.ndarray | None = None) -> list[str]:
        if only_first is not None:
            skip = only_first[idx]
        else:
            skip = np.zeros(len(idx), dtype=bool)
        parts: list[list[str]] = [[] for _ in idx]
        pos = {int(i): k for k, i in enumerate(idx)}
        for mask, reasons in self.all_reasons:
            for i in np.flatnonzero(mask):
                if int(i) in pos and not (skip[pos[int(i)]] and parts[pos[int(i)]]):
                    parts[pos[int(i)]].append(reasons if isinstance(reasons, str) else str(reasons[i]))
        return ["; ".join(p) for p in parts]


def _as_string(s: pd.Series) -> pd.Series:
    """As pandas' NA-aware Arrow string dtype; Arrow-backed input converts without a copy."""
    if isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow":
        if s.dtype.na_value is pd.NA:
            return s
        import pyarrow as pa

        return pd.Series(pd.array(pa.array(s), dtype="string"), index=s.index)
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    return s.astype("string")


def _clean_str(s: pd.Series) -> pd.Series:
    out = _as_string(s).str.strip()
    return out.mask(out == "", pd.NA)


def _quote(s: pd.Series) -> pd.Series:
    return "'" + s.astype(object).where(s.notna(), "").astype(str).str.slice(0, 60) + "'"


class _Lazy:
    """A reason text built only for the rows that need it: prefix + 'value' + suffix."""

    def __init__(self, prefix: str, values: pd.Series, suffix: str, *, quote: bool = True,
                 tail: pd.Series | None = None, tail_suffix: str = "") -> None:
        self.prefix, self.values, self.suffix, self.quote = prefix, values, suffix, quote
        self.tail, self.tail_suffix = tail, tail_suffix

    def at(self, idx: np.ndarray) -> np.ndarray:
        v = self.values.iloc[idx].reset_index(drop=True)
        txt = _quote(v) if self.quote else v.astype(object).astype(str)
        out = self.prefix + txt + self.suffix
        if self.tail is not None:
            out = out + self.tail.iloc[idx].reset_index(drop=True).astype(object).astype(str) + self.tail_suffix
        return out.to_numpy(dtype=object)


def regex_replace(s: pd.Series, pattern: str, replacement: str) -> pd.Series:
    """``s.str.replace(pattern, replacement, regex=True)`` in Arrow (RE2), keeping the dtype.

    pandas falls back to a Python loop per element for regex replacement; this runs in
    Arrow's compute kernels instead (RE2 syntax: no look-arounds or back-references).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pc.replace_substring_regex(pa.array(_as_string(s)), pattern, replacement)
    dtype = s.dtype if isinstance(s.dtype, pd.StringDtype) else "string"
    return pd.Series(pd.array(arr, dtype=dtype), index=s.index, name=s.name)


_re_replace = regex_replace


def validate(df: pd.DataFrame, *, strict_columns: bool = True) -> ValidationResult:
    """Validate and normalise manifests.

    Returns a :class:`ValidationResult`. A missing required column raises :class:`SchemaError`
    naming every missing column (the batch cannot be interpreted at all); any other problem
    rejects only the rows concerned, with a reason, and the rest of the batch goes on.
    Normalisation: codes upper-cased and stripped, HS codes without dots, freight payment
    lower-cased with spelling variants mapped, dates parsed to naive UTC, arrival to the day.
    """
    if strict_columns:
        missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
        if missing:
            raise SchemaError(
                f"missing required column(s) {missing}; the file has "
                f"{sorted(c for c in map(str, df.columns) if c not in (ROW_COLUMN, MALFORMED_COLUMN))[:40]}. "
                "See datasets/manifest_schema.md for the schema."
            )
    n = len(df)
    raw = df.reset_index(drop=True)
    if ROW_COLUMN in raw.columns:
        rows = pd.to_numeric(raw[ROW_COLUMN], errors="coerce").fillna(-1).astype(np.int64).to_numpy()
    else:
        rows = np.arange(1, n + 1)
    out = pd.DataFrame(index=raw.index)
    out[ROW_COLUMN] = rows
    prob = _Problems(n)

    malformed = np.zeros(n, dtype=bool)
    if MALFORMED_COLUMN in raw.columns:
        malformed = raw[MALFORMED_COLUMN].notna().to_numpy()
        prob.add(malformed, "(line)", raw[MALFORMED_COLUMN].fillna(""))

    # ---- strings -------------------------------------------------------------------------
    upper_cols = {
        "container_id", "container_type", "vessel_imo", "origin_country", "port_of_loading",
        "transshipment_ports", "port_of_discharge", "terminal", "currency", "hs_code",
    }
    for col in (c for c in COLUMNS if c.kind == "str"):
        if col.name not in raw.columns:
            out[col.name] = pd.Series(pd.NA, index=raw.index, dtype="string")
            continue
        s = raw[col.name]
        if col.name == "transshipment_ports" and s.dtype == object \
                and s.map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any():
            s = s.map(lambda v: ";".join(v) if isinstance(v, (list, tuple, np.ndarray)) else v)
        s = _clean_str(s)
        if col.name in upper_cols:
            s = s.str.upper()
        limit = MAX_FIELD_CHARS.get(col.name, DEFAULT_MAX_FIELD_CHARS)
        too_long = s.str.len().fillna(0).to_numpy() > limit
        prob.add(too_long, col.name, f"{col.name} is longer than {limit} characters")
        if col.required and col.name != "hs_code":
            prob.add(s.isna().to_numpy(), col.name, f"{col.name} is missing (required)")
        out[col.name] = s

    desc = out["goods_description"].str.upper()
    is_empty = desc.str.startswith("EMPTY").fillna(False).to_numpy(dtype=bool)

    cid = _re_replace(out["container_id"], r"[\s-]", "")
    out["container_id"] = cid
    present = cid.notna().to_numpy()
    bad_cid = present & ~iso6346_valid(cid).to_numpy()
    prob.add(bad_cid, "container_id",
             _Lazy("container_id ", cid, " is not an ISO 6346 number with a valid check digit (e.g. CSQU3054383)"))

    ctype = out["container_type"]
    bad_type = ctype.notna().to_numpy() & ~ctype.str.fullmatch(r"[1-9ABCDEFGHKLMNP][0-9A-Z][A-Z][0-9A-Z]").fillna(False).to_numpy(dtype=bool)
    prob.add(bad_type, "container_type",
             _Lazy("container_type ", ctype, " is not an ISO 6346 size/type code (e.g. 22G1, 45R1)"))

    imo = _re_replace(out["vessel_imo"], r"^IMO\s*", "")
    out["vessel_imo"] = imo
    imo_fmt = imo.str.fullmatch(r"\d{7}").fillna(False).to_numpy(dtype=bool)
    prob.add(imo.notna().to_numpy() & ~imo_fmt, "vessel_imo",
             _Lazy("vessel_imo ", imo, " is not a 7-digit IMO number"))
    imo_warn = imo_fmt & ~imo_valid(imo).to_numpy()

    country = out["origin_country"]
    prob.add(country.notna().to_numpy() & ~country.isin(ISO_COUNTRIES).to_numpy(), "origin_country",
             _Lazy("origin_country ", country, " is not an ISO 3166 alpha-2 country code"))

    for col in ("port_of_loading", "port_of_discharge"):
        s = out[col]
        ok = s.str.fullmatch(_LOCODE).fillna(False).to_numpy(dtype=bool) & s.str.slice(0, 2).isin(ISO_COUNTRIES).to_numpy()
        prob.add(s.notna().to_numpy() & ~ok, col, _Lazy(col + " ", s, " is not a UN/LOCODE (e.g. NLRTM)"))

    ts = _re_replace(out["transshipment_ports"], r"[\s,|]+", ";").str.strip(";")
    ts = ts.mask(ts == "", pd.NA)
    ok_ts = ts.isna().to_numpy() | ts.str.fullmatch(rf"{_LOCODE}(;{_LOCODE})*").fillna(False).to_numpy(dtype=bool)
    prob.add(~ok_ts, "transshipment_ports",
             _Lazy("transshipment_ports ", ts, " must be UN/LOCODEs separated by ';'"))
    out["transshipment_ports"] = ts.fillna("")

    hs = _re_replace(out["hs_code"], r"[.\s]", "")
    hs_ok = hs.str.fullmatch(r"\d{6,10}").fillna(False).to_numpy(dtype=bool)
    hs_missing = hs.isna().to_numpy()
    prob.add(hs_missing & ~is_empty, "hs_code", "hs_code is missing (required unless the container is declared empty)")
    prob.add(~hs_missing & ~hs_ok, "hs_code", _Lazy("hs_code ", hs, " must be 6 to 10 digits"))
    out["hs_code"] = hs.fillna("")

    cur = out["currency"]
    prob.add(cur.notna().to_numpy() & ~cur.str.fullmatch(r"[A-Z]{3}").fillna(False).to_numpy(dtype=bool),
             "currency", _Lazy("currency ", cur, " is not an ISO 4217 code (e.g. EUR, USD)"))

    fp = _re_replace(out["freight_payment"].str.lower(), r"[\s-]+", "_")
    fp = fp.replace({"pre_paid": "prepaid", "thirdparty": "third_party", "3rd_party": "third_party"})
    prob.add(fp.notna().to_numpy() & ~fp.isin(FREIGHT_PAYMENTS).to_numpy(), "freight_payment",
             _Lazy("freight_payment ", fp, f" must be one of {list(FREIGHT_PAYMENTS)}"))
    out["freight_payment"] = fp

    # ---- numbers -------------------------------------------------------------------------
    for col in (c for c in COLUMNS if c.kind in ("int", "float")):
        if col.name not in raw.columns:
            out[col.name] = np.nan
            continue
        s = raw[col.name]
        if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
            s = _clean_str(s).str.replace(",", "", regex=False)
        num = pd.to_numeric(s, errors="coerce").astype("float64")
        given = s.notna().to_numpy()
        not_number = given & num.isna().to_numpy()
        prob.add(not_number, col.name, _Lazy(col.name + " ", s, " is not a number"))
        if col.required:
            prob.add(~given, col.name, f"{col.name} is missing (required)")
        v = num.to_numpy()
        prob.add(np.isinf(v), col.name, f"{col.name} is infinite")
        prob.add(np.nan_to_num(v, nan=0.0, posinf=0, neginf=0) < 0, col.name,
                 _Lazy(col.name + " ", num, " is negative", quote=False))
        out[col.name] = num

    pk = out["packages"].to_numpy()
    frac = np.isfinite(pk) & (pk != np.floor(np.nan_to_num(pk)))
    prob.add(frac, "packages", _Lazy("packages ", out["packages"], " is not a whole number", quote=False))
    out["packages"] = pd.array(np.where(np.isfinite(pk), np.round(np.nan_to_num(pk)), np.nan), dtype="Float64").astype("Int64")
    for col in ("gross_weight_kg", "vgm_kg"):
        v = out[col].to_numpy()
        prob.add(v > MAX_WEIGHT_KG, col, _Lazy(f"{col} ", out[col], f" kg exceeds {MAX_WEIGHT_KG:,.0f} kg", quote=False))
    gw = out["gross_weight_kg"].to_numpy()
    prob.add((gw == 0) & ~is_empty, "gross_weight_kg", "gross_weight_kg is 0 for a container not declared empty")
    prob.add(out["vgm_kg"].to_numpy() == 0, "vgm_kg", "vgm_kg is 0 (the verified gross mass includes the tare)")

    # ---- dates ---------------------------------------------------------------------------
    for col in (c for c in COLUMNS if c.kind in ("datetime", "date")):
        if col.name not in raw.columns:
            out[col.name] = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
            continue
        parsed, bad = _parse_datetime(raw[col.name])
        prob.add(bad, col.name, _Lazy(col.name + " ", raw[col.name],
                       " is not a date/time (use ISO 8601, e.g. 2026-03-01T14:30:00Z)"))
        if col.required:
            prob.add(parsed.isna().to_numpy() & ~bad, col.name, f"{col.name} is missing (required)")
        out[col.name] = parsed.dt.normalize() if col.kind == "date" else parsed

    # ---- passthrough (ground truth, history) ----------------------------------------------
    for col in PASSTHROUGH_COLUMNS:
        if col.name not in raw.columns:
            continue
        s = raw[col.name]
        if col.kind == "flag":
            num = pd.to_numeric(_clean_str(s) if s.dtype == object or pd.api.types.is_string_dtype(s.dtype) else s, errors="coerce")
            bad = s.notna().to_numpy() & ~num.isin([0, 1]).to_numpy()
            prob.add(bad, col.name, _Lazy(col.name + " ", s, " must be 0 or 1"))
            out[col.name] = num.fillna(0).clip(0, 1).astype(np.int8)
        elif col.kind == "float":
            out[col.name] = pd.to_numeric(s, errors="coerce").astype("float64")
        elif col.kind == "datetime":
            out[col.name], _ = _parse_datetime(s)
        else:
            out[col.name] = _clean_str(s)

    # ---- duplicates (after cleaning, among rows otherwise valid first) ----------------------
    # The first row that is otherwise valid keeps the id; later ones are duplicates.
    mid = out["manifest_id"]
    candidates = mid.notna().to_numpy() & ~prob.rejected
    dup = np.zeros(n, dtype=bool)
    dup[candidates] = mid[candidates].duplicated(keep="first").to_numpy()
    if dup.any():
        first_row = pd.Series(rows[candidates], index=mid[candidates].to_numpy()).groupby(level=0).first()
        first_of = mid.map(first_row).astype("Int64").astype(str)
        prob.add(dup, "manifest_id",
                 _Lazy("duplicate manifest_id ", mid, " (first seen at row ", tail=first_of, tail_suffix=")"))

    rejected = prob.rejected
    valid = out.loc[~rejected].reset_index(drop=True)
    rej_idx = np.flatnonzero(rejected)
    rejects = raw.iloc[rej_idx].drop(columns=[MALFORMED_COLUMN], errors="ignore").reset_index(drop=True)
    rejects[ROW_COLUMN] = rows[rej_idx]
    rejects["reject_column"] = prob.first_col[rej_idx]
    rejects["reject_reason"] = prob.first_reason[rej_idx]
    rejects["reject_reasons"] = prob.joined(rej_idx, only_first=malformed)

    warn_idx = np.flatnonzero(imo_warn & ~rejected)
    warnings = pd.DataFrame({
        ROW_COLUMN: rows[warn_idx],
        "column": "vessel_imo",
        "message": ("vessel_imo " + _quote(imo.iloc[warn_idx]) + " has an invalid IMO check digit (kept)").to_numpy(),
    })
    if len(warn_idx):
        log.warning("%d row(s) with an invalid IMO check digit kept (warning only)", len(warn_idx))
    if len(rej_idx):
        log.info("validation: %d valid, %d rejected", len(valid), len(rej_idx))
    return ValidationResult(valid=valid, rejects=rejects, warnings=warnings)


def _parse_datetime(s: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Parse to naive UTC datetimes; returns (parsed, mask of non-empty values that failed)."""
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        parsed = s
        if getattr(s.dt, "tz", None) is not None:
            parsed = s.dt.tz_convert("UTC").dt.tz_localize(None)
        given = parsed.notna().to_numpy()
    else:
        clean = _clean_str(s)
        parsed = pd.to_datetime(clean, errors="coerce", utc=True, format="ISO8601").dt.tz_localize(None)
        given = clean.notna().to_numpy()
    # Years outside 1677-2262 do not fit in nanoseconds (a placeholder such as 0001-01-01, or a
    # typo): they fail like any unreadable date instead of failing the whole batch.
    in_range = parsed.isna() | ((parsed >= pd.Timestamp.min) & (parsed <= pd.Timestamp.max))
    parsed = parsed.where(in_range).astype("datetime64[ns]")
    bad = given & parsed.isna().to_numpy()
    return parsed, bad


def validate_file(
    path: str | Path,
    *,
    quarantine: str | Path | None = None,
    chunk_rows: int = 250_000,
    progress=None,
) -> dict:
    """Validate a whole file chunk by chunk; write rejects to ``quarantine`` (CSV/Parquet).

    Returns counts and the top reasons. ``progress`` is an optional callable(rows_done).
    """
    n_in = n_valid = n_rej = n_warn = 0
    reasons: dict[tuple[str, str], int] = {}
    rejects: list[pd.DataFrame] = []
    for chunk in iter_manifest_chunks(path, chunk_rows=chunk_rows):
        res = validate(chunk)
        n_in += len(chunk)
        n_valid += res.n_valid
        n_rej += res.n_rejected
        n_warn += len(res.warnings)
        for _, r in res.top_reasons(50).iterrows():
            reasons[(r["column"], r["reason"])] = reasons.get((r["column"], r["reason"]), 0) + int(r["rows"])
        if res.n_rejected:
            rejects.append(res.rejects)
        if progress is not None:
            progress(len(chunk))
    if quarantine is not None:
        all_rej = pd.concat(rejects, ignore_index=True) if rejects else pd.DataFrame(
            columns=[ROW_COLUMN, "reject_column", "reject_reason", "reject_reasons"])
        write_table(all_rej.astype({c: "string" for c in all_rej.columns if all_rej[c].dtype == object}), quarantine)
    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:10]
    return {
        "rows": n_in,
        "valid": n_valid,
        "rejected": n_rej,
        "warnings": n_warn,
        "top_reasons": [{"column": c, "reason": r, "rows": k} for (c, r), k in top],
        "quarantine": str(quarantine) if quarantine is not None else None,
    }
