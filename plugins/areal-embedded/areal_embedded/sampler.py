"""Next-token sampling for a batch of rows, each with its own sampling parameters.

For row b with logits z (shape [V]), temperature T, top-k k and top-p p:

    greedy (T = 0):  token = argmax z;            logprob = log softmax(z)[token]
    sampled:         q = softmax(z / T), restricted to the k most likely tokens, then to the
                     smallest prefix (by probability) whose mass reaches p, renormalised;
                     token ~ q;                    logprob = log q[token]

So a sampled token's logprob is taken under the distribution actually sampled from (after
temperature, top-k and top-p), which is what the PPO importance ratio needs. For greedy rows the
sampling distribution is a point mass, so we report the model's own distribution at temperature
1 instead: that equals a teacher-forced forward of the same tokens.

Randomness: one uniform number per row and step, drawn from the row's own ``random.Random``
(seeded per request), turned into a token by inverting the cumulative distribution. A request's
output therefore depends on its seed only, not on which other requests share its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BatchSampling:
    """Per-row sampling parameters of one batch, as tensors of shape [B]."""

    temperature: torch.Tensor  # float; 0 marks a greedy row
    top_k: torch.Tensor  # long; <= 0 means no cut
    top_p: torch.Tensor  # float in (0, 1]
    uniforms: torch.Tensor  # float64 in [0, 1): this step's random draw per row

    @property
    def any_filter(self) -> bool:
        sampled = self.temperature > 0
        return bool(((self.top_k > 0) & sampled).any() or ((self.top_p < 1.0) & sampled).any())


def filtered_log_probs(logits: torch.Tensor, params: BatchSampling) -> torch.Tensor:
    """Log-probabilities [B, V] of the distribution each row samples from (see module docstring)."""
    logits = logits.float()
    greedy = params.temperature <= 0
    temperature = torch.where(greedy, torch.ones_like(params.temperature), params.temperature)
    scaled = logits / temperature.unsqueeze(1)
    if params.any_filter:
        scaled = _top_k_top_p(scaled, params, greedy)
    return torch.log_softmax(scaled, dim=-1)


def _top_k_top_p(scaled: torch.Tensor, params: BatchSampling, greedy: torch.Tensor) -> torch.Tensor:
    vocab = scaled.shape[1]
    sorted_logits, order = scaled.sort(dim=-1, descending=True)
    rank = torch.arange(vocab, device=scaled.device).unsqueeze(0)
    top_k = torch.where((params.top_k > 0) & ~greedy, params.top_k, torch.full_like(params.top_k, vocab))
    drop = rank >= top_k.unsqueeze(1)
    probs = torch.softmax(sorted_logits.masked_fill(drop, float("-inf")), dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    top_p = torch.where(greedy, torch.ones_like(params.top_p), params.top_p)
    drop |= mass_before >= top_p.unsqueeze(1)  # keeps the first token always (mass_before = 0)
    filtered_sorted = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(scaled, float("-inf")).scatter(1, order, filtered_sorted)


def sample(logits: torch.Tensor, params: BatchSampling) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row. ``logits [B, V]`` -> (tokens [B] long, logprobs [B] float32)."""
    logp = filtered_log_probs(logits, params)
    greedy = params.temperature <= 0
    tokens = logp.argmax(dim=-1)
    if not bool(greedy.all()):
        cdf = logp.double().exp().cumsum(dim=-1)
        target = params.uniforms.to(cdf.device).unsqueeze(1) * cdf[:, -1:]
        drawn = torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_(max=logp.shape[1] - 1)
        tokens = torch.where(greedy, tokens, drawn)
    return tokens, logp.gather(1, tokens.unsqueeze(1)).squeeze(1)
