"""Answer extraction, number normalisation and comparison, on hand-written completions."""

from fractions import Fraction

import pytest

from areal_math.answers import answers_match, canonical_text, extract_answer, parse_number, reference_answer

ALL = ["hashes", "boxed", "answer_is", "last_number"]


@pytest.mark.parametrize("completion, text, fmt", [
    ("48/2 = 24 clips in May.\n#### 72", "72", "hashes"),
    ("#### 5\nWait, that is wrong.\n#### 6", "6", "hashes"),                       # the last one counts
    ("So the total is \\boxed{\\frac{3}{4}} cups.", "\\frac{3}{4}", "boxed"),      # nested braces
    ("first \\boxed{3}, finally \\boxed{4}", "4", "boxed"),
    ("\\boxed{7} then a truncated \\boxed{1", "7", "boxed"),                      # unclosed box skipped
    ("the result is \\boxed 12 apples", "12", "boxed"),
    ("\\fbox{9}", "9", "boxed"),
    ("Thus, the final answer is $1,234.50. Done.", "$1,234.50", "answer_is"),
    ("Answer: 17\nmore text", "17", "answer_is"),
    ("She pays 3 * 4 = 12 dollars, plus 30 = 42", "42", "last_number"),
    ("pages 10-20", "20", "last_number"),                                            # not -20
])
def test_extraction(completion, text, fmt):
    assert extract_answer(completion, ALL) == extract_answer(completion, [fmt])
    found = extract_answer(completion, ALL)
    assert (found.text, found.format) == (text, fmt)


def test_format_order_decides_between_formats():
    completion = "The answer is 5. \\boxed{6}"
    assert extract_answer(completion, ["answer_is", "boxed"]).text == "5"
    assert extract_answer(completion, ["boxed", "answer_is"]).text == "6"


@pytest.mark.parametrize("completion", ["", "no digits here", "#### ", "\\boxed{"])
def test_nothing_found(completion):
    assert extract_answer(completion, ALL) is None


@pytest.mark.parametrize("text, value", [
    ("42", 42), ("1,234", 1234), ("$1,234.50", Fraction(2469, 2)), ("18.00", 18), ("18.", 18), ("-3", -3),
    ("\u22123", -3), ("+7", 7), ("0.5", Fraction(1, 2)), (".5", Fraction(1, 2)), ("3/4", Fraction(3, 4)),
    ("\\frac{3}{4}", Fraction(3, 4)), ("\\dfrac34", Fraction(3, 4)), ("-\\frac{1}{2}", Fraction(-1, 2)),
    ("50\\%", 50), ("50%", 50), ("\\$18", 18), ("\\text{18}", 18), ("90^\\circ", 90), ("1.5/2", Fraction(3, 4)),
])
def test_numbers_parse_exactly(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["2x+1", "\\sqrt{2}", "12 and 13", "5/0", "", "1,2,3"])
def test_non_numbers_stay_none(text):
    assert parse_number(text, loose=True) is None


@pytest.mark.parametrize("text, value", [("18 dollars", 18), ("x = 5", 5), ("about $42 in total", 42)])
def test_loose_reading_takes_a_number_among_words(text, value):
    assert parse_number(text) is None
    assert parse_number(text, loose=True) == value


def test_reference_is_the_text_after_the_last_hashes():
    assert reference_answer("She sold 48/2 = <<48/2=24>>24 clips.\n#### 72") == "72"
    assert reference_answer("#### 1,000 ") == "1,000"
    assert reference_answer(72) == "72"
    assert reference_answer("\\frac{1}{2}") == "\\frac{1}{2}"


@pytest.mark.parametrize("candidate, reference, same", [
    ("72", "72", True), ("72.0", "72", True), ("$72", "72", True), ("1,000", "1000", True),
    ("0.5", "\\frac{1}{2}", True), ("0.33", "1/3", False), ("71", "72", False), ("72 apples", "72", True),
    ("\\left( 1, 2 \\right)", "(1,2)", True), ("X+1", "x + 1", True), ("\\sqrt{2}", "2", False), ("", "", False),
])
def test_answers_match(candidate, reference, same):
    assert answers_match(candidate, reference) is same


def test_canonical_text_strips_spacing_and_outer_braces():
    assert canonical_text("{ \\dfrac{\\pi}{2} }") == "\\frac{\\pi}{2}"
    assert canonical_text("$x^2$.") == "x^2"
