"""``molfed audit``: a clean store passes (exit 0), a planted partner structure fails (exit 1), the report names
where it was found and never the structure itself."""

import sqlite3

from rdkit import Chem

from molfed.audit import HashIndex, candidates, scan_files
from molfed.cli import main

ALPHA = ["C(C)Oc1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CCCCCCCl", "OC1CCCCC1"]
BETA = ["c1ccc2ccccc2c1", "CCN(CC)CCO", "CCCCCCCCO"]


def _partners(tmp_path):
    for name, smiles in (("alpha", ALPHA), ("beta", BETA)):
        rows = "".join(f"{s},{i}.5\n" for i, s in enumerate(smiles))
        (tmp_path / f"{name}.csv").write_text("smiles,y\n" + rows)
    (tmp_path / "fed.yaml").write_text(
        "tasks: [{name: y}]\npartners:\n"
        "  - {name: alpha, path: alpha.csv, workspace: ws/alpha}\n"
        "  - {name: beta, path: beta.csv, workspace: ws/beta}\n"
    )
    home = tmp_path / "prefect"
    home.mkdir()
    with sqlite3.connect(home / "prefect.db") as conn:
        conn.execute("CREATE TABLE log (message TEXT)")
        conn.execute("INSERT INTO log VALUES ('round 1: train loss 0.41')")
    return home, ["audit", "--config", str(tmp_path / "fed.yaml"), "--prefect-home", str(home)]


def test_clean_store_passes_and_planted_structures_fail(tmp_path, capsys):
    home, args = _partners(tmp_path)
    store = tmp_path / "mlruns"  # a file-layout store (the real MLflow store is audited in test_private_flow.py)
    (store / "1" / "run" / "params").mkdir(parents=True)
    (store / "1" / "run" / "params" / "federation.rounds").write_text("3")
    (store / "1" / "run" / "results.md").write_text("| partner | rmse |\n| alpha | 1.5 |\n")
    args += ["--tracking-uri", store.as_uri()]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "audit: clean" in out and "HIT" not in out
    assert "alpha 4 SMILES" not in out  # canonical forms add needles: counts, never structures
    assert "mlflow: " in out and "SQLite tables" in out and "prefect: 1 files" in out

    (store / "1" / "run" / "params" / "note").write_text("CC(=O)Oc1ccccc1C(=O)O")  # alpha's raw SMILES
    canonical = Chem.MolToSmiles(Chem.MolFromSmiles(ALPHA[0]))
    assert canonical != ALPHA[0]
    with sqlite3.connect(home / "prefect.db") as conn:  # its canonical form in a Prefect log row
        conn.execute("INSERT INTO log VALUES (?)", (f"featurized smiles={canonical} ok",))
    log = tmp_path / "worker.log"
    log.write_text(f"key {Chem.MolToInchiKey(Chem.MolFromSmiles(BETA[0]))} done\n")  # beta's InChIKey in a log
    assert main([*args, "--path", str(log)]) == 1
    out = capsys.readouterr().out
    assert "audit: FAILED" in out
    assert "params/note: 1 smiles needle(s) of partner alpha" in out
    assert "prefect.db [table log]: 1 smiles needle(s) of partner alpha" in out
    assert "worker.log: 1 inchikey needle(s) of partner beta" in out
    assert "CC(=O)Oc1ccccc1C(=O)O" not in out and canonical not in out


def test_missing_store_is_a_clear_error(tmp_path, capsys):
    _, args = _partners(tmp_path)
    assert main([*args, "--tracking-uri", f"sqlite:///{tmp_path / 'nowhere.db'}"]) == 2
    assert "MLflow database" in capsys.readouterr().err


def test_candidates_match_whole_tokens_and_key_value_pairs_only():
    aspirin, benzene = "CC(=O)Oc1ccccc1C(=O)O", "c1ccccc1"
    index = HashIndex.build("p", [benzene, aspirin], [])
    assert benzene.encode() not in candidates(f'"{aspirin}"'.encode())  # a public molecule containing benzene
    assert aspirin.encode() in candidates(f"smiles={aspirin}".encode())
    assert aspirin.encode() in candidates(f"label: {aspirin}".encode())
    assert index.digest(aspirin.encode()) in index.smiles and index.salt != HashIndex.build("p", [], []).salt


def test_scan_reads_inside_zip_archives(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "model.zip", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data/input_example.json", '{"smiles": ["CCN(CC)CCO"]}')
    report = scan_files([tmp_path], [HashIndex.build("beta", ["CCN(CC)CCO"], [])])
    assert [(h.kind, h.location) for h in report.hits] == [("smiles", "member data/input_example.json")]
    assert report.members == 1
