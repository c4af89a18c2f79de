"""Write the bad-input corpus next to this file: ``python tests/badinput/make_corpus.py``.

The committed files are its output; rerunning it must leave ``git status`` clean. Each file holds two or more
valid rows besides its malformed ones, so a test can check that valid rows survive. README.md lists every case
and its expected outcome; ``tests/test_badinput.py`` asserts them. Two inputs are too big to commit and are made
by the test itself: a 100,000-atom molecule and a 200,000-character CSV field.

SMILES and labels are distinctive (SMILES of 6+ characters, labels with 3+ decimals) so that the privacy checks,
which search the CLI's output for every cell of a file, cannot match by chance.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent

# valid rows, reused by most files: (SMILES, hydration free energy)
VALID = [("CCOc1ccccc1", "-2.417"), ("Cc1ccc(O)cc1", "-6.133"), ("OCCc1ccccc1", "-6.792"), ("CCCCCCO", "-4.403")]
HEADER = "smiles,expt\n"
CONFIG = "tasks: [{name: expt}]\npartners:\n  - {name: acme, path: ok.csv, workspace: ws/acme}\n"


def rows(*extra: tuple[str, str], valid: int = 2) -> str:
    """A CSV with ``valid`` valid rows first, then ``extra`` rows (cells written as given, no quoting)."""
    body = [f"{s},{y}" for s, y in VALID[:valid]] + [f"{s},{y}" for s, y in extra]
    return HEADER + "".join(line + "\n" for line in body)


POLYCATION = "C[N+](C)(C)" + "CC[N+](C)(C)" * 19 + "C"  # 20 quaternary ammoniums, charge +20
POLYANION = "OCC(OS(=O)(=O)[O-])" + "C(OS(=O)(=O)[O-])" * 11 + "CO"  # 12 sulfates, neutralized by the Uncharger

TEXT: dict[str, str] = {
    # ---- exotic and invalid SMILES: counted rejects, valid rows kept
    "smiles_unclosed_ring.csv": rows(("C1CCCCCC", "-1.305")),
    "smiles_bad_valence.csv": rows(("CC(C)(C)(C)(C)CC", "-1.305")),
    "smiles_unknown_element.csv": rows(("CC[Xq]CCO", "-1.305")),
    "smiles_empty.csv": rows(("", "-1.305"), ('""', "-3.871")),
    "smiles_whitespace_only.csv": rows(("   ", "-1.305"), ("\t", "-3.871")),
    "smiles_space_inside.csv": rows(
        ("CCCCCC OCC", "-1.305"), ("CCCC\tCCN", "-3.871"), ("CCCCCCCCO |$;;;;;;;;$|", "-0.446")
    ),
    "smiles_radical.csv": rows(("CC1(C)CCCC(C)(C)N1[O]", "-1.305"), ("CCCC[CH2]", "-3.871")),
    "smiles_isotope.csv": rows(("[2H]C([2H])([2H])Oc1ccccc1", "-1.305"), ("CCCC[13CH2]O", "-3.871")),
    "smiles_huge_charge.csv": rows((POLYCATION, "-1.305"), (POLYANION, "-3.871"), ("[C+9]CCCC", "-0.446")),
    "smiles_dative.csv": rows(("CCN(CC)(CC)->O", "-1.305"), ("[NH3]->[Pt+2](<-[NH3])(Cl)Cl", "-3.871")),
    "smiles_wildcard.csv": rows(("*CC(*)c1ccccc1", "-1.305"), ("c1ccccc1[*:1]", "-3.871"), ("*", "-0.446")),
    "smiles_control_char.csv": rows(("CCCC\x00CCO", "-1.305")),
    # non-ASCII: a Cyrillic O last (RDKit read heptane), an e-acute last, a full-width C first (RDKit read
    # hexanol), a zero-width space inside; a valid SMILES wrapped in non-breaking spaces is stripped and kept
    "smiles_non_ascii.csv": rows(
        ("CCCCCCC\u041e", "-1.305"),
        ("CCCCCCCC\u00e9", "-3.871"),
        ("\uff23CCCCCO", "-0.446"),
        ("CCCC\u200bCCCO", "-5.219"),
        ("\u00a0CCCCCCCCCO\u00a0", "-7.654"),
    ),
    # ---- labels
    "labels_non_numeric.csv": rows(
        ("CCCCCCCO", "abc"),
        ("CCCCCCCCO", "#N/A"),
        ("CCCCCCCCCO", '"1,512"'),
        ("CCCCCCCCCCO", "0x1A"),
        ("CCCCCCCCCCCO", "1_000"),
        ("CCCCCCCCCCCCO", "12.5 kcal"),
    ),
    "labels_nan_inf.csv": rows(
        ("CCCCCCCO", "nan"),
        ("CCCCCCCCO", "NaN"),
        ("CCCCCCCCCO", "inf"),
        ("CCCCCCCCCCO", "-Infinity"),
        ("CCCCCCCCCCCO", "1e400"),
        ("CCCCCCCCCCCCO", ""),
        ("CCCCCCCCCCCCCO", "-3.5e300"),
    ),
    "duplicates_conflicting_regression.csv": rows(("c1ccccc1OCC", "-1.111"), ("C(C)Oc1ccccc1", "-5.555"), valid=3),
    "duplicates_conflicting_classification.csv": (
        "smiles,active\nCCOc1ccccc1,1\nCc1ccc(O)cc1,1\nc1ccccc1OCC,0\nOCCc1ccccc1,0\n"
    ),
    "all_rows_invalid.csv": HEADER + "C1CCCCCC,-1.305\nCCCCCCCO,abc\n*CC(*)c1ccccc1,-0.446\n",
    # ---- file structure
    "empty.csv": "",
    "blank_lines_only.csv": "\n   \n\n",
    "header_only.csv": HEADER,
    "semicolon_delimiter.csv": rows().replace(",", ";"),
    "tab_delimiter_named_csv.csv": rows().replace(",", "\t"),
    "missing_label_column.csv": rows().replace("smiles,expt", "smiles,value"),
    "renamed_smiles_column.csv": rows().replace("smiles,expt", "SMILES,expt"),
    "excel_sep_line.csv": "sep=,\r\n" + rows().replace("\n", "\r\n"),  # Excel's delimiter line: accepted
    "excel_sep_semicolon.csv": "sep=;\n" + rows().replace(",", ";"),
    "headerless.csv": rows().removeprefix(HEADER),
    "headerless_semicolon.csv": rows().removeprefix(HEADER).replace(",", ";"),
    "duplicate_column.csv": "smiles,expt,expt\nCCOc1ccccc1,-2.417,-2.417\nCc1ccc(O)cc1,-6.133,-6.133\n",
    "ragged_rows.csv": rows(("CCCCCCCO", "-1.305,extra"), ("CCCCCCCCO", "")).replace("CCCCCCCCO,\n", "CCCCCCCCO\n"),
    "unclosed_quote.csv": rows(('"CCCCCCCO', "-1.305"), ("CCCCCCCCO", "-3.871")),
    "crlf_and_bom.csv": "\ufeff" + rows().replace("\n", "\r\n"),
    "library.xlsx": rows(),
    "parquet_not_parquet.parquet": rows(),
    "not_gzip.csv.gz": rows(),
    "not_a_directory.txt": "a file where a workspace directory is expected\n",
    "ok.csv": rows(valid=4),
    "ok_copy.csv": rows(valid=4),  # the same bytes as ok.csv, under another name
    # ---- configs (partner paths are relative to the config's directory)
    "config_yaml_syntax.yaml": CONFIG.replace("[{name: expt}]", "[{name: expt}"),
    "config_tab_indent.yaml": CONFIG.replace("  - {name: acme", "\t- {name: acme"),
    "config_unknown_key.yaml": CONFIG + "epoch: 3\n",
    "config_unknown_nested_key.yaml": CONFIG + "train: {epoch: 3}\n",
    "config_negative_epochs.yaml": CONFIG + "train: {epochs: -1}\n",
    "config_unknown_encoder.yaml": CONFIG + "model: {encoder: gin}\n",
    "config_unknown_strategy.yaml": CONFIG + "federation: {strategy: fedavgg}\n",
    "config_nan_split.yaml": CONFIG + "data: {split_fractions: [.nan, 0.5, 0.5]}\n",
    "config_huge_seed.yaml": CONFIG + "seed: 100000000000000000000\n",
    "config_duplicate_partner.yaml": CONFIG + "  - {name: acme, path: crlf_and_bom.csv, workspace: ws/acme2}\n",
    "config_label_is_smiles_column.yaml": CONFIG.replace("path: ok.csv", "path: ok.csv, smiles_column: expt"),
    "config_two_tasks_one_column.yaml": CONFIG.replace("[{name: expt}]", "[{name: expt}, {name: dg}]").replace(
        "path: ok.csv", "path: ok.csv, label_columns: {dg: expt}"
    ),
    "config_shared_workspace.yaml": CONFIG.replace("ws/acme", "ws/shared")
    + "  - {name: bravo, path: crlf_and_bom.csv, workspace: ws/shared}\n",
    # names become parts of MLflow metric names (test_rmse.<task>.<partner>): letters, digits, '_', '-' only
    "config_task_name_invalid.yaml": CONFIG.replace("[{name: expt}]", "[{name: 'expt (kcal/mol)'}]"),
    "config_private_task_name_dot.yaml": CONFIG.replace(
        "workspace: ws/acme}", "workspace: ws/acme, shared_tasks: [], private_tasks: [{name: log.s, column: expt}]}"
    )
    + "baselines: {pooled: false}\n",
    "config_task_named_like_partner.yaml": CONFIG.replace("[{name: expt}]", "[{name: acme}]").replace(
        "path: ok.csv", "path: ok.csv, label_columns: {acme: expt}"
    ),
    "config_empty.yaml": "",
    "config_top_level_list.yaml": "- tasks\n- partners\n",
    "config_missing_tasks.yaml": CONFIG.replace("tasks: [{name: expt}]\n", ""),
    "config_partner_path_directory.yaml": CONFIG.replace("path: ok.csv", "path: ."),
    "config_partner_path_missing.yaml": CONFIG.replace("path: ok.csv", "path: no_such_library.csv"),
    "config_workspace_is_file.yaml": CONFIG.replace("workspace: ws/acme", "workspace: not_a_directory.txt"),
    "config_second_partner_bad.yaml": CONFIG + "  - {name: bravo, path: latin1.csv, workspace: ws/bravo}\n",
    # one library counted twice: the same file, or a copy with identical bytes (found by SHA-256)
    "config_same_library_twice.yaml": CONFIG + "  - {name: bravo, path: ok.csv, workspace: ws/bravo}\n",
    "config_same_library_content.yaml": CONFIG + "  - {name: bravo, path: ok_copy.csv, workspace: ws/bravo}\n",
    "config_ok_two_partners.yaml": CONFIG + "  - {name: bravo, path: smiles_wildcard.csv, workspace: ws/bravo}\n",
    # ---- SDF
    "sdf_missing_property.sdf": "",  # filled in below
    "sdf_broken_records.sdf": "",
}


def molblock(smiles: str, **props: str) -> str:
    """An SDF record; ``smiles`` is read without sanitization so impossible valences survive."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        mol = Chem.MolFromSmiles(smiles, sanitize=False)
        mol.UpdatePropertyCache(strict=False)
    block = Chem.MolToMolBlock(mol)
    return block + "".join(f">  <{k}>\n{v}\n\n" for k, v in props.items()) + "$$$$\n"


