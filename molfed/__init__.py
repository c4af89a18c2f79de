"""molfed: federated GNN property prediction for drug discovery, without sharing structures or labels."""

__version__ = "0.1.0"
