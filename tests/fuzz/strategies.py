"""Hypothesis strategies and profiles shared by the fuzz tests.

Profiles (chosen with the `HYPOTHESIS_PROFILE` environment variable, `ci` by
default): `ci` keeps the default fuzz run to a couple of minutes; `deep` runs
thousands of cases per test (tens of minutes). Profiles are applied per test
with `@FUZZ`, never loaded globally, so other property tests keep their own.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

_COMMON: dict[str, Any] = {
    "deadline": None,
    "derandomize": False,
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
}
settings.register_profile("ci", max_examples=25, **_COMMON)
settings.register_profile("deep", max_examples=2000, **_COMMON)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
"""The fuzz profile in use: `ci` (default) or `deep`."""
FUZZ = settings.get_profile(PROFILE)
"""Decorator giving a fuzz test the selected profile (an unknown name fails)."""

SPECIAL = [":", "{", "}", "*", "?", "[", "]", "\n", "\r", "\0", "\ud800", "\udfff"]
"""Characters that break key patterns, hash tags, line protocols or encodings."""
OTHER = ["a", "b", "Z", "0", " ", "%", "%2F", "\\", "'", '"', "`", "é", "日", "🙂"]

short_text = st.lists(st.sampled_from(SPECIAL + OTHER), max_size=8).map("".join)
"""Short strings made mostly of awkward characters (the empty string included)."""

ident = st.one_of(
    short_text,
    short_text,
    st.text(max_size=12),
    st.builds(
        lambda c, n: c * n,
        st.sampled_from(["x", "é", ":", "{"]),
        st.integers(1000, 5000),
    ),
)
"""An id, namespace, task id, channel name or metadata key as a caller might pass it."""

json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | ident,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(short_text, children, max_size=3)
    ),
    max_leaves=6,
)
"""A metadata value: JSON-like, with awkward strings."""

metadata = st.dictionaries(ident, json_value, max_size=3)

limit = st.one_of(
    st.none(), st.integers(-3, 4), st.booleans(), st.floats(allow_nan=True), short_text
)
"""A `limit` argument: valid counts and things that are not counts."""


def before(checkpoint_id: str) -> st.SearchStrategy[Any]:
    """A `before` argument: the config of a stored checkpoint, or junk."""
    return st.one_of(
        st.none(),
        st.just({"configurable": {"checkpoint_id": checkpoint_id}}),
        st.builds(lambda c: {"configurable": {"checkpoint_id": c}}, ident),
        st.just({"configurable": {}}),
        ident,
        st.integers(),
        st.builds(lambda c: {"configurable": {"checkpoint_id": c}}, st.integers()),
    )


def strings_in(value: Any) -> list[str]:
    """Every string inside `value` (keys included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings_in(k) + strings_in(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in strings_in(v)]
    return []
