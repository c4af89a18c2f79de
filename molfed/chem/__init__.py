"""Chemistry: parsing, standardization and graph featurization of molecules."""

from molfed.chem.featurize import ATOM_DIM, BOND_DIM, FEATURIZER_VERSION, featurizer_signature, mol_to_graph
from molfed.chem.standardize import StandardizeOptions, parse_smiles, reason_detail, standardize_mol

__all__ = [
    "ATOM_DIM",
    "BOND_DIM",
    "FEATURIZER_VERSION",
    "StandardizeOptions",
    "featurizer_signature",
    "mol_to_graph",
    "parse_smiles",
    "reason_detail",
    "standardize_mol",
]
