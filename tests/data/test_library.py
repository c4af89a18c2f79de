"""read_library: formats, row-numbered rejects, duplicates, input errors, and that nothing leaks."""

import gzip
import hashlib
import logging
import math
import pickle

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem, rdBase

from molfed.data.labels import parse_label
from molfed.data.library import Reject, file_digest, read_library, write_rejects
from molfed.errors import InputError, MolfedError

REG = {"label_columns": ["expt"], "task_types": ["regression"]}


def write(tmp_path, name: str, text: str, encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def rdkit_to_python_logging():
    """Route RDKit's own log lines into Python logging so caplog would see leaks."""
    rdBase.LogToPythonLogger()
    yield
    rdBase.LogToPythonStderr()


def test_csv_happy_path(tmp_path):
    path = write(tmp_path, "a.csv", "smiles,expt,name\nCCO,-5.0,ethanol\nc1ccccc1,-0.9,benzene\n")
    lib = read_library(path, **REG)
    assert lib.smiles == ("CCO", "c1ccccc1")
    assert lib.inchikeys[0] == "LFQSCWFLJHTTHZ-UHFFFAOYSA-N"
    assert lib.labels.dtype == np.float32 and lib.labels.shape == (2, 1)
    np.testing.assert_allclose(lib.labels[:, 0], [-5.0, -0.9], rtol=1e-6)
    assert lib.rows == (2, 3)
    assert (lib.n_input_rows, lib.n_duplicates_merged, lib.rejects, len(lib)) == (2, 0, (), 2)
    assert lib.digest == hashlib.sha256(path.read_bytes()).hexdigest() == file_digest(path)
    assert all(isinstance(m, Chem.Mol) for m in lib.mols)


def test_featurized_read_keeps_codes_not_molecules(tmp_path):
    """featurize=True: codes and scaffolds of the same molecules, no Mol objects (workers need not pickle them)."""
    from molfed.chem.encode import encode_mol
    from molfed.data.split import murcko_scaffold

    path = write(tmp_path, "f.csv", "smiles,expt\nCCO,-5.0\nbad,1\nc1ccccc1O,-0.9\nOCC,-4.0\n")
    plain = read_library(path, **REG)
    lib = read_library(path, featurize=True, **REG)
    assert lib.mols is None and len(lib) == len(plain) == 2
    assert (lib.smiles, lib.rows, lib.rejects) == (plain.smiles, plain.rows, plain.rejects)
    assert lib.codes == tuple(encode_mol(m) for m in plain.mols)
    assert lib.scaffolds == tuple(murcko_scaffold(m) for m in plain.mols)


def test_every_reject_reason_with_row_numbers(tmp_path):
    text = (
        "smiles,expt,active\n"  # line 1
        "CCO,1.0,1\n"  # 2 kept
        ",2.0,0\n"  # 3 empty_smiles
        "C1CC(,2.0,0\n"  # 4 unparsable_smiles
        "\n"  # 5 blank line, skipped but counted
        "C(C)(C)(C)(C)C,2.0,0\n"  # 6 unsanitizable_smiles
        "CCN,n/a,1\n"  # 7 non_numeric_label
        "CCC,inf,1\n"  # 8 non_finite_label
        "CCCC,nan,0\n"  # 9 non_finite_label
        "CCCl,1.0,2\n"  # 10 invalid_class_label
        "CCBr,,\n"  # 11 missing_label
        "CCI,,true\n"  # 12 kept: one task labelled
    )
    lib = read_library(
        write(tmp_path, "r.csv", text),
        label_columns=["expt", "active"],
        task_types=["regression", "classification"],
    )
    got = [(r.row, r.reason, r.column) for r in lib.rejects]
    assert got == [
        (3, "empty_smiles", "smiles"),
        (4, "unparsable_smiles", "smiles"),
        (6, "unsanitizable_smiles", "smiles"),
        (7, "non_numeric_label", "expt"),
        (8, "non_finite_label", "expt"),
        (9, "non_finite_label", "expt"),
        (10, "invalid_class_label", "active"),
        (11, "missing_label", "expt,active"),
    ]
    assert lib.reject_counts() == {
        "empty_smiles": 1,
        "invalid_class_label": 1,
        "missing_label": 1,
        "non_finite_label": 2,
        "non_numeric_label": 1,
        "unparsable_smiles": 1,
        "unsanitizable_smiles": 1,
    }
    assert lib.rows == (2, 12)
    assert np.isnan(lib.labels[1, 0]) and lib.labels[1, 1] == 1.0
    assert lib.n_input_rows == len(lib) + lib.n_duplicates_merged + len(lib.rejects) == 10
    assert "C1CC(" in lib.rejects[1].detail  # details stay partner-side, and are useful there


@pytest.mark.parametrize(
    ("cell", "task", "expected"),
    [
        ("1.5", "regression", (1.5, None)),
        (" -2e3 ", "regression", (-2000.0, None)),
        ("", "regression", (math.nan, None)),
        ("1_000", "regression", (math.nan, "non_numeric_label")),
        ("NaN", "regression", (math.nan, "non_finite_label")),
        ("-inf", "regression", (math.nan, "non_finite_label")),
        ("TRUE", "classification", (1.0, None)),
        ("false", "classification", (0.0, None)),
        ("1.0", "classification", (1.0, None)),
        ("0.5", "classification", (math.nan, "invalid_class_label")),
        ("yes", "classification", (math.nan, "non_numeric_label")),
        (None, "regression", (math.nan, None)),
        (float("nan"), "regression", (math.nan, None)),
        (pd.NA, "classification", (math.nan, None)),
        (np.int64(1), "classification", (1.0, None)),
        (True, "classification", (1.0, None)),
        (float("inf"), "regression", (math.nan, "non_finite_label")),
    ],
)
def test_parse_label(cell, task, expected):
    value, reason = parse_label(cell, task)
    assert reason == expected[1]
    assert (math.isnan(value) and math.isnan(expected[0])) or value == expected[0]


def test_duplicates_merge_averages_regression_labels(tmp_path):
    # Acetic acid three times: as the sodium salt (same after standardization) and written differently.
    text = "smiles,expt\nCC(=O)O,1.0\nCCO,7\nCC(=O)[O-].[Na+],2.0\nOC(C)=O,\n"
    lib = read_library(write(tmp_path, "d.csv", text), **REG)
    assert lib.smiles == ("CC(=O)O", "CCO")
    assert lib.rows == (2, 3)
    assert lib.labels[0, 0] == pytest.approx(1.5)  # the empty label is missing, not zero
    assert lib.n_duplicates_merged == 1
    assert lib.reject_counts() == {"missing_label": 1}
    assert lib.n_input_rows == len(lib) + lib.n_duplicates_merged + len(lib.rejects)


def test_widely_disagreeing_duplicates_are_merged_and_listed_for_review(tmp_path):
    """Ethanol measured at -1 and 6 (the library's labels have sd ~2.4): kept as the mean, listed in the report;
    propanol's 2.0 / 2.5 agree and pass silently."""
    text = "smiles,expt\nCCO,-1\nCCCO,2.0\nc1ccccc1,0\nCCN,3\nOCC,6\nOCCC,2.5\n"
    lib = read_library(write(tmp_path, "d.csv", text), **REG)
    assert lib.labels[0, 0] == pytest.approx(2.5) and lib.n_duplicates_merged == 2
    assert lib.rejects == () and lib.n_input_rows == len(lib) + lib.n_duplicates_merged + len(lib.rejects)
    (note,) = lib.notes
    assert (note.row, note.reason, note.column) == (2, "disagreeing_duplicate", "expt")
    assert "kept as the mean 2.5 of rows [2, 6]" in note.detail and "labels [-1.0, 6.0]" in note.detail

    from molfed import reporting
    from molfed.chem.standardize import StandardizeOptions
    from molfed.data.cache import featurize_library

    path, ws = write(tmp_path, "d.csv", text), tmp_path / "ws"
    options = {"smiles_column": "smiles", "standardize": StandardizeOptions(), "duplicates": "merge", **REG}
    featurize_library(path, ws, **options)
    fl = featurize_library(path, ws, **options)  # from the cache
    assert fl.cache_hit
    assert fl.reject_counts == {"disagreeing_duplicate": 1} and reporting.rejected(fl.reject_counts) == 0
    report = pd.read_csv(tmp_path / "ws" / "rejects.csv")
    assert report[["row", "reason"]].values.tolist() == [[2, "disagreeing_duplicate"]]


def test_duplicates_merge_classification_conflict(tmp_path):
    text = "smiles,active,expt\nCCO,1,1.0\nOCC,0,3.0\nCCN,1,\nNCC,1,\n"
    lib = read_library(
        write(tmp_path, "c.csv", text),
        label_columns=["active", "expt"],
        task_types=["classification", "regression"],
    )
    assert lib.rows == (2, 4)
    assert math.isnan(lib.labels[0, 0]) and lib.labels[0, 1] == pytest.approx(2.0)
    assert lib.labels[1, 0] == 1.0  # agreeing labels merge
    assert [(r.row, r.reason, r.column) for r in lib.rejects] == [(3, "conflicting_duplicate", "active")]
    assert lib.n_duplicates_merged == 1
    assert lib.n_input_rows == len(lib) + lib.n_duplicates_merged + len(lib.rejects)


def test_conflict_that_leaves_no_label_rejects_whole_group(tmp_path):
    text = "smiles,active\nCCO,1\nOCC,0\nCCN,1\n"
    lib = read_library(write(tmp_path, "c.csv", text), label_columns=["active"], task_types=["classification"])
    assert lib.rows == (4,)
    assert [(r.row, r.reason) for r in lib.rejects] == [
        (2, "conflicting_duplicate"),
        (3, "conflicting_duplicate"),
    ]


def test_duplicates_keep_first_and_reject(tmp_path):
    path = write(tmp_path, "k.csv", "smiles,expt\nCCO,1\nCCN,5\nOCC,2\nC(O)C,3\n")
    first = read_library(path, duplicates="keep_first", **REG)
    assert first.rows == (2, 3) and first.labels[0, 0] == 1.0
    assert [(r.row, r.reason) for r in first.rejects] == [(4, "duplicate"), (5, "duplicate")]
    assert first.n_duplicates_merged == 0
    rejected = read_library(path, duplicates="reject", **REG)
    assert rejected.rows == (3,)
    assert [r.row for r in rejected.rejects] == [2, 4, 5]
    assert {r.reason for r in rejected.rejects} == {"duplicate"}


def test_bom_tsv_and_gzip(tmp_path):
    bom = write(tmp_path, "bom.csv", "\ufeffsmiles,expt\nCCO,1\n")
    assert read_library(bom, **REG).smiles == ("CCO",)
    tsv = write(tmp_path, "t.tsv", "smiles\texpt\nCCO\t1\nCCN\t2\n")
    assert read_library(tsv, **REG).rows == (2, 3)
    gz = tmp_path / "g.csv.gz"
    gz.write_bytes(gzip.compress(b"smiles,expt\nCCO,1\n", mtime=0))
    lib = read_library(gz, **REG)
    assert lib.smiles == ("CCO",) and lib.digest == file_digest(gz)


def test_sdf_happy_path_with_broken_record(tmp_path):
    path = tmp_path / "lib.sdf"
    writer = Chem.SDWriter(str(path))
    for smi, value in [("C[C@H](N)O", "1.5"), ("CC(=O)[O-].[Na+]", "2.5"), ("c1ccccc1", "")]:
        mol = Chem.MolFromSmiles(smi)
        if value:
            mol.SetProp("expt", value)
        writer.write(mol)
    writer.close()
    path.write_text(path.read_text() + "not a molecule\n$$$$\n")
    lib = read_library(path, **REG)
    assert lib.smiles == ("C[C@H](N)O", "CC(=O)O")  # stereo kept, salt stripped
    assert lib.rows == (1, 2)
    assert [(r.row, r.reason, r.column) for r in lib.rejects] == [
        (3, "missing_label", "expt"),
        (4, "unparsable_molecule_block", "molblock"),
    ]


@pytest.mark.parametrize("tail", ["", "\n", "\n\n", "\r\n\r\n", "\n\n  \n"])
@pytest.mark.parametrize("broken_last", [False, True])
def test_sdf_blank_lines_at_the_end_are_not_a_record(tmp_path, tail, broken_last):
    """RDKit's forward reader returns an empty record for blank lines after the last $$$$: not a reject row."""
    block = Chem.MolToMolBlock(Chem.MolFromSmiles("CCO"))
    last = "not a molecule\n$$$$" if broken_last else block + "> <expt>\n2\n\n$$$$"
    path = tmp_path / "lib.sdf"
    path.write_bytes((block + "> <expt>\n1\n\n$$$$\n" + last + tail).encode())
    lib = read_library(path, **REG)
    assert lib.n_input_rows == 2 and len(lib) == 1
    rejects = [(r.row, r.reason) for r in lib.rejects]
    assert rejects == ([(2, "unparsable_molecule_block")] if broken_last else [])
    assert lib.n_duplicates_merged == (0 if broken_last else 1)


def test_sdf_missing_property_lists_properties(tmp_path):
    path = tmp_path / "p.sdf"
    mol = Chem.MolFromSmiles("CCO")
    mol.SetProp("dG", "1.0")
    with Chem.SDWriter(str(path)) as writer:
        writer.write(mol)
    with pytest.raises(InputError, match=r"column 'expt': column not found; properties are \['dG'\]"):
        read_library(path, **REG)


def test_parquet_happy_path(tmp_path):
    path = tmp_path / "lib.parquet"
    frame = pd.DataFrame(
        {"smiles": ["CCO", None, "CCN", "CCC"], "expt": [1.0, 2.0, float("nan"), 4.0], "active": [1, 0, 1, 0]}
    )
    frame.to_parquet(path)
    lib = read_library(path, label_columns=["expt", "active"], task_types=["regression", "classification"])
    assert lib.smiles == ("CCO", "CCN", "CCC")
    assert lib.rows == (1, 3, 4)
    assert np.isnan(lib.labels[1, 0]) and lib.labels[1, 1] == 1.0
    assert [(r.row, r.reason) for r in lib.rejects] == [(2, "empty_smiles")]


def test_write_rejects(tmp_path):
    empty = write_rejects([], tmp_path / "out" / "none.csv")
    assert empty.read_text() == "row,column,reason,detail\n"
    path = write_rejects([Reject(3, "unparsable_smiles", "smiles", "C1CC(, bad")], tmp_path / "r.csv")
    assert pd.read_csv(path).to_dict("records") == [
        {"row": 3, "column": "smiles", "reason": "unparsable_smiles", "detail": "C1CC(, bad"}
    ]


# ---------------------------------------------------------------- input errors


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="file not found") as missing:
        read_library(tmp_path / "nope.csv", partner="alpha", **REG)
    assert str(missing.value).startswith(f"partner 'alpha': {tmp_path / 'nope.csv'}")
    with pytest.raises(InputError, match="is a directory"):
        read_library(tmp_path, **REG)


