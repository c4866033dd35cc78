"""The one struct base every value of the core derives from.

Frozen so that values can be shared between the engine, the shell and threads without copies;
``forbid_unknown_fields`` so that a typo in a policy or a reply is an error, never silently ignored;
``gc=False`` because a value holds only other values (text, numbers, structs, the data a reply
decoded to), never anything that refers back to it, so it can never be part of a reference cycle:
the cyclic garbage collector need not track it. A routed call makes a few dozen of them, and every
tracked object counts towards the collector's next pass and is visited by it.
"""

from __future__ import annotations

import msgspec

__all__ = ["Base"]


class Base(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, gc=False):
    """Frozen msgspec struct that rejects unknown fields, untracked by the cyclic collector."""
