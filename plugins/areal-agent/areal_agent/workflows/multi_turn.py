"""``multi_turn``: answer, hear "wrong, try again", answer again, up to ``max_turns`` times.

One conversation per episode sample (``n_samples`` of them, one group)::

    messages = [system?, user: task]
    for turn t = 1..K:
        answer_t = model(messages)                    (one call, spliced on the previous turn)
        r_t      = reward(task, answer_t, sample)
        if r_t >= success_threshold: call t gets r_t; stop
        call t gets 0; messages += [assistant: answer_t, user: feedback]
    export: discount r_i <- r_i + gamma * r_(i+1)  (a success at turn t is worth gamma^(t-1) at turn 1)

With ``export: concat`` (default) each conversation is one sample whose reward is the discounted
return of its first turn; the feedback turns are in it with loss mask 0.
"""

from __future__ import annotations

from pydantic import Field

from areal_agent.chat import ChatRequest
from areal_agent.session import Session
from areal_agent.workflows.common import ChatWorkflowConfig, ConversationWorkflow


class MultiTurnConfig(ChatWorkflowConfig):
    """Options of the ``multi_turn`` workflow."""

    max_turns: int = Field(3, ge=1, description="most answers per conversation (K)")
    feedback: str = Field("Your answer is wrong. Please try again.", description="user message after a wrong answer")
    success_threshold: float = Field(1.0, description="a reward at or above this ends the conversation")
    gamma: float = Field(0.9, ge=0.0, le=1.0, description="turn discount: reward r_i <- r_i + gamma * r_(i+1)")


class MultiTurnWorkflow(ConversationWorkflow):
    name = "multi_turn"
    config: MultiTurnConfig

    async def converse(self, engine, session: Session, task: str, messages: list[dict], sample) -> dict:
        for turn in range(1, self.config.max_turns + 1):
            (call,) = await self.chat.complete(engine, session, ChatRequest(messages=messages, sampling=self.sampling))
            outcome = await self.reward(task, call.message["content"], sample)
            if outcome.value >= self.config.success_threshold:
                call.reward = outcome.value
                return {"turns": turn}
            call.reward = 0.0
            messages = messages + [call.message, {"role": "user", "content": self.config.feedback}]
        return {"turns": self.config.max_turns}
