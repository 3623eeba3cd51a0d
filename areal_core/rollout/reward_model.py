"""``reward_model``: RL rewards from a trained reward model (an ``areal rm`` export), batched.

    reward: {name: reward_model, path: runs/rm/export}

The reward of a completion is the model's scalar score at the last token of
``prompt tokens + completion tokens + eos``, rendered exactly as ``areal rm`` rendered its
training pairs (:func:`areal_core.data.preference.encode_prompt_completion`; ``chat_template``
must match the RM config's). The model (``AutoModelForTokenClassification`` with one label, what
``areal rm`` with ``{name: fsdp, critic: true}`` exports) runs in one worker thread of this
process: concurrent calls (the workflow scores a group's samples at once, many episodes run at
a time) are queued and scored together, up to ``batch_size`` per forward, waiting at most
``max_wait_ms`` for a batch to fill. Sequences are right-padded; the score is read at each one's
last real token.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Literal

from pydantic import Field

from areal_core.config.base import ComponentConfig
from areal_core.errors import ArealError


class RewardModelConfig(ComponentConfig):
    """A trained reward model as the RL reward."""

    path: str = Field(description="HF directory of the reward model (an `areal rm` export)")
    device: Literal["auto", "cpu", "cuda"] = Field("cpu", description="where the reward model runs (auto: cuda if available)")
    batch_size: int = Field(64, ge=1, description="completions scored per forward at most")
    max_wait_ms: float = Field(5.0, ge=0, description="how long the first queued completion waits for others to batch with")
    chat_template: bool = Field(True, description="render the prompt as one user message with the chat template "
                                                  "(as the RM's training pairs were; set as in the RM config)")
    scale: float = Field(1.0, description="reward = scale · score + shift")
    shift: float = Field(0.0, description="reward = scale · score + shift")


class RewardModelReward:
    """``reward(prompt, completion, sample) -> float``; thread-safe, batches concurrent calls."""

    def __init__(self, config: RewardModelConfig):
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        self.config = config
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(config.path)
            model = AutoModelForTokenClassification.from_pretrained(config.path, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise ArealError(f"reward reward_model: cannot load {config.path!r} as a reward model "
                             f"(an `areal rm` export): {exc}") from None
        if model.config.num_labels != 1:
            raise ArealError(f"reward reward_model: {config.path!r} has {model.config.num_labels} labels; a reward "
                             f"model has one (a scalar score)")
        device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._serve, name="reward-model", daemon=True)
        self._worker.start()

    def __call__(self, prompt: str, completion: str, sample: dict[str, Any]) -> float:
        future: Future = Future()
        self._queue.put((prompt, completion, future))
        return future.result()

    def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Rewards of (prompt, completion) pairs in one padded forward."""
        import torch

        from areal_core.data.preference import encode_prompt_completion

        seqs = [encode_prompt_completion(self.tokenizer, p, c, self.config.chat_template)[0] for p, c in pairs]
        longest = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), longest), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        with torch.no_grad():
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
        last = torch.tensor([len(s) - 1 for s in seqs], device=self.device)
        scores = logits[torch.arange(len(seqs), device=self.device), last, 0].float().cpu()
        return (self.config.scale * scores + self.config.shift).tolist()

    def _serve(self) -> None:
        """Worker: take a queued call, gather more for up to ``max_wait_ms``, score them together."""
        wait_s = self.config.max_wait_ms / 1000
        while True:
            batch = [self._queue.get()]
            try:
                while len(batch) < self.config.batch_size:
                    batch.append(self._queue.get(timeout=wait_s))
            except queue.Empty:
                pass
            try:
                scores = self.score([(p, c) for p, c, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiting caller gets the error
                for *_, future in batch:
                    future.set_exception(exc)
                continue
            for (*_, future), value in zip(batch, scores):
                future.set_result(value)
