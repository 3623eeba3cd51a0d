"""A session's calls as training samples (:class:`~areal_core.api.types.Trajectory`).

**Discount.** Calls in the order they were made get rewards r_1..r_m (unset counts 0), turned
into returns from the last call back::

    G_m = r_m,    G_i = r_i + γ · G_{i+1}

so a reward paid at the end of a conversation reaches turn i as γ^(m-i) · r_m (fewer turns to
the answer, more reward: γ < 1 prefers short solutions).

**Modes.**
- ``individual``: each call is one trajectory, ``prompt_ids + completion_ids``, loss on the
  completion, reward G_i.
- ``concat``: a conversation is one trajectory. Calls link to their ``parent`` (the earlier call
  whose tokens are an exact prefix of theirs, see :mod:`areal_agent.chat`); each call no other
  call continues ends a chain root → ... → leaf, exported as the leaf's full token sequence with
  loss mask 1 exactly on every chain call's completion tokens (tool outputs, user turns and
  template text between them: mask 0), and reward G of the chain's first call.
"""

from __future__ import annotations

from typing import Literal

from areal_agent.session import CallRecord
from areal_core.plugin import Trajectory

ExportMode = Literal["individual", "concat"]


def discounted_returns(rewards: list[float | None], gamma: float) -> list[float]:
    """G_i = r_i + γ·G_{i+1}, unset (None) rewards as 0."""
    out = [0.0] * len(rewards)
    running = 0.0
    for i in range(len(rewards) - 1, -1, -1):
        running = (rewards[i] or 0.0) + gamma * running
        out[i] = running
    return out


def export_calls(calls: list[CallRecord], mode: ExportMode, gamma: float = 1.0, **traj_kw) -> list[Trajectory]:
    """Trajectories of one session's calls (``traj_kw``: group_id, sample_id, ...)."""
    returns = dict(zip((c.call_id for c in calls), discounted_returns([c.reward for c in calls], gamma)))
    info_base = traj_kw.pop("info", {})
    if mode == "individual":
        return [_trajectory([c], returns[c.call_id], dict(info_base, call_ids=[c.call_id]), **traj_kw) for c in calls]
    by_id = {c.call_id: c for c in calls}
    continued = {c.parent for c in calls if c.parent in by_id}
    out = []
    for leaf in calls:
        if leaf.call_id in continued:
            continue
        chain = [leaf]
        while chain[-1].parent in by_id:
            chain.append(by_id[chain[-1].parent])
        chain.reverse()
        info = dict(info_base, call_ids=[c.call_id for c in chain], turn_returns=[returns[c.call_id] for c in chain])
        out.append(_trajectory(chain, returns[chain[0].call_id], info, **traj_kw))
    return out


def _trajectory(chain: list[CallRecord], reward: float, info: dict, **kw) -> Trajectory:
    """``chain``: calls whose full token sequences are prefixes of one another, first to last."""
    ids = chain[-1].full_ids
    mask, logprobs, versions = [0] * len(ids), [0.0] * len(ids), [-1] * len(ids)
    for call in chain:
        start = len(call.prompt_ids)
        assert ids[:start + len(call.completion_ids)] == call.full_ids, "chain calls must be token prefixes"
        for j, (lp, v) in enumerate(zip(call.logprobs, call.versions)):
            mask[start + j], logprobs[start + j], versions[start + j] = 1, lp, v
    info = dict(info, n_calls=len(chain), finish_reasons=[c.finish_reason for c in chain])
    if any(c.tool_call_errors for c in chain):
        info["tool_call_errors"] = [e for c in chain for e in c.tool_call_errors]
    return Trajectory(input_ids=list(ids), loss_mask=mask, logprobs=logprobs, versions=versions, reward=reward,
                      finish_reason=chain[-1].finish_reason, info=info, **kw)
