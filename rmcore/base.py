"""The one struct base every value of the core derives from.

Frozen so that values can be shared between the engine, the shell and threads without copies;
``forbid_unknown_fields`` so that a typo in a policy or a reply is an error, never silently ignored.
"""

from __future__ import annotations

import msgspec

__all__ = ["Base"]


class Base(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Frozen msgspec struct that rejects unknown fields."""
