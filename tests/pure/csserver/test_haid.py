"""The HAID codec: the Linkis wire format, stricter (SPEC section 6)."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from csserver.haid import MAX_ID, Haid, MalformedHaid, alias_problem, decode, encode
from tests.pure.csserver.linkis_haid import linkis_decode


def test_spec_example():
    assert encode("cs-a", "cs-b", 84835) == "4-4--cs-acs-b84835"
    assert decode("4-4--cs-acs-b84835") == Haid("cs-a", "cs-b", 84835)
    assert str(Haid("cs-a", "cs-b", 84835)) == "4-4--cs-acs-b84835"


def test_ids_that_linkis_issues_decode_the_same_way():
    assert decode("8-8--cs_1_devcs_2_dev84835") == Haid("cs_1_dev", "cs_2_dev", 84835)


@pytest.mark.parametrize("text, why", [
    ("8--cs_1_dev84835", "one length only"),
    ("8-8--cs_1_devcs_2_dev", "no id"),
    ("", "empty"),
    ("4-4-cs-acs-b1", "single dash separator"),
    ("4-4---cs-acs-b1", "three dashes: the primary would start with '-'... and lengths no longer fit"),
    ("04-4--cs-acs-b1", "leading zero in a length"),
    ("+4-4--cs-acs-b1", "signed length"),
    ("0-4--cs-b1", "zero length"),
    ("65-1--" + "a" * 65 + "b1", "alias longer than 64"),
    ("100-1--" + "a" * 100 + "b1", "three-digit length"),
    ("4-4--cs-acs-b01", "leading zero in the id"),
    ("4-4--cs-acs-b0", "id 0"),
    ("4-4--cs-acs-b-1", "signed id"),
    ("4-4--cs-acs-b1 ", "trailing space"),
    ("4-4--cs-acs-b1\n", "trailing newline"),
    ("4-4--cs-acs-b١", "a non-ASCII digit"),
    ("4-4--cs a cs-b1", "space in an alias"),
    ("4-4--cs--cs-b1", "'--' inside the primary"),
    ("4-4--cs-acs-b" + "9" * 19, "id beyond 2**63-1"),
    ("4-4--cs-acs", "too short for the backup"),
    ("４-4--cs-acs-b1", "a full-width length digit"),
    ("4-4--cs-acs-b1/x", "junk after the id"),
])
def test_malformed(text, why):
    with pytest.raises(MalformedHaid):
        decode(text)


def test_id_bounds():
    assert decode(f"1-1--ab{MAX_ID}").id == MAX_ID
    with pytest.raises(MalformedHaid):
        decode(f"1-1--ab{MAX_ID + 1}")


@pytest.mark.parametrize("primary, backup, id_", [
    ("", "b", 1), ("a" * 65, "b", 1), ("a--b", "c", 1), ("a b", "c", 1), ("é", "b", 1),
    ("a", "b", 0), ("a", "b", -1), ("a", "b", MAX_ID + 1), ("a", "b", True), ("a", "b", "1"), (None, "b", 1),
])
def test_encode_refuses_what_cannot_be_a_haid(primary, backup, id_):
    with pytest.raises(MalformedHaid):
        encode(primary, backup, id_)


def test_alias_rules():
    assert alias_problem("cs_1.dev-x") is None
    assert alias_problem("a" * 64) is None
    assert "--" in alias_problem("a--b")
    assert alias_problem("a" * 65)
    assert alias_problem(7)
    for edge in ("-a", "a-", "-"):
        assert "start or end" in alias_problem(edge)


def test_csserver_never_issues_a_haid_linkis_splits_differently():
    # "a-" and "-b" would join into "2-2--a--b1": Linkis splits that at both "--" and rejects it.
    with pytest.raises(MalformedHaid):
        encode("a-", "-b", 1)
    with pytest.raises(MalformedHaid):
        decode("2-2--a--b1")
    assert linkis_decode("2-2--a--b1") is None


ALIAS_CHARS = "abcXYZ019_.-"
aliases = st.text(alphabet=ALIAS_CHARS, min_size=1, max_size=64).filter(lambda a: alias_problem(a) is None)
ids = st.integers(min_value=1, max_value=MAX_ID)


@given(aliases, aliases, ids)
@example("a.-b", "_-_", 1)
@example("a" * 64, "b" * 64, MAX_ID)
def test_every_valid_triple_round_trips(primary, backup, id_):
    text = encode(primary, backup, id_)
    assert decode(text) == Haid(primary, backup, id_)


@given(aliases, aliases, ids)
@example("cs-a", "cs-b", 84835)
@example("x.-y", "z", 7)
def test_linkis_parses_every_haid_csserver_issues_the_same_way(primary, backup, id_):
    assert linkis_decode(encode(primary, backup, id_)) == (primary, backup, id_)


# Strings near the format find more edge cases than arbitrary text; arbitrary text is tried too.
near_haids = st.builds(
    lambda a, b, c, d, e: a + b + c + d + e,
    st.sampled_from(["", "1", "4", "9", "64", "65", "04", "10"]),
    st.sampled_from(["-", "--", "", "-4-", "-1-"]),
    st.sampled_from(["", "4", "64", "0"]),
    st.sampled_from(["--", "-", "---", ""]),
    st.text(alphabet=ALIAS_CHARS + "0123456789 \n١", max_size=140),
)


@given(st.one_of(st.text(max_size=200), near_haids))
def test_no_string_makes_decode_raise_anything_but_its_own_error(text):
    try:
        haid = decode(text)
    except MalformedHaid:
        return
    assert encode(haid.primary, haid.backup, haid.id) == text  # what decodes is the canonical spelling
    assert linkis_decode(text) == (haid.primary, haid.backup, haid.id)  # and Linkis reads it the same way


@pytest.mark.parametrize("text, expected", [
    ("8-8--cs_1_devcs_2_dev84835", ("cs_1_dev", "cs_2_dev", 84835)),  # route labels, the shipped suffix
    ("5-5--cs_1_cs_2_84835", ("cs_1_", "cs_2_", 84835)),  # route labels, the default empty suffix
    ("5-5--cs_1_cs_1_84835", ("cs_1_", "cs_1_", 84835)),  # a single instance is its own backup
])
def test_ids_linkis_issues_today_decode_identically(text, expected):
    assert linkis_decode(text) == expected
    assert decode(text) == Haid(*expected)


@given(st.one_of(st.none(), st.integers(), st.binary(), st.lists(st.integers())))
def test_non_strings_are_malformed(value):
    with pytest.raises(MalformedHaid):
        decode(value)
