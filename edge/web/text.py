"""The one rule for text a person or a phone sends: notes, reasons, user names, file names.

Stored text ends up in reports, CSV, JSON, FHIR and the audit log, read by people and by other
programs. So it holds no control characters (tab excepted; C0, DEL and C1 such as U+0085, which
some programs take for a line break), no line or paragraph separators (U+2028, U+2029), no
bidirectional overrides or isolates (U+202A-U+202E, U+2066-U+2069: "Ana\u202eevil" displays
reversed), and no unpaired UTF-16 surrogates (a lone one cannot be encoded as UTF-8 and broke
every report of its case). ``problem`` says what is wrong; ``scrubbed`` removes it, for text
that is only a label (an upload's file name), never for what a clinician wrote.
"""

from __future__ import annotations

#: The longest upload file name kept (a phone's names are under 60; one sent 5,000).
MAX_FILE_NAME = 100

_FORBIDDEN_RANGES = ((0x2028, 0x2029), (0x202A, 0x202E), (0x2066, 0x2069))


def _bad(ch: str) -> str | None:
    code = ord(ch)
    if 0xD800 <= code <= 0xDFFF:
        return "an invalid character (an unpaired UTF-16 surrogate)"
    if (code < 32 and ch != "\t") or 0x7F <= code < 0xA0:
        return "a control character"
    if any(low <= code <= high for low, high in _FORBIDDEN_RANGES):
        return "a line separator or a text-direction control"
    return None


def problem(text: str) -> str | None:
    """What makes ``text`` unfit to store, in words, or None."""
    for ch in text:
        if (why := _bad(ch)) is not None:
            return why
    return None


def scrubbed(text: str, limit: int) -> str:
    """``text`` without the characters ``problem`` refuses, capped at ``limit`` characters."""
    return "".join(ch for ch in text if _bad(ch) is None)[:limit]
