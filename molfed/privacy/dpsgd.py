"""Sample-level DP-SGD on molecular graphs: each molecule is one sample.

Per-sample gradients: a batch's per-graph losses ``l_i`` (each depends on graph ``i`` only: message passing stays
inside a graph, LayerNorm is per node, the readout pools per graph; BatchNorm would couple graphs and is not used)
are differentiated in one vectorized backward pass, ``autograd.grad(l, params, grad_outputs=I, is_grads_batched=True)``,
i.e. the rows of the Jacobian ``d l / d theta`` — graph ``i``'s gradient, all its nodes and edges included.

Each step: Poisson-sample graphs with rate ``q = batch_size / n`` (every graph independently, so batch sizes vary),
clip each graph's gradient to L2 norm ``max_grad_norm`` (over all parameters together), sum, add Gaussian noise
``N(0, (noise_multiplier * max_grad_norm)^2)`` per coordinate, divide by the expected batch size ``q * n``; the
optimizer (Adam, SGD, ...) then post-processes the noisy gradient. One epoch is ``round(1 / q)`` steps.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from molfed.models.model import MoleculeModel
from molfed.privacy import DP_MAX_GRAD_NORM, DP_NOISE_MULTIPLIER, DP_NOISE_SEED


@dataclass(frozen=True, slots=True)
class DPSGDSettings:
    noise_multiplier: float
    """Noise standard deviation as a multiple of ``max_grad_norm`` (sigma)."""
    max_grad_norm: float
    """Per-graph gradient L2 bound C."""
    noise_seed: int | None = None
    """Seed of the noise; None draws it from the OS (secure). A known seed lets anyone regenerate the noise."""


def sampling(n: int, batch_size: int) -> tuple[float, int]:
    """``(sample_rate, steps_per_epoch)`` of Poisson sampling for ``n`` graphs and a nominal ``batch_size``."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"sampling: got n={n}, batch_size={batch_size}, expected both >= 1")
    rate = min(1.0, batch_size / n)
    return rate, max(1, round(1.0 / rate))


def per_graph_losses(out: Tensor, y: Tensor, is_classification: Tensor) -> Tensor:
    """``[num_graphs]``: each graph's mean loss over its labelled tasks (0 for a graph without labels)."""
    mask = ~torch.isnan(y)
    target = torch.nan_to_num(y)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out, target, reduction="none")
    loss = torch.where(is_classification, bce, (out - target) ** 2) * mask
    return loss.sum(1) / mask.sum(1).clamp_min(1)


def per_sample_gradients(model: MoleculeModel, batch: Batch) -> tuple[list[Tensor], Tensor]:
    """Per-graph gradients ``[num_graphs, *param.shape]`` for every trainable parameter, and the per-graph losses."""
    params = [p for p in model.parameters() if p.requires_grad]
    losses = per_graph_losses(model.forward_batch(batch), model.scale_targets(batch.y), model.is_classification)
    eye = torch.eye(len(losses), dtype=losses.dtype, device=losses.device)
    grads = torch.autograd.grad(losses, params, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
    out = [g if g is not None else torch.zeros(len(losses), *p.shape) for g, p in zip(grads, params, strict=True)]
    return out, losses.detach()


def clip_and_sum(grads: Sequence[Tensor], max_norm: float) -> tuple[list[Tensor], Tensor]:
    """Scale each graph's gradient (all parameters together) to L2 norm <= ``max_norm`` and sum over graphs.

    Returns the summed gradients (parameter shapes) and each graph's norm before clipping ``[num_graphs]``.
    """
    flat = torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1)
    norms = flat.norm(dim=1)
    factor = (max_norm / (norms + 1e-12)).clamp(max=1.0)
    return [torch.einsum("b,b...->...", factor, g) for g in grads], norms


def noise_generator(settings: DPSGDSettings, *parts: object) -> torch.Generator:
    """A generator for the noise: seeded by ``settings.noise_seed`` and ``parts`` (e.g. round), else by the OS."""
    if settings.noise_seed is None:
        return torch.Generator().manual_seed(secrets.randbits(63))
    text = ":".join(map(str, ("dp-noise", settings.noise_seed, *parts)))
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1)