@pytest.mark.parametrize("text", ["", "  \n\n"])
def test_empty_file(tmp_path, text):
    with pytest.raises(InputError, match="file is empty"):
        read_library(write(tmp_path, "e.csv", text), **REG)


def test_header_only(tmp_path):
    with pytest.raises(InputError, match="no data rows"):
        read_library(write(tmp_path, "h.csv", "smiles,expt\n\n"), **REG)


def test_missing_column_lists_columns(tmp_path):
    path = write(tmp_path, "a.csv", "SMILES,expt\nCCO,1\n")
    with pytest.raises(InputError) as err:
        read_library(path, partner="alpha", **REG)
    assert str(err.value) == (
        f"partner 'alpha': {path}, column 'smiles': column not found; columns are ['SMILES', 'expt']"
    )
    with pytest.raises(InputError, match=r"column 'pIC50': column not found"):
        read_library(path, smiles_column="SMILES", label_columns=["pIC50"], task_types=["regression"])


def test_headerless_file_does_not_echo_data_as_column_names(tmp_path):
    path = write(tmp_path, "n.csv", "CCCCOC(=O)c1ccccc1,-3.25\nCCO,1\n")
    with pytest.raises(InputError, match="header row missing") as err:
        read_library(path, **REG)
    assert "CCCCOC(=O)c1ccccc1" not in str(err.value) and "-3.25" not in str(err.value)


