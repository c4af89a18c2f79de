"""Config of update integrity and secure aggregation: bounds, impossible combinations, keys; `molfed keygen`."""

from pathlib import Path

import pytest

from molfed.cli import main
from molfed.config import SiteConfig, load_config, site_run_config
from molfed.errors import ConfigError
from molfed.federated.keys import PRIVATE_FILE
from molfed.federated.signing import generate_keypair

MINIMAL = """
tasks: [{name: y}]
partners:
  - {name: a, path: libs/a.csv}
  - {name: b, path: libs/b.csv}
  - {name: c, path: libs/c.csv}
"""
SITES = "mode: sites\ntasks: [{name: y}]\npartners: [{name: a}, {name: b}]\nbaselines: {pooled: false}\n"


def _load(tmp_path: Path, extra: str, base: str = MINIMAL):
    path = tmp_path / "cfg.yaml"
    path.write_text(base + extra + "\n")
    return load_config(path)


def test_integrity_and_secure_aggregation_are_off_by_default_and_accept_a_working_setup(tmp_path):
    config = _load(tmp_path, "")
    assert not config.integrity.signing and not config.integrity.screens and not config.secure_aggregation.enabled
    key = generate_keypair()[1]
    config = _load(
        tmp_path,
        f"integrity: {{signing: true, public_keys: {{a: '{key}'}}}}\n"
        "secure_aggregation: {enabled: true, threshold: 3}\nfederation: {strategy: fedadam}",
    )
    assert config.integrity.public_keys == {"a": key} and config.secure_aggregation.threshold == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("secure_aggregation: {enabled: true}\nfederation: {strategy: krum}", "strategy 'krum' needs individual"),
        ("secure_aggregation: {enabled: true}\nfederation: {strategy: fedmedian}", "secure_aggregation.enabled: "),
        ("secure_aggregation: {enabled: true}\nfederation: {strategy: fedtrimmedavg}", "set federation.strategy"),
        ("secure_aggregation: {enabled: true}\nfederation: {strategy: scaffold}", "strategy 'scaffold'"),
        ("secure_aggregation: {enabled: true}\nintegrity: {min_cosine: 0.0}", "integrity.max_delta_norm / max_norm"),
        (
            "secure_aggregation: {enabled: true, threshold: 4}",
            "secure_aggregation.threshold: got 4, expected at most 3",
        ),
        ("secure_aggregation: {threshold: 1}", "secure_aggregation.threshold: Input should be greater than or equal"),
        ("secure_aggregation: {scale_bits: 60}", "secure_aggregation.scale_bits: Input should be less than"),
        ("integrity: {max_norm_ratio: 0.5}", "integrity.max_norm_ratio: Input should be greater than or equal to 1"),
        ("integrity: {min_cosine: 2}", "integrity.min_cosine: Input should be less than or equal to 1"),
        ("integrity: {max_delta_norm: 0}", "integrity.max_delta_norm: Input should be greater than 0"),
        ("integrity: {public_keys: {z: abc}}", "integrity.public_keys: unknown partner(s) ['z']"),
        ("integrity: {public_keys: {a: bm90IGEga2V5}}", "integrity.public_keys.a: got a 9-byte public key"),
        ("integrity: {public_keys: {a: '!!'}}", "integrity.public_keys.a: public key is neither PEM nor valid base64"),
        ("integrity: {signin: true}", "integrity.signin: Extra inputs are not permitted"),
    ],
)
def test_impossible_or_out_of_bounds_settings_are_refused_naming_the_key(tmp_path, extra, message):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, extra)
    assert message in str(err.value)


def test_sites_mode_needs_every_public_key_and_carries_secure_aggregation(tmp_path):
    with pytest.raises(ConfigError, match=r"sites mode needs every partner's key .* missing \['a', 'b'\]"):
        _load(tmp_path, "integrity: {signing: true}", SITES)
    keys = {n: generate_keypair()[1] for n in "ab"}
    extra = f"integrity: {{signing: true, public_keys: {keys}}}\nsecure_aggregation: {{enabled: true}}"
    config = _load(tmp_path, extra, SITES)
    assert config.integrity.public_keys == keys and config.secure_aggregation.enabled
    # the site's own view of it (one partner, local mode) keeps its key only and leaves the protocol to the job
    site = SiteConfig(name="b", path=tmp_path / "b.csv", workspace=tmp_path / "ws")
    view = site_run_config(config, site)
    assert view.integrity.public_keys == {"b": keys["b"]} and not view.secure_aggregation.enabled


def test_keygen_prints_the_public_key_for_the_config_and_keeps_the_private_key(tmp_path, capsys):
    assert main(["keygen", "--workspace", str(tmp_path / "ws")]) == 0
    public = capsys.readouterr().out.strip()
    assert (tmp_path / "ws" / PRIVATE_FILE).read_text().startswith("-----BEGIN PRIVATE KEY-----")
    config = _load(tmp_path, f"integrity: {{signing: true, public_keys: {{a: '{public}'}}}}")
    assert config.integrity.public_keys["a"] == public
    assert main(["keygen", "--workspace", str(tmp_path / "ws")]) == 2  # refuses to overwrite
    assert "exists already" in capsys.readouterr().err
