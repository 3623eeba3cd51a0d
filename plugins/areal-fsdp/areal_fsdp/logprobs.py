"""Per-token logprobs and entropy from packed logits, chunked so no [T, V] float32 copy is made.

For a packed row of T tokens with logits ℓ [T, V] and z = ℓ / τ (temperature τ):

    logprob[t] = z[t-1, x_t] − logsumexp(z[t-1])                     (0 where t starts a sequence)
    entropy[t] = logsumexp(z[t-1]) − Σ_v softmax(z[t-1])_v · z[t-1, v]  (0 where t starts a sequence)

Position t holds the prediction *of* token t, so both line up with ``input_ids``. In a tree row
(:mod:`areal_fsdp.prefix`) the prediction of token t comes from its parent row instead of t−1.
The autograd function below saves only the logits (already alive), the rows it reads, targets
and two [N] vectors, and in backward recomputes softmax one chunk at a time:

    ∂logprob/∂z = onehot(x) − p,      ∂entropy/∂z = −p · (log p + H),      ∂z/∂ℓ = 1/τ.
"""

from __future__ import annotations

import torch


class _ChunkedLogprobEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, rows: torch.Tensor | None, targets: torch.Tensor, temperature: float,
                chunk: int):
        n = targets.shape[0]
        dtype = torch.promote_types(logits.dtype, torch.float32)
        logprobs = torch.empty(n, dtype=dtype, device=logits.device)
        entropy = torch.empty_like(logprobs)
        lse = torch.empty_like(logprobs)
        for s in range(0, n, chunk):
            z = _read(logits, rows, s, s + chunk).to(dtype) / temperature
            lse_c = torch.logsumexp(z, dim=-1)
            p = torch.exp(z - lse_c[:, None])
            logprobs[s:s + chunk] = z.gather(-1, targets[s:s + chunk, None]).squeeze(-1) - lse_c
            entropy[s:s + chunk] = lse_c - (p * z).sum(-1)
            lse[s:s + chunk] = lse_c
        ctx.save_for_backward(logits, rows, targets, lse, entropy)
        ctx.temperature, ctx.chunk = temperature, chunk
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs: torch.Tensor, grad_entropy: torch.Tensor):
        logits, rows, targets, lse, entropy = ctx.saved_tensors
        tau, chunk = ctx.temperature, ctx.chunk
        grad = torch.empty_like(logits) if rows is None else torch.zeros_like(logits)
        for s in range(0, targets.shape[0], chunk):
            e = s + chunk
            log_p = _read(logits, rows, s, e).to(lse.dtype) / tau - lse[s:e, None]
            p = torch.exp(log_p)
            g_lp, g_ent = grad_logprobs[s:e, None], grad_entropy[s:e, None]
            g = -p * (g_lp + g_ent * (log_p + entropy[s:e, None]))
            g.scatter_add_(-1, targets[s:e, None], g_lp)
            if rows is None:
                grad[s:e] = (g / tau).to(grad.dtype)
            else:  # a row read twice gets both gradients
                grad.index_add_(0, rows[s:e], (g / tau).to(grad.dtype))
        return grad, None, None, None, None


def _read(logits: torch.Tensor, rows: torch.Tensor | None, s: int, e: int) -> torch.Tensor:
    """Entries s..e-1 of the logits read: rows s..e-1, or rows ``rows[s:e]``."""
    return logits[s:e] if rows is None else logits[rows[s:e]]


def token_logprobs_entropy(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                           chunk: int = 1024, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """logprob of ``targets[i]`` and entropy under softmax(``logits[rows[i]]``/τ): two [N].

    ``logits`` [R, V] (any float dtype; computed and returned in at least float32), ``targets``
    [N] long, ``rows`` [N] long (default: 0..N-1, so R = N). Differentiable in ``logits``.
    """
    return _ChunkedLogprobEntropy.apply(logits, rows, targets, float(temperature), int(chunk))


def packed_logprobs_entropy(logits: torch.Tensor, input_ids: torch.Tensor, seq_starts: torch.Tensor,
                            temperature: float = 1.0, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token logprob of ``input_ids[t]`` given its prefix, and the entropy it was drawn from.

    ``logits`` [T, V] of one packed row, ``input_ids`` [T], ``seq_starts`` [T] bool (True at each
    sequence's first token). Returns two [T] (at least float32), 0 at sequence starts.
    """
    lp, ent = token_logprobs_entropy(logits[:-1], input_ids[1:], temperature, chunk)
    zero = lp.new_zeros(1)
    lp, ent = torch.cat([zero, lp]), torch.cat([zero, ent])
    return lp.masked_fill(seq_starts, 0.0), ent.masked_fill(seq_starts, 0.0)


def tree_logprobs_entropy(logits: torch.Tensor, input_ids: torch.Tensor, parents: torch.Tensor,
                          temperature: float = 1.0, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token logprob of ``input_ids[u]`` under the logits of row ``parents[u]``, and that
    distribution's entropy, for a tree row (:class:`areal_fsdp.prefix.SharedPrefixRow`).

    ``logits`` [T', V], ``input_ids`` [T'], ``parents`` [T'] long (-1: no parent). Returns two
    [T'] (at least float32), 0 where there is no parent.
    """
    has_parent = (parents >= 0).nonzero().squeeze(1)
    lp, ent = token_logprobs_entropy(logits, input_ids[has_parent], temperature, chunk, rows=parents[has_parent])
    zeros = lp.new_zeros(parents.shape[0])
    return zeros.index_copy(0, has_parent, lp), zeros.index_copy(0, has_parent, ent)