def test_unknown_suffix_lists_supported(tmp_path):
    with pytest.raises(InputError, match=r"unsupported file type; supported suffixes are \['.csv'"):
        read_library(write(tmp_path, "a.xlsx", "smiles,expt\nCCO,1\n"), **REG)


def test_wrong_field_count_names_row(tmp_path):
    with pytest.raises(InputError, match=r"row 3: expected 2 fields, found 3"):
        read_library(write(tmp_path, "f.csv", "smiles,expt\nCCO,1\nCC,O,2\n"), **REG)


def test_non_utf8_names_row(tmp_path):
    path = write(tmp_path, "l.csv", "smiles,expt,name\nCCO,1,ok\nCCN,2,caf\u00e9\n", encoding="latin-1")
    with pytest.raises(InputError, match=r"row 3: file is not valid UTF-8"):
        read_library(path, **REG)


def test_all_rows_invalid(tmp_path):
    path = write(tmp_path, "bad.csv", "smiles,expt\nC1CC(,1\nCCO,n/a\n")
    with pytest.raises(InputError) as err:
        read_library(path, partner="gamma", **REG)
    assert str(err.value).startswith(f"partner 'gamma': {path}: no valid molecules; all 2 rows rejected")
    assert "non_numeric_label: 1" in str(err.value) and "unparsable_smiles: 1" in str(err.value)


