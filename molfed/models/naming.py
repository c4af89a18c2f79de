"""Weight-name conventions of :class:`~molfed.models.model.MoleculeModel`, importable without torch (strategies and
update validation use them)."""

SHARED_HEAD_PREFIX = "head."
"""Weights of the federated (shared-task) head start with this; a partner without shared tasks leaves them out."""
