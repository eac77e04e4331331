"""Policy checks on counts and instance types, which run before any AWS call."""

from __future__ import annotations

import pytest

from bot.config import Settings
from bot.errors import InvalidRequest, NotAllowed
from bot.policy import Policy


@pytest.fixture
def policy(settings: Settings) -> Policy:
    return Policy(settings)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", 1), (" 3 ", 3), (7, 7), ("10", 10)],
)
def test_parse_count_accepts_whole_numbers(
    policy: Policy, value: object, expected: int
) -> None:
    assert policy.parse_count(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        "0",
        "-1",
        "abc",
        "1e3",
        "",
        "   ",
        "99999",
        "11",
        "1.5",
        1.5,
        True,
        False,
        None,
        "+1",
        "\u0661",  # ARABIC-INDIC DIGIT ONE, which str.isdigit() accepts
        "\uff11",  # FULLWIDTH DIGIT ONE
        "1\n2",
    ],
)
def test_parse_count_rejects_invalid_input(policy: Policy, value: object) -> None:
    with pytest.raises(InvalidRequest) as raised:
        policy.parse_count(value)
    assert list(raised.value.fields) == ["quantity"]
    assert raised.value.http_status == 400


def test_parse_count_names_the_given_field(policy: Policy) -> None:
    with pytest.raises(InvalidRequest) as raised:
        policy.parse_count("abc", field="count")
    assert list(raised.value.fields) == ["count"]
    assert "abc" in raised.value.fields["count"]


def test_parse_count_reports_missing_value(policy: Policy) -> None:
    with pytest.raises(InvalidRequest) as raised:
        policy.parse_count("")
    assert raised.value.fields["quantity"] == "is required"


def test_parse_count_states_the_maximum(policy: Policy) -> None:
    with pytest.raises(InvalidRequest) as raised:
        policy.parse_count("99999")
    assert "at most 10" in raised.value.fields["quantity"]


def test_parse_count_follows_configured_maximum(settings: Settings) -> None:
    policy = Policy(settings.model_copy(update={"max_instances": 2}))
    assert policy.parse_count("2") == 2
    with pytest.raises(InvalidRequest):
        policy.parse_count("3")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("T3.Micro", "t3.micro"), (" t4g.small ", "t4g.small"), ("m5.large", "m5.large")],
)
def test_check_instance_type_normalizes_name(
    policy: Policy, value: str, expected: str
) -> None:
    assert policy.check_instance_type(value) == expected


@pytest.mark.parametrize(
    "value",
    ["t3", "t3..micro", "rm -rf", "<!channel>", "", ".micro", "t3.", "t3.micro; ls"],
)
def test_check_instance_type_rejects_malformed_name(policy: Policy, value: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        policy.check_instance_type(value)
    assert list(raised.value.fields) == ["instance_type"]


def test_check_instance_type_rejects_type_not_allowed(policy: Policy) -> None:
    with pytest.raises(NotAllowed) as raised:
        policy.check_instance_type("p4d.24xlarge")
    assert "p4d.24xlarge" in raised.value.message
    assert raised.value.http_status == 403
    assert raised.value.hint is not None
    assert "t3.micro" in raised.value.hint


def test_check_instance_type_follows_configured_list(settings: Settings) -> None:
    policy = Policy(
        settings.model_copy(update={"allowed_instance_types": ("c5.large",)})
    )
    assert policy.check_instance_type("C5.Large") == "c5.large"
    with pytest.raises(NotAllowed):
        policy.check_instance_type("t3.micro")
