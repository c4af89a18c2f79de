"""Secure aggregation: the coordinator learns the sum of the partners' sample-weighted updates and nothing else.

Pairwise masking with double masking and Shamir-shared keys for dropout recovery (Bonawitz et al. 2017, CCS,
"Practical Secure Aggregation for Privacy-Preserving Machine Learning"), over the ring Z_2^64 in fixed point.
Partner side: :class:`SecAggPartner`; coordinator side: :func:`check_masked`, :func:`unmask_sum`,
:func:`secure_fedavg`; strategy compatibility: :func:`check_strategy_compatible`.
"""

from molfed.federated.secure.compat import (
    check_strategy_compatible,
    requires_individual_updates,
)
from molfed.federated.secure.coordinator import check_masked, secure_fedavg, unmask_sum, unmask_vector
from molfed.federated.secure.fixedpoint import DEFAULT_SCALE, decode, encode
from molfed.federated.secure.messages import AdvertisedKeys, EncryptedShare, MaskedUpdate, SecAggError, ShareReveal
from molfed.federated.secure.partner import SecAggPartner, default_threshold

__all__ = [
    "DEFAULT_SCALE",
    "AdvertisedKeys",
    "EncryptedShare",
    "MaskedUpdate",
    "SecAggError",
    "SecAggPartner",
    "ShareReveal",
    "check_masked",
    "check_strategy_compatible",
    "decode",
    "default_threshold",
    "encode",
    "requires_individual_updates",
    "secure_fedavg",
    "unmask_sum",
    "unmask_vector",
]
