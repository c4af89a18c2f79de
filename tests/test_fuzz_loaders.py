"""Property-based fuzzing of the three loaders that face users' files (libraries, run configs, site configs).

* ``read_library`` on random bytes, random CSV-ish text and random SMILES-like cells with random labels: it returns
  a Library whose molecules + merged duplicates + rejects account for every data row, or raises InputError with a
  one-line message -- never another exception.
* ``load_config`` on random YAML (mutations of a valid config, arbitrary mappings, raw text) and random ``--set``
  overrides: a valid RunConfig or a one-line ConfigError -- never another exception.
* ``load_site_config`` on the same kinds of input: a SiteConfig with a valid name, or a one-line ConfigError.
* A molecule is kept as written or rejected, never silently changed into another: each kept row's canonical SMILES
  equals the one its text denotes, read by RDKit where RDKit reads faithfully (ASCII, no inner whitespace).

Example counts are modest so the file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from molfed.chem.standardize import PARSE_REASONS, parse_smiles
from molfed.config import RunConfig, load_config
from molfed.data.library import Library, read_library
from molfed.errors import ConfigError, InputError

# A RuntimeWarning (e.g. a label overflowing float32) is a bug here, not noise.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SUFFIXES = (".csv", ".tsv", ".csv.gz", ".sdf", ".parquet")
SMILES_ALPHABET = "CNOSPFIclnos()[]=#@+-/\\.%*:0123456789HBr \t\"',\n"
LABELS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-5, 5).map(str),
    st.sampled_from(["", " ", "nan", "inf", "-Infinity", "1e400", "1_0", "0x1A", "true", "n/a", "1,5", "\x00"]),
    st.text(max_size=8),
)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="molfed-fuzz-") as tmp:
        yield Path(tmp)


def load(path: Path, task_type: str = "regression", duplicates: str = "merge") -> Library | None:
    """read_library, with the contract checked: a consistent Library, or a one-line InputError (-> None)."""
    try:
        library = read_library(
            path,
            label_columns=["y"],
            task_types=[task_type],  # type: ignore[list-item]
            duplicates=duplicates,  # type: ignore[arg-type]
            partner="fuzz",
        )
    except InputError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(f"partner 'fuzz': {path}")
        return None
    assert len(library) + library.n_duplicates_merged + len(library.rejects) == library.n_input_rows
    assert len(library) >= 1 and library.labels.shape == (len(library), 1)
    assert len({r.row for r in library.rejects}) == len(library.rejects)
    return library


@FUZZ
@given(data=st.binary(max_size=600), suffix=st.sampled_from(SUFFIXES), gzipped=st.booleans())
@example(data=b"smiles,y\n\xff\xfe,1\n", suffix=".csv", gzipped=False)
@example(data=b"PAR1\x00\x00PAR1", suffix=".parquet", gzipped=False)
@example(data=b"\n\nM  END\n$$$$\n", suffix=".sdf", gzipped=False)
def test_random_bytes(workdir, data, suffix, gzipped):
    path = workdir / f"bytes{suffix}"
    path.write_bytes(gzip.compress(data) if gzipped and suffix == ".csv.gz" else data)
    load(path)


def good_files() -> dict[str, bytes]:
    """A valid library per binary-ish format, to be corrupted byte by byte."""
    from rdkit import Chem

    sdf = io.StringIO()
    with Chem.SDWriter(sdf) as writer:
        for smiles, y in [("CCO", "1.5"), ("c1ccccc1O", "-2.25"), ("CC(=O)N", "0.5")]:
            mol = Chem.MolFromSmiles(smiles)
            mol.SetProp("y", y)
            writer.write(mol)
    parquet = io.BytesIO()
    pd.DataFrame({"smiles": ["CCO", "c1ccccc1O", "CC(=O)N"], "y": [1.5, -2.25, 0.5]}).to_parquet(parquet)
    csv_text = b"smiles,y\nCCO,1.5\nc1ccccc1O,-2.25\nCC(=O)N,0.5\n"
    return {".sdf": sdf.getvalue().encode(), ".parquet": parquet.getvalue(), ".csv.gz": gzip.compress(csv_text)}


GOOD = good_files()


@FUZZ
@given(
    suffix=st.sampled_from(sorted(GOOD)),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=4),
    cut=st.none() | st.floats(0, 1),
)
@example(suffix=".parquet", edits=[(0.015625, 128)], cut=None)  # undecodable text: pyarrow raised in tolist()
def test_corrupted_files(workdir, suffix, edits, cut):
    data = bytearray(GOOD[suffix])
    for where, byte in edits:
        data[int(where * len(data))] = byte
    path = workdir / f"corrupt{suffix}"
    path.write_bytes(bytes(data if cut is None else data[: int(cut * len(data))]))
    load(path)


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list('smiley,;\t"\n\r CNOc1()=[]+-.0123456789nafi')), max_size=300))
@example(text='smiles,y\n"CCO\n,1\n')
@example(text="smiles,y\n" + "C" * 140_000 + ",1\n")
def test_random_csv_text(workdir, text):
    path = workdir / "text.csv"
    path.write_text(text, encoding="utf-8")
    load(path)


ROWS = st.lists(
    st.tuples(st.text(alphabet=st.sampled_from(list(SMILES_ALPHABET)), max_size=24), LABELS),
    min_size=1,
    max_size=12,
)


@FUZZ
@given(
    rows=ROWS,
    valid=st.lists(st.sampled_from(["CCO", "c1ccccc1", "OCC", "CC(=O)O", "C1CC1"]), max_size=3),
    task_type=st.sampled_from(["regression", "classification"]),
    duplicates=st.sampled_from(["merge", "keep_first", "reject"]),
)
def test_random_smiles_and_labels(workdir, rows, valid, task_type, duplicates):
    """Quoted properly, so every generated row is a data row: each one is kept, merged or rejected."""
    all_rows = [(s, "1") for s in valid] + rows
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["smiles", "y"])
    writer.writerows(all_rows)
    path = workdir / "rows.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    library = load(path, task_type, duplicates)
    data_rows = sum(1 for row in all_rows if any(cell.strip() for cell in row))  # all-blank rows are blank lines
    if library is not None:
        assert library.n_input_rows == data_rows
        assert set(library.reject_counts()) <= {
            *PARSE_REASONS,
            "non_numeric_label",
            "non_finite_label",
            "invalid_class_label",
            "missing_label",
            "duplicate",
            "conflicting_duplicate",
        }


@FUZZ
@given(smiles=st.text(alphabet=st.sampled_from(list(SMILES_ALPHABET)), max_size=40) | st.text(max_size=20))
@example(smiles="CC O")
@example(smiles="C" * 20_000)
def test_parse_smiles_never_raises(smiles):
    mol, reason = parse_smiles(smiles)
    assert (mol is None) != (reason is None) and (reason is None or reason in PARSE_REASONS)


# ---------------------------------------------------------------------------------------------- configs

BASE: dict[str, Any] = {
    "tasks": [{"name": "y"}],
    "partners": [{"name": "a", "path": "a.csv"}, {"name": "b", "path": "b.csv"}],
}
KEYS = [
    "name", "seed", "device", "tasks", "tasks.0.name", "tasks.0.type", "partners", "partners.0.name",
    "partners.0.path", "partners.1.workspace", "partners.0.smiles_column", "partners.0.label_columns",
    "data.duplicates", "data.split_fractions", "data.standardize.neutralize", "model.encoder",
    "model.hidden_channels", "model.dropout", "model.readout", "train.epochs", "train.lr", "train.weight_decay",
    "federation.rounds", "federation.strategy", "federation.min_partners", "baselines.pooled",
    "tracking.experiment", "unknown", "train.unknown",
]  # fmt: skip
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), TEXT)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=10
)


def set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``raw[a][b]...`` (list indices as digits); give up quietly where an earlier mutation left no such path."""
    node: Any = raw
    *parents, last = dotted.split(".")
    for part in [*parents, None]:
        key = part if part is not None else last
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            index: Any = int(key)
        elif isinstance(node, dict):
            index = key
            if part is not None:
                node.setdefault(key, {})
        else:
            return
        if part is None:
            node[index] = value
        else:
            node = node[index]


