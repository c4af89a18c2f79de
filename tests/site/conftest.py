"""Shared pieces of the site tests: a coordinator key pair and a valid partner job (hand-made ids)."""

import pytest

from molfed.federated.signing import generate_keypair, load_private_key
from molfed.site.requests import RequestSigner, trusted_keys


@pytest.fixture
def job() -> dict:
    """A well-formed ``prepare`` job for partner ``beta``, as the coordinator writes it before sealing."""
    return {
        "partner": "beta",
        "action": "prepare",
        "parent_run_id": "a" * 32,
        "site_run_id": "b" * 32,
        "server_round": 0,
    }


@pytest.fixture
def coordinator_key() -> tuple[str, str]:
    """``(private PEM, public key text)`` of a fresh coordinator key."""
    return generate_keypair()


@pytest.fixture
def signer(coordinator_key) -> RequestSigner:
    """Signs requests of federation ``fed-name`` with :func:`coordinator_key`."""
    return RequestSigner(load_private_key(coordinator_key[0]), "fed-name")


@pytest.fixture
def trusted(coordinator_key):
    """The site's view of :func:`coordinator_key` (key id -> name, key)."""
    return trusted_keys({"coordinator": coordinator_key[1]})
