"""Thread listing for the saver: `list_threads` / `alist_threads`."""

from __future__ import annotations


class ThreadListing:
    """Mixin of `ContextEngineSaver`: paged thread listing."""
