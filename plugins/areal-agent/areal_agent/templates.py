"""A Hermes-style chat template with tools, for tokenizers whose own template has none.

Qwen2.5 / Qwen3 tokenizers ship a template that renders ``tools`` and ``tool_calls``; a plain
ChatML template (the tiny test models, many base models) ignores them, so the model would never
see its tools. ``chat_template: hermes`` in the workflow config selects this one instead. Layout::

    <|im_start|>system\\n{system}\\n\\n# Tools\\n<tools>\\n{tool json}\\n...</tools>\\n{how to call}<|im_end|>\\n
    <|im_start|>user\\n{content}<|im_end|>\\n
    <|im_start|>assistant\\n{content}<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call><|im_end|>\\n
    <|im_start|>tool\\n<tool_response>\\n{content}\\n</tool_response><|im_end|>\\n
    <|im_start|>assistant\\n                                     (add_generation_prompt)
"""

_SYSTEM = "{% set sys = messages[0]['content'] if messages and messages[0]['role'] == 'system' else none %}"
_NO_TOOLS = "{% elif sys %}<|im_start|>system\n{{ sys }}<|im_end|>\n{% endif %}"
_TURNS = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}"
    "{% elif m['role'] == 'tool' %}<|im_start|>tool\n<tool_response>\n{{ m['content'] }}\n</tool_response><|im_end|>\n"
    "{% elif m['role'] == 'assistant' %}<|im_start|>assistant\n{% if m['content'] %}{{ m['content'] }}{% endif %}"
    "{% for tc in m.get('tool_calls') or [] %}<tool_call>\n"
    "{{ {'name': tc['function']['name'], 'arguments': tc['function']['arguments']} | tojson }}\n</tool_call>"
    "{% endfor %}<|im_end|>\n"
    "{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

HERMES_TOOLS_TEMPLATE = (
    _SYSTEM
    + "{% if tools %}<|im_start|>system\n{% if sys %}{{ sys }}\n\n{% endif %}# Tools\n<tools>\n"
    "{% for t in tools %}{{ t | tojson }}\n{% endfor %}</tools>\n"
    "Call a tool with <tool_call>\n{\"name\": NAME, \"arguments\": {...}}\n</tool_call><|im_end|>\n"
    + _NO_TOOLS + _TURNS
)

# Same turns, tools listed as ``name(arg, ...)`` only: short prompts for tiny models and small contexts.
HERMES_BRIEF_TEMPLATE = (
    _SYSTEM
    + "{% if tools %}<|im_start|>system\n{% if sys %}{{ sys }}\n{% endif %}tools:"
    "{% for t in tools %} {{ t['function']['name'] }}({{ (t['function'].get('parameters') or {}).get('properties', {}) "
    "| list | join(', ') }}){% endfor %}<|im_end|>\n"
    + _NO_TOOLS + _TURNS
)

TEMPLATES = {"hermes": HERMES_TOOLS_TEMPLATE, "hermes_brief": HERMES_BRIEF_TEMPLATE}
