"""Which aggregation strategies each privacy mode can run with (read from :mod:`molfed.federated.capabilities`)."""

from molfed.federated.capabilities import STRATEGY_NAMES, caps, names_where

#: Strategies that only need the (noisy) mean update, so client-level DP can feed them one pseudo-update.
CLIENT_DP_STRATEGIES = tuple(names_where("client_dp"))
#: Strategies whose partner-side extras would be computed from private data without noise.
NO_SAMPLE_DP_STRATEGIES = tuple(n for n in STRATEGY_NAMES if not caps(n).sample_dp)
