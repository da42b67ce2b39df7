"""The key range a prefix stands for: the index range a prefix listing reads (csserver.store.sql)."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from csserver.store.sql import prefix_end

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)  # stored keys hold no surrogates
near_the_top = st.text(st.sampled_from(["a", "\ud7ff", "\ue000", "\U0010ffff", "\uffff"]), max_size=4)


@given(st.one_of(text, near_the_top), st.one_of(text, near_the_top))
@example("job/", "job0")
@example("a\ud7ff", "a\ue000")
@example("\U0010ffff", "\U0010ffffz")
def test_a_prefix_is_exactly_the_range_from_itself_to_its_end(prefix, key):
    end = prefix_end(prefix)
    in_range = prefix <= key and (end is None or key < end)
    assert in_range == key.startswith(prefix)


def test_the_ends_of_some_prefixes():
    assert prefix_end("job/") == "job0"
    assert prefix_end("a\ud7ff") == "a\ue000"  # the surrogates are skipped
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\U0010ffff") is None  # every key from here up