def check_config(path: Path, overrides: list[str] = ()) -> None:  # type: ignore[assignment]
    try:
        config = load_config(path, overrides)
    except ConfigError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 5_000
        return
    assert isinstance(config, RunConfig)
    floats = [config.train.lr, config.train.weight_decay, config.model.dropout, *config.data.split_fractions]
    assert all(math.isfinite(f) for f in floats)
    assert len({p.workspace for p in config.partners}) == len(config.partners)
    assert 0 <= config.seed < 2**32


def write_yaml(workdir: Path, raw: Any) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


@FUZZ
@given(mutations=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=4))
def test_mutated_config(workdir, mutations):
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    for key, value in mutations:
        set_path(raw, key, value)
    check_config(write_yaml(workdir, raw))


@FUZZ
@given(raw=st.dictionaries(st.sampled_from([k.split(".")[0] for k in KEYS]) | TEXT, VALUES, max_size=6) | VALUES)
def test_random_yaml_mapping(workdir, raw):
    check_config(write_yaml(workdir, raw))


@FUZZ
@given(text=st.text(max_size=200))
@example(text="a: " + "[" * 3000 + "]" * 3000)
@example(text="tasks: &t [*t]\n")
def test_random_yaml_text(workdir, text):
    path = workdir / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    check_config(path)


@FUZZ
@given(overrides=st.lists(st.sampled_from(KEYS).flatmap(lambda k: TEXT.map(lambda v: f"{k}={v}")) | TEXT, max_size=3))
def test_random_overrides(workdir, overrides):
    check_config(write_yaml(workdir, BASE), overrides)


# ---------------------------------------------------------------------------------------------- site configs

