"""GNN models: registered encoders, readouts and heads composed into :class:`~molfed.models.model.MoleculeModel`.

Import from the submodules (``molfed.models.model``, ``molfed.models.encoders``); this package imports nothing, so
``molfed.models.naming`` stays importable without torch.
"""
