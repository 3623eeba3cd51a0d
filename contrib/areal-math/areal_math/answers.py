"""Final answers of math completions: find them, normalise them, compare them. Pure functions.

**Extraction.** :func:`extract_answer` tries the formats in the order given; the first format
that finds an answer wins, and within a format the *last* occurrence counts (a model that revises
itself ends with the answer it stands by):

===============  ==============================  ============================================
format           example                         what is taken
===============  ==============================  ============================================
``hashes``       ``#### 42``                     the rest of the line after the last ``####``
``boxed``        ``\\boxed{\\frac{1}{2}}``         the content of the last ``\\boxed{..}`` /
                                                 ``\\fbox{..}``, braces balanced (an unclosed
                                                 one, e.g. a truncated completion, is skipped)
``answer_is``    ``The final answer is $42.``    after the last "answer is" / "answer:", up to
                                                 the end of the sentence or line
``last_number``  ``so 40 + 2 = 42``              the last number anywhere (the fallback)
===============  ==============================  ============================================

**Normalisation.** :func:`parse_number` reads an answer as an exact ``fractions.Fraction``:
LaTeX wrappers go (``\\text{..}``, ``\\mathrm{..}``, ``\\left``/``\\right``, ``\\,``, ``\\!``,
``^\\circ``, ``\\$``, ``\\%``), as do ``$``, ``%``, a leading ``+``, thousands separators
(``1,234``) and a final full stop; the Unicode minus reads as ``-``; ``18.00`` is 18, ``0.5`` is
1/2, ``\\frac{3}{4}``, ``\\dfrac34`` and ``3/4`` are 3/4. With ``loose=True`` (a completion's
answer, not a reference) a number followed or preceded only by words is accepted too
(``18 dollars``, ``x = 5``), but not one inside an expression (``2x+1``, ``\\sqrt{2}``).

**Comparison.** :func:`answers_match`: when the reference reads as a number, the candidate must
read (loosely) as the same number, compared exactly; otherwise the two canonical strings
(:func:`canonical_text`: LaTeX spacing removed, lower case, no whitespace) must be equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

AnswerFormat = Literal["hashes", "boxed", "answer_is", "last_number"]
MARKED_FORMATS: tuple[str, ...] = ("hashes", "boxed", "answer_is")  # the completion says which part is the answer

# A number token: optional sign (not right after a word character or closing bracket, so "10-20"
# is 10 and 20, not 10 and -20), digits with or without thousands separators, decimals, and an
# optional "/denominator".
_UNSIGNED = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
NUMBER = re.compile(rf"(?:(?<![\w)\]}}])[-+])?(?:{_UNSIGNED})(?:\s*/\s*(?:{_UNSIGNED}))?")
_WHOLE_NUMBER = re.compile(rf"[-+]?(?:{_UNSIGNED})(?:/(?:{_UNSIGNED}))?")

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:|=)\s*:?\s*(.*?)(?:\.(?:\s|$)|\n|$)", re.IGNORECASE)
_FRAC_BRACED = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]*?)\s*\}\s*\{\s*([^{}]*?)\s*\}")
_FRAC_DIGITS = re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)")
_TEXT_COMMANDS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_DROPPED_LATEX = re.compile(r"\\left|\\right|\\[,!;:]|\\quad|\\qquad|\^\s*\{?\\circ\}?|\\displaystyle")
_EXPRESSION_CHARS = set("+-*/^=<>\\{}()[]|")
_VARIABLE_PREFIX = re.compile(r"^[a-zA-Z]\s*=\s*")


@dataclass(frozen=True)
class Extracted:
    """An answer found in a completion: its text and the format that found it."""

    text: str
    format: str


def extract_answer(completion: str, formats: tuple[str, ...] | list[str]) -> Extracted | None:
    """The final answer of ``completion`` by the first of ``formats`` that finds one, else None."""
    for fmt in formats:
        found = _EXTRACTORS[fmt](completion)
        if found is not None and found.strip():
            return Extracted(found.strip(), fmt)
    return None


def reference_answer(field: object) -> str:
    """The reference answer held in a dataset field: the text after the last ``####`` (a GSM8K
    solution), else the whole field (a bare answer such as ``72`` or ``\\frac{1}{2}``)."""
    text = str(field)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    return text.strip()


def answers_match(candidate: str, reference: str) -> bool:
    """Whether an extracted answer equals the reference (see the module docstring)."""
    expected = parse_number(reference)
    if expected is not None:
        return parse_number(candidate, loose=True) == expected
    return canonical_text(candidate) == canonical_text(reference) != ""


def parse_number(text: str, loose: bool = False) -> Fraction | None:
    """``text`` as an exact number, or None when it does not read as one (module docstring)."""
    s = strip_latex(text).replace("$", "").replace("%", "").strip()
    s = re.sub(r"\s*/\s*", "/", s.rstrip(".").strip())
    if _WHOLE_NUMBER.fullmatch(s):
        return _to_fraction(s)
    if not loose:
        return None
    s = _VARIABLE_PREFIX.sub("", s)
    tokens = list(NUMBER.finditer(s))
    if len(tokens) != 1:
        return None
    rest = s[: tokens[0].start()] + s[tokens[0].end():]
    if any(ch.isdigit() or ch in _EXPRESSION_CHARS for ch in rest):
        return None
    return _to_fraction(tokens[0].group())


def strip_latex(text: str) -> str:
    """Plain text from the LaTeX of a typical answer: fractions as ``a/b``, wrappers removed."""
    s = text.replace("\u2212", "-").replace("\\$", "$").replace("\\%", "%")
    s = _TEXT_COMMANDS.sub(r"\1", s)
    s = _DROPPED_LATEX.sub("", s)
    s = _FRAC_DIGITS.sub(r"\1/\2", s)
    if _FRAC_BRACED.search(s):
        s = _FRAC_BRACED.sub(lambda m: f"{m.group(1)}/{m.group(2)}" if _is_plain_number(m.group(1), m.group(2))
                             else m.group(0), s)
    return s.strip()


def canonical_text(text: str) -> str:
    """A string form for non-numeric answers: LaTeX stripped, lower case, no whitespace, no outer
    ``$``/``{}``, no final full stop."""
    s = re.sub(r"\s+", "", strip_latex(text)).lower().replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.rstrip(".").strip("$")
    while s.startswith("{") and s.endswith("}") and _balanced(s[1:-1]):
        s = s[1:-1]
    return s


# -- extractors: each returns the text of the last answer of its format, or None ----------------

def _after_hashes(text: str) -> str | None:
    if "####" not in text:
        return None
    return text.rsplit("####", 1)[1].split("\n", 1)[0]


def _last_boxed(text: str) -> str | None:
    """Content of the last closed ``\\boxed{..}`` (or ``\\boxed 5``); nested braces kept."""
    starts = sorted((m.start(), m.end()) for cmd in _BOX_COMMANDS for m in re.finditer(re.escape(cmd), text))
    for _start, end in reversed(starts):
        rest = text[end:]
        stripped = rest.lstrip()
        if stripped.startswith("{"):
            content = _braced(stripped)
            if content is not None:
                return content
        elif rest[:1] == " " and stripped:  # "\boxed 5": one space-separated token
            return re.split(r"[\s$]", stripped, maxsplit=1)[0]
    return None


def _after_answer_is(text: str) -> str | None:
    matches = list(_ANSWER_IS.finditer(text))
    return matches[-1].group(1) if matches else None


def _last_number(text: str) -> str | None:
    matches = list(NUMBER.finditer(text.replace("\u2212", "-")))
    return matches[-1].group() if matches else None


_EXTRACTORS = {"hashes": _after_hashes, "boxed": _last_boxed, "answer_is": _after_answer_is,
               "last_number": _last_number}


# -- helpers ------------------------------------------------------------------------------------

def _braced(text: str) -> str | None:
    """``text`` starts with ``{``: the content up to the matching ``}``, or None if never closed."""
    depth = 0
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[1:i]
    return None


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def _is_plain_number(*parts: str) -> bool:
    return all(_WHOLE_NUMBER.fullmatch(p.replace(",", "").replace(" ", "")) for p in parts)


def _to_fraction(token: str) -> Fraction | None:
    """``"1,234.5"``, ``"-3/4"``, ``"1.5/2"`` -> Fraction; None for a zero denominator."""
    token = token.replace(",", "").replace(" ", "").lstrip("+")
    numerator, _, denominator = token.partition("/")
    try:
        value = Fraction(numerator)
        return value / Fraction(denominator) if denominator else value
    except (ValueError, ZeroDivisionError):
        return None
