"""GNN models: registered encoders, readouts and heads composed into :class:`MoleculeModel`."""

from molfed.models.encoders import ENCODERS, build_encoder
from molfed.models.model import FIXED_BUFFERS, ModelSpec, MoleculeModel, build_model

__all__ = ["ENCODERS", "FIXED_BUFFERS", "MoleculeModel", "ModelSpec", "build_encoder", "build_model"]
