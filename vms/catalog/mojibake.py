"""Recognise text damaged by a wrong character encoding (乱码) in names, makers and addresses.

Ledgers travel between systems that disagree on the encoding: GBK files read as UTF-8 leave U+FFFD
replacement characters, UTF-8 read as GBK gives rare-looking hanzi ("南方" -> "鍗楁柟"), UTF-8 or GBK read as
Latin-1 / Windows-1252 gives accented Latin letters ("é" -> "Ã©", "罗庄区" -> "ÂÞ×¯Çø"), and text squeezed
into a non-Unicode column comes back as question marks. Each guess is checked by undoing it: text counts as
damaged only when re-encoding it with the wrong codec yields valid bytes of the right one that read as real
text. Correct Chinese almost never survives that (GBK bytes of hanzi are not valid UTF-8), so real names pass.
"""

from __future__ import annotations

import codecs
import re
from functools import lru_cache

__all__ = ["damage", "is_damaged"]

REPLACEMENT = "\ufffd"
_LOST_REASON = "question marks where characters were lost"

# UTF-8 bytes of two U+FFFD read as GBK (锟斤拷), and the MSVC fill bytes 0xCC / 0xCD of uninitialised memory
# read as GBK (烫 / 屯): what Chinese devices show when a buffer was never filled.
_FILL = ("锟斤拷", "烫烫烫", "屯屯屯")
# Each "?" stood for a character the target encoding could not hold; real names never contain two in a row.
_LOST = ("??", "？？")
_MARKS = re.compile("|".join(re.escape(m) for m in (REPLACEMENT, *_FILL, *_LOST)))
_BEYOND_1252 = re.compile("[^\x00-\u2122]")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_HIGH = re.compile(r"[\u0080-\u00ff]")
# Two hanzi in a row as GBK bytes: four Latin-1 characters above 0x80 in a row, which Western words never have.
_HIGH_RUN = re.compile(r"[\u0080-\u00ff\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013-\u2122]{4}")
# Undone, damaged text must read as two hanzi or more. In UTF-8 a hanzi of _CJK is three bytes: a lead byte E3-E9
# or EF and two continuation bytes 80-BF. Bytes with fewer than two such runs, none overlapping, cannot decode to
# two hanzi, however the decoder replaces the invalid bytes around them (a leftmost scan finds the most runs).
_TWO_UTF8_HANZI = re.compile(rb"[\xe3-\xe9\xef][\x80-\xbf]{2}.*?[\xe3-\xe9\xef][\x80-\xbf]{2}", re.DOTALL)

# Windows-1252 maps 0x80-0x9F to these characters; the reverse lets us rebuild the bytes it decoded.
_CP1252_BYTES = {bytes([b]).decode("cp1252"): b for b in range(0x80, 0xA0) if b not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)}


def _latin_bytes(text: str) -> bytes | None:
    """The bytes a Latin-1 / Windows-1252 reader turned into ``text``; None when it holds other characters."""
    out = bytearray()
    for ch in text:
        o = ord(ch)
        if o < 0x100:
            out.append(o)
        else:
            b = _CP1252_BYTES.get(ch)
            if b is None:
                return None
            out.append(b)
    return bytes(out)


def _utf8_prefix(data: bytes) -> str | None:
    """``data`` as UTF-8, allowing only a cut-off last character; None when invalid."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        return decoder.decode(data, final=False)
    except UnicodeDecodeError:
        return None


def damage(text: str | None) -> str | None:
    """Why ``text`` looks damaged by a wrong encoding (a short reason), or None when it reads as real text."""
    if not text or (text.isascii() and "??" not in text):
        return None
    return _damage(text)


# Makers, models and common words repeat across 100,000 records: each distinct text is checked once.
@lru_cache(maxsize=4096)
def _damage(text: str) -> str | None:
    if text.isascii():
        return _LOST_REASON if "??" in text else None
    if _MARKS.search(text) is not None:  # one scan for every tell-tale mark; the rare hit says which
        if REPLACEMENT in text:
            return "U+FFFD replacement character (bytes that were not valid in the encoding used to read them)"
        if any(mark in text for mark in _FILL):
            return "锟斤拷/烫烫烫: replacement or uninitialised bytes read as GBK"
        return _LOST_REASON
    if _BEYOND_1252.search(text) is None:  # Latin-1 and Windows-1252 characters only
        if len(_HIGH.findall(text)) < 2:
            return None
        raw = _latin_bytes(text)
        if raw is None:
            return None
        fixed = _utf8_prefix(raw)
        if fixed is not None and fixed != text and not fixed.isascii():
            return f"UTF-8 read as Latin-1/Windows-1252 (was {fixed[:40]!r})"
        if _HIGH_RUN.search(text):
            try:
                fixed = raw.decode("gb18030")
            except UnicodeDecodeError:
                return None
            if len(_CJK.findall(fixed)) >= 2:
                return f"GBK read as Latin-1/Windows-1252 (was {fixed[:40]!r})"
        return None
    # Genuine hanzi encode to GBK lead bytes 0x81-0xFE whose trail bytes break UTF-8 at once: undone, a real
    # name yields at most one hanzi among replacement characters (none of 44,000 Chinese township names yields
    # two). UTF-8 bytes a GBK reader paired up into hanzi come back as the original text, even when the reader
    # dropped or replaced an odd byte.
    try:
        raw = text.encode("gb18030")
    except UnicodeEncodeError:  # lone surrogates
        return None
    if _TWO_UTF8_HANZI.search(raw) is None:  # the common case of real text, found without decoding
        return None
    fixed = raw.decode("utf-8", errors="replace")
    lost = fixed.count(REPLACEMENT)
    if len(fixed) - lost < max(2, lost / 2):  # cannot hold enough hanzi: the common case of real text
        return None
    hanzi = len(_CJK.findall(fixed))
    if hanzi >= 2 and lost <= 2 * hanzi:
        return f"UTF-8 read as GBK (was {fixed[:40]!r})"
    return None


def is_damaged(text: str | None) -> bool:
    return damage(text) is not None
