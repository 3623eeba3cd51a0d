"""``parse_weight_version``: the one reading of a server's reported version that every backend uses."""

import pytest

from areal_core.plugin import ArealError, parse_weight_version


@pytest.mark.parametrize(("reported", "expected"), [(None, 0), ("default", 0), ("0", 0), ("7", 7), (12, 12)])
def test_reported_versions_parse(reported, expected):
    assert parse_weight_version(reported) == expected


def test_a_non_integer_version_names_the_server_and_value():
    with pytest.raises(ArealError, match=r"vLLM server reported weight_version 'v2', which is not an integer"):
        parse_weight_version("v2", "vLLM server")