SITE: dict[str, Any] = {
    "name": "acme",
    "path": "lib.csv",
    "workspace": "ws",
    "trusted_coordinators": {},
    "policy": {"federations": ["demo"], "tasks": ["y"], "max_rounds": 10},
}
SITE_KEYS = [
    "name", "path", "workspace", "smiles_column", "label_columns", "dask", "dask.n_workers", "dask.address",
    "torch_threads", "trusted_coordinators", "trusted_coordinators.coord", "policy", "policy.federations",
    "policy.tasks", "policy.jobs", "policy.max_epsilon", "policy.max_rounds", "policy.require_signing",
    "shared_tasks", "private_tasks", "private_tasks.0", "private_tasks.0.name", "report_private_metrics",
    "export_tracking_uri", "unknown", "policy.unknown",
]  # fmt: skip


def check_site_config(path: Path) -> None:
    """load_site_config: a SiteConfig with a valid name and absolute paths, or a one-line ConfigError."""
    from molfed.config import SiteConfig, check_name, load_site_config

    try:
        site = load_site_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 5_000 and str(exc).startswith(str(path))
        return
    assert isinstance(site, SiteConfig)
    assert check_name(site.name) == site.name and all(check_name(t.name) for t in site.private_tasks)
    assert site.path.is_absolute() and site.workspace.is_absolute()


@FUZZ
@given(mutations=st.lists(st.tuples(st.sampled_from(SITE_KEYS), VALUES), min_size=1, max_size=4))
@example(mutations=[("name", "acme.eu")])
@example(mutations=[("private_tasks", [{"name": "log s"}])])
def test_mutated_site_config(workdir, mutations):
    raw = yaml.safe_load(yaml.safe_dump(SITE))
    for key, value in mutations:
        set_path(raw, key, value)
    check_site_config(write_yaml(workdir, raw))


@FUZZ
@given(raw=st.dictionaries(st.sampled_from([k.split(".")[0] for k in SITE_KEYS]) | TEXT, VALUES, max_size=6) | VALUES)
def test_random_site_yaml(workdir, raw):
    check_site_config(write_yaml(workdir, raw))


@FUZZ
@given(text=st.text(max_size=200))
@example(text="name: acme\npath: &p [*p]\n")
def test_random_site_yaml_text(workdir, text):
    path = workdir / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    check_site_config(path)


# ---------------------------------------------------------------------------------------------- kept as written

BASES = ["CCO", "c1ccccc1O", "CC(=O)N", "OCCO", "C1CCCCC1", "CCN(C)C", "O=C(O)c1ccccc1", "CC#N"]
SURROUNDING = ["", " ", "\t", "\u00a0", "\u2009", "\u3000", " \u00a0"]
INSERTED = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n")


@st.composite
def written(draw: st.DrawFn) -> str:
    """A SMILES as a person or a spreadsheet writes it: a valid one, maybe with a character inserted anywhere
    (the end included: a look-alike letter, an accent, a digit, a bracket...) and maybe wrapped in whitespace."""
    text = draw(st.sampled_from(BASES))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        text = (
            text[:at] + draw(INSERTED | st.sampled_from(list("\u041e\u0421\u00e9\uff23\u200b\ufeffON=()1"))) + text[at:]
        )
    pad = draw(st.sampled_from(SURROUNDING))
    return pad + text + draw(st.sampled_from(SURROUNDING))


def as_written(text: str) -> str | None:
    """The canonical SMILES ``text`` denotes after molfed's standardization, where RDKit reads it faithfully
    (ASCII, no whitespace inside after stripping surrounding Unicode whitespace); None where it does not, or
    where it is no valid molecule: such a row must be rejected."""
    from rdkit import Chem, rdBase

    from molfed.chem.standardize import StandardizeOptions, standardize_mol

    stripped = text.strip()
    if not stripped or not stripped.isascii() or len(stripped.split()) > 1:
        return None
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(stripped)
        if mol is None:
            return None
        try:
            return Chem.MolToSmiles(standardize_mol(mol, StandardizeOptions()))
        except ValueError:
            return None


@FUZZ
@given(cells=st.lists(written(), min_size=1, max_size=10))
@example(cells=["CCO\u041e"])  # Cyrillic O last: RDKit read ethanol
@example(cells=["\uff23CO"])  # full-width C first: RDKit read methanol
@example(cells=["\u00a0CCO\u00a0"])  # non-breaking spaces around: stripped, kept
def test_a_molecule_is_kept_as_written_or_rejected(workdir, cells):
    """Never silently changed into another: each kept row's canonical SMILES is the one its text denotes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["smiles", "y"])
    writer.writerows([(cell, "1.5") for cell in [*cells, "CCCCCCCCO"]])  # one valid row: a Library, not an error
    path = workdir / "written.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    library = load(path, "regression", "merge")
    assert library is not None
    texts = {i + 2: cell for i, cell in enumerate(cells)}  # CSV line of each row (no line breaks in cells)
    for row, smiles in zip(library.rows, library.smiles, strict=True):
        if row in texts:
            assert smiles == as_written(texts[row]), (texts[row], smiles)
