"""Secure aggregation with each partner's steps in separate processes (sites mode): state kept in its workspace,
messages through JSON, and nothing of the round left behind."""

import json
import stat

import numpy as np
import pytest

from molfed.federated.aggregate import fedavg
from molfed.federated.secure import site, wire
from molfed.federated.secure.rounds import secure_round
from molfed.federated.signing import generate_keypair, load_private_key
from molfed.federated.types import QuorumError, Update

RUN = "run/7"
rng = np.random.default_rng(1)
TEMPLATE = {"w": rng.normal(size=(4, 3)).astype(np.float32), "b": rng.normal(size=(3,)).astype(np.float32)}
NAMES = ["a", "b", "c"]
PAIRS = {n: generate_keypair() for n in NAMES}
PUBLIC = {n: pub for n, (_, pub) in PAIRS.items()}


def _update(name: str, seed: int) -> Update:
    noise = np.random.default_rng(seed)
    return Update(name, {k: (v + noise.normal(size=v.shape)).astype(np.float32) for k, v in TEMPLATE.items()}, 5 + seed)


class WorkspaceTransport:
    """Each partner's steps against its own workspace; every message goes through its JSON codec, as between jobs."""

    def __init__(self, workspaces, adverts, drop=None):
        self.workspaces, self.adverts, self.drop = workspaces, adverts, drop or {}

    def _each(self, step, names, call):
        out = {}
        for n in names:
            try:
                if self.drop.get(n) == step:
                    raise ConnectionError("gone")
                out[n] = call(n)
            except Exception as exc:
                out[n] = exc
        return out

    def advertise(self, partners, *, run_id, server_round, threshold):
        return {n: wire.advert_from_json(json.loads(json.dumps(self.adverts[n]))) for n in partners}

    def share_keys(self, roster, *, run_id, server_round):
        sent = json.loads(json.dumps({n: wire.advert_to_json(a) for n, a in roster.items()}))

        def call(n):
            got = {k: wire.advert_from_json(v) for k, v in sent.items()}
            shares = site.share_keys(self.workspaces[n], got, run_id=run_id, server_round=server_round)
            return [wire.share_from_json(json.loads(json.dumps(wire.share_to_json(s)))) for s in shares]

        return self._each("share_keys", list(roster), call)

    def mask(self, inboxes, *, run_id, server_round):
        def call(n):
            masked, signature = site.mask(
                self.workspaces[n],
                inboxes[n],
                run_id=run_id,
                server_round=server_round,
                load_key=lambda: load_private_key(PAIRS[n][0]),
            )
            assert not (site.round_dir(self.workspaces[n], run_id, server_round) / site.HELD).exists()
            return wire.masked_from_json(json.loads(json.dumps(wire.masked_to_json(masked, signature))))

        return self._each("mask", list(inboxes), call)

    def reveal(self, survivors, *, run_id, server_round):
        def call(n):
            reveal = site.reveal(self.workspaces[n], survivors, run_id=run_id, server_round=server_round)
            return wire.reveal_from_json(json.loads(json.dumps(wire.reveal_to_json(reveal))))

        return self._each("reveal", survivors, call)

    def end_round(self, run_id, server_round):
        pass


def _held(tmp_path, updates, server_round=1):
    workspaces = {n: tmp_path / n for n in NAMES}
    adverts = {}
    for n, u in updates.items():
        key = load_private_key(PAIRS[n][0])
        advert = site.hold(
            workspaces[n],
            u,
            run_id=RUN,
            server_round=server_round,
            threshold=2,
            scale=2**16,
            signing_key=key,
            peer_keys=PUBLIC,
        )
        adverts[n] = wire.advert_to_json(advert)
    return workspaces, adverts


@pytest.mark.parametrize(("drop", "survivors"), [({}, NAMES), ({"c": "mask"}, ["a", "b"])], ids=["all", "c-drops"])
def test_site_steps_give_fedavg_of_the_survivors_and_leave_no_round_state(tmp_path, drop, survivors):
    updates = {n: _update(n, i) for i, n in enumerate(NAMES)}
    workspaces, adverts = _held(tmp_path, updates)
    directory = site.round_dir(workspaces["a"], RUN, 1)
    assert {p.name for p in directory.iterdir()} == {site.SESSION, site.HELD}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in directory.iterdir())
    transport = WorkspaceTransport(workspaces, adverts, drop)
    result = secure_round(
        transport, NAMES, template=TEMPLATE, run_id=RUN, server_round=1, threshold=2, public_keys=PUBLIC
    )
    expected = fedavg([(updates[n].weights, updates[n].n_samples) for n in survivors])
    for k in expected:
        np.testing.assert_allclose(result.weights[k], expected[k], atol=1e-4)
    assert list(result.survivors) == survivors
    for n in survivors:
        assert not site.round_dir(workspaces[n], RUN, 1).exists()
    for n in set(NAMES) - set(survivors):  # a dropout's leftovers go at its next job
        assert site.round_dir(workspaces[n], RUN, 1).exists()
        site.forget(workspaces[n], RUN)
        assert not site.run_dir(workspaces[n], RUN).exists()


def test_a_forged_round_key_signature_stops_the_roster_at_the_partners(tmp_path):
    updates = {n: _update(n, i) for i, n in enumerate(NAMES)}
    workspaces, adverts = _held(tmp_path, updates)
    forged = dict(adverts["c"], signature=adverts["a"]["signature"])
    transport = WorkspaceTransport(workspaces, {**adverts, "c": forged})
    # the coordinator screens it out (public keys configured); the others go on without c
    result = secure_round(
        transport, NAMES, template=TEMPLATE, run_id=RUN, server_round=1, threshold=2, public_keys=PUBLIC
    )
    assert list(result.survivors) == ["a", "b"]
    # without the coordinator's screen, the partners themselves refuse the roster
    workspaces, adverts = _held(tmp_path / "again", updates, server_round=2)
    transport = WorkspaceTransport(
        workspaces, {**adverts, "c": dict(adverts["c"], signature=adverts["a"]["signature"])}
    )
    with pytest.raises(QuorumError, match="shared keys"):
        secure_round(transport, NAMES, template=TEMPLATE, run_id=RUN, server_round=2, threshold=2)