def test_bad_arguments_raise_value_error(tmp_path):
    path = write(tmp_path, "a.csv", "smiles,expt\nCCO,1\n")
    with pytest.raises(ValueError, match="got 2 task_types, expected 1"):
        read_library(path, label_columns=["expt"], task_types=["regression", "regression"])
    with pytest.raises(ValueError, match="unknown task type 'regresion'"):
        read_library(path, label_columns=["expt"], task_types=["regresion"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="unknown duplicates policy"):
        read_library(path, duplicates="drop", **REG)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        read_library(path, label_columns=[], task_types=[])


LEAKY = "CCCCCCCCOC(=O)c1ccc(O)cc1"  # distinctive, so any leak is unambiguous


@pytest.mark.parametrize(
    "text",
    [
        f"smiles,expt\n{LEAKY}(,-7.125\n",  # all rows unparsable
        f"smiles,expt\n{LEAKY},-7.125,extra\n",  # wrong field count
        f"{LEAKY},-7.125\nCCO,1\n",  # no header row
        f"smiles,expt\n{LEAKY},n/a-7.125\n",  # all labels bad
        f'smiles,expt\n"{LEAKY},-7.125\n',  # unterminated quote
    ],
)
def test_no_smiles_or_label_in_errors_or_logs(tmp_path, caplog, rdkit_to_python_logging, text):
    path = write(tmp_path, "leak.csv", text)
    with caplog.at_level(logging.DEBUG), pytest.raises(InputError) as err:
        read_library(path, partner="alpha", **REG)
    message = str(err.value)
    assert LEAKY not in message and "7.125" not in message
    assert err.value.__cause__ is None
    for record in caplog.records:
        assert LEAKY not in record.getMessage() and "7.125" not in record.getMessage()


def test_no_smiles_in_logs_for_a_library_with_rejects(tmp_path, caplog, capfd, rdkit_to_python_logging):
    path = write(tmp_path, "mixed.csv", f"smiles,expt\nCCO,1\n{LEAKY}(,2\nC(C)(C)(C)(C)C{LEAKY},3\n")
    with caplog.at_level(logging.DEBUG):
        lib = read_library(path, **REG)
    assert lib.reject_counts() == {"unparsable_smiles": 1, "unsanitizable_smiles": 1}
    assert caplog.records  # the summary is logged ...
    assert all(LEAKY not in r.getMessage() for r in caplog.records)  # ... without structures
    assert LEAKY not in capfd.readouterr().err


def test_input_error_format_and_pickle():
    err = InputError("label is not a number", path="libs/a.csv", row=7, column="expt")
    assert str(err) == "libs/a.csv, row 7, column 'expt': label is not a number"
    assert isinstance(err, MolfedError)
    copy = pickle.loads(pickle.dumps(InputError("x", path="p.csv", row=2, partner="beta")))
    assert str(copy) == "partner 'beta': p.csv, row 2: x" and copy.row == 2 and copy.partner == "beta"
    assert str(InputError("plain")) == "plain"