def add_noise(
    summed: Sequence[Tensor], settings: DPSGDSettings, denominator: float, generator: torch.Generator
) -> list[Tensor]:
    """``(sum + N(0, (sigma C)^2)) / denominator`` per tensor."""
    std = settings.noise_multiplier * settings.max_grad_norm
    return [
        (s + std * torch.randn(s.shape, generator=generator, dtype=s.dtype).to(s.device)) / denominator for s in summed
    ]


def poisson_indices(n: int, rate: float, generator: torch.Generator) -> Tensor:
    """Indices of the graphs sampled into one step: each independently with probability ``rate``."""
    return torch.nonzero(torch.rand(n, generator=generator) < rate).flatten()


def dp_step(
    model: MoleculeModel, graphs: Sequence[Data], settings: DPSGDSettings, denominator: float, noise: torch.Generator
) -> tuple[list[Tensor], float, int]:
    """One private gradient on ``graphs`` (may be empty): noisy mean gradient per trainable parameter, the sum of
    per-graph losses, and the number of graphs."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not graphs:
        zeros = [torch.zeros_like(p) for p in params]
        return add_noise(zeros, settings, denominator, noise), 0.0, 0
    batch = Batch.from_data_list(list(graphs)).to(params[0].device)
    grads, losses = per_sample_gradients(model, batch)
    summed, _ = clip_and_sum(grads, settings.max_grad_norm)
    return add_noise(summed, settings, denominator, noise), float(losses.sum()), len(graphs)


def train_dp(
    model: MoleculeModel,
    graphs: Sequence[Data],
    *,
    epochs: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    settings: DPSGDSettings,
    seed: int,
    proximal_mu: float = 0.0,
) -> tuple[float, int]:
    """Train ``model`` in place with DP-SGD for ``epochs`` x ``round(n / batch_size)`` Poisson-sampled steps.

    The FedProx term's gradient depends on the weights only and is added after the noise (post-processing).
    Returns the mean per-graph loss over the last epoch's sampled graphs and the number of steps.
    """
    rate, per_epoch = sampling(len(graphs), batch_size)
    denominator = rate * len(graphs)
    sampler = torch.Generator().manual_seed(seed)
    noise = noise_generator(settings, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params] if proximal_mu > 0 else None
    model.train()
    steps, epoch_loss = 0, 0.0
    for _ in range(epochs):
        total, count = 0.0, 0
        for _ in range(per_epoch):
            chosen = [graphs[i] for i in poisson_indices(len(graphs), rate, sampler).tolist()]
            grads, loss_sum, n = dp_step(model, chosen, settings, denominator, noise)
            optimizer.zero_grad(set_to_none=True)
            for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
                param.grad = grad if anchor is None else grad + proximal_mu * (param.detach() - anchor[i])
            optimizer.step()
            steps += 1
            total, count = total + loss_sum, count + n
        epoch_loss = total / max(count, 1)
    return epoch_loss, steps


def dp_settings_from_options(options: Mapping[str, float]) -> DPSGDSettings | None:
    """DP-SGD settings from a strategy's ``fit_options`` (None when ``dp_noise_multiplier`` is absent).

    Raises
    ------
    ValueError
        If the noise multiplier comes without a positive ``dp_max_grad_norm``, or either is negative.
    """
    if DP_NOISE_MULTIPLIER not in options:
        return None
    sigma, bound = float(options[DP_NOISE_MULTIPLIER]), float(options.get(DP_MAX_GRAD_NORM, 0.0))
    if sigma < 0 or bound <= 0:
        raise ValueError(f"DP-SGD: got noise_multiplier={sigma}, max_grad_norm={bound}, expected >= 0 and > 0")
    seed = options.get(DP_NOISE_SEED)
    return DPSGDSettings(sigma, bound, None if seed is None else int(seed))
