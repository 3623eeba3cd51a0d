"""Preference pairs and chat conversations as token ids + loss masks, in the common row shapes.

A preference row holds a prompt and two answers, the preferred (``chosen``) and the other
(``rejected``). Accepted shapes (field names configurable)::

    {"prompt": "2+3=", "chosen": "5", "rejected": "6"}                                  text
    {"prompt": [{"role": "user", "content": "2+3="}], "chosen": "5", "rejected": "6"}   prompt as messages
    {"prompt": ..., "chosen": {"role": "assistant", "content": "5"}, ...}              answer as one message
    {"chosen": [{"role": "user", ...}, {"role": "assistant", "content": "5"}],           whole conversations:
     "rejected": [{"role": "user", ...}, {"role": "assistant", "content": "6"}]}        the last message is the answer

An answer given as a conversation may repeat the prompt's messages or omit them (then the
``prompt`` field's messages come first); without a ``prompt`` field its messages before the last
are the prompt. Every sequence is rendered as the ``rlvr`` workflow renders a prompt (chat
template with the generation prompt; raw text with ``chat_template: false``) followed by the
answer's tokens and eos; the loss mask covers the answer and the eos.

Conversations for SFT (:func:`encode_conversation`): every assistant message is a target. For the
k-th message, the text before it is the chat template of the messages before it with the
generation prompt, and its tokens are its content followed by eos; the template must render each
assistant message as ``content`` + eos (ChatML and most templates do), which is checked.

Errors name the dataset field, the row (its sample id and index) and the row field at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from areal_core.errors import ArealError

Encoded = tuple[list[int], list[int]]  # (input_ids, loss_mask)


@dataclass(frozen=True)
class PreferenceFields:
    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    chat_template: bool = True


def row_label(row: dict[str, Any], index: int, dataset: str) -> str:
    return f"{dataset} row {row.get('sample_id', '?')!r} (index {index})"


def encode_prompt_completion(tokenizer, prompt: str | list[dict], completion: str, chat_template: bool = True) -> Encoded:
    """Prompt (mask 0) + completion + eos (mask 1). A text prompt becomes one user message when
    ``chat_template``; a message list is always rendered with the template."""
    if isinstance(prompt, list):
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    elif chat_template:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    else:
        text = prompt
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    target = _target_ids(tokenizer, completion)
    return prompt_ids + target, [0] * len(prompt_ids) + [1] * len(target)


def encode_conversation(tokenizer, messages: list[dict], where: str) -> Encoded:
    """Every assistant message is a target (content + eos, mask 1); the rest is context (mask 0)."""
    _check_messages(messages, where)
    eos = tokenizer.eos_token
    ids: list[int] = []
    mask: list[int] = []
    done = ""
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:k], tokenize=False, add_generation_prompt=True) if k else ""
        turn = prompt + str(message["content"]) + (eos or "")
        rendered = tokenizer.apply_chat_template(messages[:k + 1], tokenize=False)
        if not prompt.startswith(done) or not rendered.startswith(turn):
            raise ArealError(f"{where}: the tokenizer's chat template does not render assistant message {k} as its "
                             f"content followed by eos ({eos!r}) after the messages before it; per-turn loss masks "
                             f"need such a template")
        context = tokenizer(prompt[len(done):], add_special_tokens=False)["input_ids"] if len(prompt) > len(done) else []
        target = _target_ids(tokenizer, str(message["content"]))
        ids += context + target
        mask += [0] * len(context) + [1] * len(target)
        done = turn
    if not any(mask):
        raise ArealError(f"{where}: the conversation has no assistant message to train on")
    return ids, mask


def encode_pair(row: dict[str, Any], tokenizer, fields: PreferenceFields, where: str) -> tuple[Encoded, Encoded]:
    """(chosen, rejected) of one preference row, each (input_ids, loss_mask)."""
    prompt = row.get(fields.prompt)
    if prompt is not None and not isinstance(prompt, (str, list)):
        raise ArealError(f"{where}: field {fields.prompt!r} must be text or a list of messages, got "
                         f"{type(prompt).__name__}")
    if isinstance(prompt, list):
        _check_messages(prompt, f"{where}: field {fields.prompt!r}")
    chosen = _encode_answer(row, fields.chosen, prompt, tokenizer, fields, where)
    return chosen, _encode_answer(row, fields.rejected, prompt, tokenizer, fields, where)


def _encode_answer(row, name, prompt, tokenizer, fields, where) -> Encoded:
    if name not in row or row[name] is None:
        raise ArealError(f"{where}: no field {name!r}; its fields: {sorted(k for k in row if k != 'sample_id')}")
    answer = row[name]
    at = f"{where}: field {name!r}"
    if isinstance(answer, dict):
        answer = [answer]
    if isinstance(answer, str):
        if prompt is None:
            raise ArealError(f"{at} is text but the row has no {fields.prompt!r} field (the prompt)")
        return encode_prompt_completion(tokenizer, prompt, answer, fields.chat_template)
    if not isinstance(answer, list):
        raise ArealError(f"{at} must be text, a message or a list of messages, got {type(answer).__name__}")
    _check_messages(answer, at)
    if answer[-1]["role"] != "assistant":
        raise ArealError(f"{at}: the last message must be the assistant's answer (got role {answer[-1]['role']!r})")
    context = answer[:-1]
    if isinstance(prompt, list) and context[:len(prompt)] != prompt:
        context = prompt + context
    elif isinstance(prompt, str):
        context = [{"role": "user", "content": prompt}] + context if not context else context
    if not context:
        raise ArealError(f"{at}: a one-message answer needs the {fields.prompt!r} field (the prompt)")
    return encode_prompt_completion(tokenizer, context, str(answer[-1]["content"]))


def _check_messages(messages: Any, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise ArealError(f"{where}: expected a non-empty list of {{role, content}} messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ArealError(f"{where}: message {i} must be a mapping with 'role' and 'content', got {m!r:.80}")


def _target_ids(tokenizer, completion: str) -> list[int]:
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    if not ids:
        raise ArealError("an empty answer and a tokenizer without an eos token leave nothing to train on")
    return ids