def sdf_broken() -> str:
    """Records: 1 valid, 2 garbage, 3 pentavalent carbon, 4 no label property, 5 bad label, 6 valid, 7 cut off."""
    garbage = "\n  garbage\n\nthis is not a counts line\nM  END\n>  <expt>\n-1.305\n\n$$$$\n"
    truncated = molblock("CCCCCCCO", expt="-0.446")[:60]  # the file ends mid-record, without $$$$
    return (
        molblock("CCOc1ccccc1", expt="-2.417")
        + garbage
        + molblock("CC(C)(C)(C)(C)CC", expt="-3.871")
        + molblock("OCCc1ccccc1")
        + molblock("CCCCCCO", expt="n/a")
        + molblock("Cc1ccc(O)cc1", expt="-6.133")
        + truncated
    )


def main() -> None:
    from rdkit import rdBase

    rdBase.DisableLog("rdApp.*")  # the pentavalent SDF record is meant to be broken
    TEXT["sdf_missing_property.sdf"] = molblock("CCOc1ccccc1", pIC50="6.021") + molblock("Cc1ccc(O)cc1", pIC50="5.377")
    TEXT["sdf_broken_records.sdf"] = sdf_broken()
    for name, text in TEXT.items():
        (HERE / name).write_bytes(text.encode("utf-8"))
    (HERE / "config_latin1.yaml").write_bytes((CONFIG + "name: caf\u00e9\n").encode("latin-1"))
    latin = rows(("CCCCCCCO", "-1.305")).replace("smiles,expt", "smiles,expt,name")
    latin = (
        latin.replace("-2.417\n", "-2.417,ok\n")
        .replace("-6.133\n", "-6.133,ok\n")
        .replace("-1.305\n", "-1.305,caf\u00e9\n")
    )
    (HERE / "latin1.csv").write_bytes(latin.encode("latin-1"))
    (HERE / "utf16.csv").write_bytes(rows().encode("utf-16"))
    whole = gzip.compress(rows().encode() * 50, mtime=0)
    (HERE / "truncated.csv.gz").write_bytes(whole[: len(whole) // 2])
    parquet(
        "parquet_label_strings.parquet",
        {"smiles": [s for s, _ in VALID], "expt": ["-2.417", "-6.133", "abc", ""]},
    )
    parquet("parquet_smiles_ints.parquet", {"smiles": [101, 202, 303], "expt": [-2.417, -6.133, -6.792]})
    parquet("parquet_missing_column.parquet", {"SMILES": [s for s, _ in VALID[:2]], "expt": [-2.417, -6.133]})


def parquet(name: str, columns: dict[str, list[object]]) -> None:
    buffer = io.BytesIO()
    pd.DataFrame(columns).to_parquet(buffer, index=False)
    (HERE / name).write_bytes(buffer.getvalue())


if __name__ == "__main__":
    main()
