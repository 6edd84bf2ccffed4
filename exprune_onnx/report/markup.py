"""Names from a model or a data file, as the terminal shows them: rich markup escaped, and
control characters written as escapes. A node named with an ESC sequence recoloured the
tables, and a data key of OSC and ED sequences could retitle and clear the user's
terminal (trial AH): such names come from whoever made the file."""

from __future__ import annotations

import re

from rich.markup import escape as _rich_escape

# C0 controls (tab included: it breaks a table cell), DEL and the C1 controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """``text`` with each control character written as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def escape(text: str) -> str:
    """``text`` for rich markup: shown as written, controls as escapes."""
    # rich doubles a final backslash, lest it escape a tag after it, and shows both: our names
    # are never followed by a tag, and a name ending in one was shown with two (a review).
    return _rich_escape(visible(text) + " ")[:-1]
