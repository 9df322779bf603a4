//! The tool-poisoning detector's prefilter (`_surely_clean` in
//! `pipeline/detectors/tool_poisoning.py`) on orjson's text of an event's `data`: true only
//! when no string can match a trigger, so the detector would mark nothing.
//!
//! Python folds the text with `str.casefold`. Here ASCII letters are lower-cased and every
//! other byte is kept: the same for the trigger tests (all ASCII), since casefolding a
//! non-ASCII character gives non-ASCII characters, except for the few listed below, whose
//! presence alone makes the event unsure.

const PLAIN_TRIGGERS: [&[u8]; 5] = [b"<", b"curl", b"wget", b"mkfs.", b"/dev/sd"];
const SPACED_TRIGGERS: [&[u8]; 3] = [b"rm", b"dd", b"chmod"];
// The characters whose casefold holds an ASCII character (all of U+0080..U+10FFFF, listed
// by Python 3.11's str.casefold): ß İ ŉ ſ ǰ ẖ ẗ ẘ ẙ ẚ ẞ K(Kelvin) ﬀ ﬁ ﬂ ﬃ ﬄ ﬅ ﬆ.
const FOLDS_TO_ASCII: [char; 19] = [
    '\u{df}', '\u{130}', '\u{149}', '\u{17f}', '\u{1f0}', '\u{1e96}', '\u{1e97}', '\u{1e98}',
    '\u{1e99}', '\u{1e9a}', '\u{1e9e}', '\u{212a}', '\u{fb00}', '\u{fb01}', '\u{fb02}',
    '\u{fb03}', '\u{fb04}', '\u{fb05}', '\u{fb06}',
];

pub fn surely_clean(text: &[u8]) -> bool {
    if !text.is_ascii() {
        let Ok(decoded) = std::str::from_utf8(text) else {
            return false;
        };
        if decoded.chars().any(|c| FOLDS_TO_ASCII.contains(&c)) {
            return false;
        }
    }
    let folded = text.to_ascii_lowercase();
    if PLAIN_TRIGGERS.iter().any(|t| find(&folded, t, 0).is_some()) {
        return false;
    }
    if SPACED_TRIGGERS.iter().any(|t| followed_by_space(&folded, t)) {
        return false;
    }
    !folded.contains(&b'(') || !colon_paren(&folded)
}

fn find(text: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    // Short needles: a plain scan beats building a SIMD searcher per call.
    let rest = text.get(from..)?;
    let first = needle[0];
    memchr::memchr_iter(first, rest)
        .find(|&at| rest[at..].starts_with(needle))
        .map(|at| at + from)
}

/// `token` followed by a space, a backslash (an escape) or a non-ASCII byte.
fn followed_by_space(text: &[u8], token: &[u8]) -> bool {
    let mut from = 0;
    while let Some(at) = find(text, token, from) {
        let after = at + token.len();
        if text.get(after).is_some_and(|&b| b == b' ' || b == b'\\' || b >= 0x80) {
            return true;
        }
        from = at + 1;
    }
    false
}

/// `:(?:[ \x80-\xff]|\\[tnrf]|\\u00(?:0b|1[c-f]))*\(` anywhere in `text`.
fn colon_paren(text: &[u8]) -> bool {
    memchr::memchr_iter(b':', text).any(|colon| {
        let mut at = colon + 1;
        loop {
            match text.get(at..) {
                Some([b' ' | 0x80..=0xff, ..]) => at += 1,
                Some([b'\\', b't' | b'n' | b'r' | b'f', ..]) => at += 2,
                Some([b'\\', b'u', b'0', b'0', b'0', b'b', ..]) => at += 6,
                Some([b'\\', b'u', b'0', b'0', b'1', b'c'..=b'f', ..]) => at += 6,
                Some([b'(', ..]) => return true,
                _ => return false,
            }
        }
    })
}
