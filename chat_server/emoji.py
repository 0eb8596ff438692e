"""Which strings are one reaction emoji (API.md "Conversation").

A reaction is either one Unicode emoji grapheme or a custom `:name:` of 1-32
`a-z 0-9 _ + -`. The grapheme grammar follows UTS #51 (ED-14 to ED-17a):

    emoji      = keycap | flag | tag_flag | zwj_seq
    keycap     = [0-9#*] FE0F? 20E3
    flag       = regional_indicator regional_indicator
    tag_flag   = 1F3F4 tag{1,30} E007F          (subdivision flags)
    zwj_seq    = element (200D element)*        (at most MAX_ZWJ_ELEMENTS)
    element    = pictographic (FE0F | skin_tone)?   (a flag may stand alone only)

`pictographic` is Unicode's Extended_Pictographic property (emoji-data.txt,
Unicode 15.1), kept here as ranges because the standard library's
`unicodedata` does not expose emoji properties. The grammar is one regular
expression (PATTERN), which openapi.json gives as the parameter's pattern. Text like "ok", two emoji
side by side, or a bare digit are not one emoji.
"""

from __future__ import annotations

import re

RULE = "one emoji, or :name: of 1-32 a-z 0-9 _ + -"
# The longest standard ZWJ sequences (families) have four people.
MAX_ZWJ_ELEMENTS = 4

# Extended_Pictographic, as inclusive (first, last) code point ranges in order.
_PICTOGRAPHIC = (
    (0x00A9, 0x00A9), (0x00AE, 0x00AE), (0x203C, 0x203C), (0x2049, 0x2049),
    (0x2122, 0x2122), (0x2139, 0x2139), (0x2194, 0x2199), (0x21A9, 0x21AA),
    (0x231A, 0x231B), (0x2328, 0x2328), (0x2388, 0x2388), (0x23CF, 0x23CF),
    (0x23E9, 0x23F3), (0x23F8, 0x23FA), (0x24C2, 0x24C2), (0x25AA, 0x25AB),
    (0x25B6, 0x25B6), (0x25C0, 0x25C0), (0x25FB, 0x25FE), (0x2600, 0x2605),
    (0x2607, 0x2612), (0x2614, 0x2685), (0x2690, 0x2705), (0x2708, 0x2712),
    (0x2714, 0x2714), (0x2716, 0x2716), (0x271D, 0x271D), (0x2721, 0x2721),
    (0x2728, 0x2728), (0x2733, 0x2734), (0x2744, 0x2744), (0x2747, 0x2747),
    (0x274C, 0x274C), (0x274E, 0x274E), (0x2753, 0x2755), (0x2757, 0x2757),
    (0x2763, 0x2767), (0x2795, 0x2797), (0x27A1, 0x27A1), (0x27B0, 0x27B0),
    (0x27BF, 0x27BF), (0x2934, 0x2935), (0x2B05, 0x2B07), (0x2B1B, 0x2B1C),
    (0x2B50, 0x2B50), (0x2B55, 0x2B55), (0x3030, 0x3030), (0x303D, 0x303D),
    (0x3297, 0x3297), (0x3299, 0x3299), (0x1F000, 0x1F0FF), (0x1F10D, 0x1F10F),
    (0x1F12F, 0x1F12F), (0x1F16C, 0x1F171), (0x1F17E, 0x1F17F), (0x1F18E, 0x1F18E),
    (0x1F191, 0x1F19A), (0x1F1AD, 0x1F1E5), (0x1F201, 0x1F20F), (0x1F21A, 0x1F21A),
    (0x1F22F, 0x1F22F), (0x1F232, 0x1F23A), (0x1F23C, 0x1F23F), (0x1F249, 0x1F3FA),
    (0x1F400, 0x1F53D), (0x1F546, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F774, 0x1F77F),
    (0x1F7D5, 0x1F7FF), (0x1F80C, 0x1F80F), (0x1F848, 0x1F84F), (0x1F85A, 0x1F85F),
    (0x1F888, 0x1F88F), (0x1F8AE, 0x1F8FF), (0x1F90C, 0x1F93A), (0x1F93C, 0x1F945),
    (0x1F947, 0x1FAFF), (0x1FC00, 0x1FFFD),
)  # fmt: skip


def _char_class(ranges: tuple[tuple[int, int], ...]) -> str:
    return "".join(chr(a) if a == b else f"{chr(a)}-{chr(b)}" for a, b in ranges)


_ELEMENT = f"[{_char_class(_PICTOGRAPHIC)}][\ufe0f\U0001f3fb-\U0001f3ff]?"
# The grammar above as one regular expression; its characters are literal (no
# escapes), so the same text is a JSON Schema (ECMA 262) pattern: openapi.json's
# `emoji` parameter carries PATTERN.
GRAMMAR = "|".join(
    (
        ":[a-z0-9_+-]{1,32}:",  # custom
        "[0-9#*]\ufe0f?\u20e3",  # keycap
        "[\U0001f1e6-\U0001f1ff]{2}",  # flag
        "\U0001f3f4[\U000e0020-\U000e007e]{1,30}\U000e007f",  # tag flag
        f"{_ELEMENT}(?:\u200d{_ELEMENT}){{0,{MAX_ZWJ_ELEMENTS - 1}}}",  # zwj_seq
    )
)
PATTERN = f"^(?:{GRAMMAR})$"
_REACTION = re.compile(GRAMMAR)


def is_reaction(text: str) -> bool:
    """True when `text` is one emoji grapheme or a `:name:` (see the module's grammar)."""
    return _REACTION.fullmatch(text) is not None
