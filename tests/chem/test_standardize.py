"""Parsing reasons, silence of RDKit logs, and standardization steps."""

import logging

import pytest
from rdkit import Chem, rdBase

from molfed.chem.standardize import (
    PARSE_REASONS,
    StandardizeOptions,
    parse_smiles,
    reason_detail,
    sanitize_reason,
    standardize_mol,
)


def smiles_of(smiles: str, **options: bool) -> str:
    mol, reason = parse_smiles(smiles)
    assert reason is None
    return Chem.MolToSmiles(standardize_mol(mol, StandardizeOptions(**options)))


@pytest.mark.parametrize(
    ("smiles", "reason"),
    [
        ("", "empty_smiles"),
        ("   ", "empty_smiles"),
        ("C1CC(", "unparsable_smiles"),
        ("Xx", "unparsable_smiles"),
        ("C(C)(C)(C)(C)C", "unsanitizable_smiles"),  # pentavalent carbon
        ("c1cccc1", "unsanitizable_smiles"),  # cannot kekulize
    ],
)
def test_parse_reasons(smiles, reason):
    assert parse_smiles(smiles) == (None, reason)
    assert reason in PARSE_REASONS


def test_parse_success_strips_whitespace():
    mol, reason = parse_smiles("  CCO \n")
    assert reason is None and Chem.MolToSmiles(mol) == "CCO"


LOOK_ALIKES = ["\u041e", "\u00e9", "\uff23", "\u200b", "\ufeff", "\u00b0"]  # Cyrillic O, e-acute, full-width C, ...


@pytest.mark.parametrize("char", LOOK_ALIKES)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_non_ascii_character_anywhere_is_a_reason(char, where):
    """RDKit skips some of these silently (``CCCО`` -> propane): the row must be rejected, not changed."""
    smiles = {"first": char + "CCCO", "middle": "CC" + char + "CO", "last": "CCCO" + char}[where]
    assert parse_smiles(smiles) == (None, "non_ascii_smiles")
    assert f"U+{ord(char):04X}" in reason_detail(smiles)


@pytest.mark.parametrize("space", [" ", "\t", "\r\n", "\u00a0", "\u2009", "\u3000"])
def test_surrounding_unicode_whitespace_is_stripped(space):
    mol, reason = parse_smiles(space + "CCO" + space)
    assert reason is None and Chem.MolToSmiles(mol) == "CCO"


def test_empty_molecule_reason():
    assert sanitize_reason(Chem.Mol()) == "empty_molecule"
    assert sanitize_reason(None) == "unparsable_smiles"


def test_parse_writes_nothing_to_stderr(capfd):
    parse_smiles("C1CC(")
    parse_smiles("C(C)(C)(C)(C)C")
    assert capfd.readouterr().err == ""


def test_parse_logs_nothing_via_python_logging(caplog):
    rdBase.LogToPythonLogger()
    try:
        with caplog.at_level(logging.DEBUG):
            parse_smiles("C1CCCC(")
            parse_smiles("CN(C)(C)(C)C")
    finally:
        rdBase.LogToPythonStderr()
    assert not any("C1CCCC(" in r.getMessage() or "CN(C)(C)(C)C" in r.getMessage() for r in caplog.records)


def test_reason_detail_captures_rdkit_message_silently(capfd):
    detail = reason_detail("C1CC(")
    assert "C1CC(" in detail and "\n" not in detail and not detail.startswith("[")
    assert "valence" in reason_detail("C(C)(C)(C)(C)C").lower()
    assert capfd.readouterr().err == ""


def test_salt_is_stripped_and_neutralized():
    assert smiles_of("CC(=O)[O-].[Na+]") == "CC(=O)O"


def test_options_switch_steps_off():
    assert smiles_of("CC(=O)[O-].[Na+]", neutralize=False) == "CC(=O)[O-]"
    assert smiles_of("CC(=O)[O-].[Na+]", largest_fragment=False, neutralize=False) == "CC(=O)[O-].[Na+]"


def test_canonical_tautomer_only_when_asked():
    assert smiles_of("Oc1ccccn1") == "Oc1ccccn1"
    assert smiles_of("Oc1ccccn1", canonical_tautomer=True) == "O=c1cccc[nH]1"


def test_standardize_returns_new_molecule():
    mol, _ = parse_smiles("CC(=O)[O-].[Na+]")
    out = standardize_mol(mol, StandardizeOptions())
    assert out is not mol
    assert Chem.MolToSmiles(mol) == "CC(=O)[O-].[Na+]"


def test_options_are_frozen():
    with pytest.raises(AttributeError):
        StandardizeOptions().neutralize = False  # type: ignore[misc]


def test_standardize_equals_rdkit_cleanup_pipeline():
    """The prebuilt-tools pipeline gives what ``rdMolStandardize.Cleanup`` + chooser + uncharger gave."""
    import datamol as dm
    from rdkit.Chem.MolStandardize import rdMolStandardize

    extra = [
        "CCC(=O)O[Na]",
        "C[C@](F)(Cl)C/C=C/[C@H](F)Cl",
        "C[n+]1c([N-](C))cccc1",
        "[O-]CCCC=CO.[Na+]",
        "OC(=O)c1ccccc1.[K]",
        "[H]OC([H])([H])C",
        "c1ccccc1N(=O)=O",
        "C[S+](C)[O-]",
        "C[Mg]Br",
        "[Cu+2].[O-]S(=O)(=O)[O-]",
        "CC(=O)[O-].[NH4+]",
        "F/C=C/F",
        "[2H]C([2H])([2H])O",
    ]
    chooser, uncharger = rdMolStandardize.LargestFragmentChooser(), rdMolStandardize.Uncharger()
    options = StandardizeOptions()
    n = 0
    with rdBase.BlockLogs():
        for smi in list(dm.data.freesolv()["smiles"])[::3] + extra:
            mol = Chem.MolFromSmiles(smi)
            expected = uncharger.uncharge(chooser.choose(rdMolStandardize.Cleanup(mol)))
            got = standardize_mol(mol, options)
            assert Chem.MolToSmiles(got) == Chem.MolToSmiles(expected), smi
            assert Chem.MolToInchiKey(got) == Chem.MolToInchiKey(expected), smi
            n += 1
    assert n > 200
