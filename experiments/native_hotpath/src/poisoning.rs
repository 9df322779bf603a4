//! The tool-poisoning rules (`pipeline/detectors/tool_poisoning.py`: memory_guard's
//! patterns and severity logic, the bounded walk), for an event whose strings are all
//! ASCII. On ASCII text Python's `re` with IGNORECASE matches as these ASCII-mode regexes
//! do once `\s` is spelled as the characters `str.isspace` accepts there (`\x1c`-`\x1f`
//! included) and `\b` is the ASCII word boundary; non-ASCII text is the Python path's.

use std::sync::LazyLock;

use regex::bytes::Regex;

use crate::json::Value;

pub const HIGH: &str = "high";
pub const MEDIUM: &str = "medium";
const MAX_DEPTH: usize = 8;
const MAX_STRINGS: usize = 512;
const MAX_FIELD_CHARS: usize = 16_384;
const MAX_TOTAL_CHARS: usize = 131_072;

/// A pattern from the Python module, as an ASCII regex: case-insensitive unless told.
fn ascii_regex(pattern: &str, ignore_case: bool) -> Regex {
    let spelled = pattern
        .replace(r"\s", r"[\t\n\x0B\x0C\r\x1C-\x1F ]")
        .replace(r"\S", r"[^\t\n\x0B\x0C\r\x1C-\x1F ]");
    let flags = if ignore_case { "(?i-u)" } else { "(?-u)" };
    Regex::new(&format!("{flags}{spelled}")).expect("a valid pattern")
}

/// A rule: literals its match needs (tested on the lower-cased text first), then the regex.
struct Rule {
    literals: &'static [&'static str],
    pattern: Regex,
}

fn rule(literals: &'static [&'static str], pattern: &str) -> Rule {
    Rule { literals, pattern: ascii_regex(pattern, true) }
}

// `_LeadThenTail(lead, tail, stops)` finds what `lead[^stops]*tail` finds; the regex engine
// here is linear-time, so the pattern is used as it is. The rm rule's lookahead and
// possessive run accept the same words as memory_guard's `-[a-z]*r[a-z]*\b`, used here.
static DANGEROUS: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        rule(&["rm"], r"\brm\s+-[a-z]*r[a-z]*\b"),
        rule(&["mkfs."], r"\bmkfs\.[a-z0-9]+\b"),
        rule(&["dd"], r"\bdd\s+if="),
        Rule {
            literals: &["{", "&"],
            pattern: ascii_regex(r":\s*\(\s*\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:", false),
        },
        rule(&["chmod", "777"], r"\bchmod\s+-?[a-z]*\s*777\b"),
        rule(&["/dev/sd"], r">\s*/dev/sd[a-z]\b"),
        rule(&["|"], r"\b(curl|wget)\b[^\n|]*\|\s*(sudo\s+)?(ba|z|k)?sh\b"),
        rule(&["|"], r"\b(curl|wget)\b[^\n|]*\|\s*(python[0-9.]*|perl|ruby|node)\b"),
        rule(&["curl", "-"], r"\bcurl\b[^\n]*\s(-d|--data|-T|--upload-file|-F|--form)\b"),
        rule(&["wget", "--post"], r"\bwget\b[^\n]*\s(--post-data|--post-file)\b"),
    ]
});
static NETWORK_FETCH: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        rule(&[], r"\b(curl|wget)\s+\S*https?://"),
        rule(&[], r"\b(curl|wget)\s+[a-z0-9.-]+\.[a-z]{2,}\b"),
    ]
});
static STANDING: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        rule(&[], r"\bdo\s*n[o']?t\s+(mention|tell|inform|reveal|disclose|notify|say)"),
        rule(&[], r"\bwithout\s+(telling|informing|notifying|alerting|mentioning)"),
        rule(&[], r"\b(silently|secretly|covertly|quietly|discreetly)\b"),
        rule(&[], r"\bwhen(ever)?\s+(asked|prompted|the\s+user|anyone|someone)"),
        rule(&[], r"\bif\s+(asked|anyone\s+asks|the\s+user\s+asks)\b"),
        rule(&[], r"\balways\s+(respond|reply|say|answer|forward|send|include|append)"),
        rule(&[], r"\bfrom\s+now\s+on\b"),
    ]
});
static TAG_START: LazyLock<Regex> = LazyLock::new(|| {
    ascii_regex(
        r"<\s*(important|system|instructions?|secret|admin|tool|tool_call|assistant)\b",
        true,
    )
});
static ANY_TRIGGER: LazyLock<Regex> = LazyLock::new(|| {
    ascii_regex(r"<|\brm\s|mkfs\.|\bdd\s|:\s*\(|\bchmod\s|/dev/sd|curl|wget", true)
});
const TOKENS: [&str; 9] = ["<", "rm", "mkfs.", "dd", "chmod", "/dev/sd", "curl", "wget", "&"];

fn contains(text: &[u8], needle: &str) -> bool {
    let needle = needle.as_bytes();
    memchr::memchr_iter(needle[0], text).any(|at| text[at..].starts_with(needle))
}

fn might_alert(text: &[u8], folded: &[u8]) -> bool {
    TOKENS.iter().any(|t| contains(folded, t)) && ANY_TRIGGER.is_match(text)
}

fn matches(rules: &[Rule], text: &[u8], folded: &[u8]) -> bool {
    rules
        .iter()
        .any(|r| r.literals.iter().all(|l| contains(folded, l)) && r.pattern.is_match(text))
}

fn has_tag(text: &[u8]) -> bool {
    TAG_START
        .find(text)
        .is_some_and(|found| memchr::memchr(b'>', &text[found.end()..]).is_some())
}

/// memory_guard's verdict on one ASCII text.
fn field_severity(text: &[u8]) -> Option<&'static str> {
    let text = &text[..text.len().min(MAX_FIELD_CHARS)];
    let folded = text.to_ascii_lowercase();
    if !might_alert(text, &folded) {
        return None;
    }
    if matches(&DANGEROUS, text, &folded) {
        return Some(HIGH);
    }
    if has_tag(text) {
        return Some(if matches(&STANDING, text, &folded) { HIGH } else { MEDIUM });
    }
    matches(&NETWORK_FETCH, text, &folded).then_some(MEDIUM)
}

/// The strings of `data` in document order within the walk's bounds (`_bounded_fields`).
fn bounded_fields(data: &Value) -> Vec<&str> {
    fn walk<'a>(items: &mut dyn Iterator<Item = &'a Value>, depth: usize, fields: &mut Vec<&'a str>,
                total: &mut usize) -> bool {
        for item in items {
            match item {
                Value::Str(text) => {
                    if fields.len() >= MAX_STRINGS || *total >= MAX_TOTAL_CHARS {
                        return false;
                    }
                    fields.push(text);
                    *total += text.chars().count().min(MAX_FIELD_CHARS);
                }
                Value::Obj(_) | Value::Arr(_) if depth < MAX_DEPTH => {
                    if !walk(&mut children(item), depth + 1, fields, total) {
                        return false;
                    }
                }
                _ => {}
            }
        }
        true
    }
    let mut fields = Vec::new();
    match data {
        Value::Str(text) => fields.push(text.as_str()),
        Value::Obj(_) | Value::Arr(_) => {
            walk(&mut children(data), 1, &mut fields, &mut 0);
        }
        _ => {}
    }
    fields
}

fn children(container: &Value) -> Box<dyn Iterator<Item = &Value> + '_> {
    match container {
        Value::Obj(members) => Box::new(members.iter().map(|(_, v)| v)),
        Value::Arr(items) => Box::new(items.iter()),
        _ => Box::new(std::iter::empty()),
    }
}

/// The distinct severities in the strings of `data`, high first (`scan_strings`); None
/// when a string is not ASCII (the Python path judges it).
pub fn scan(data: &Value) -> Option<Vec<&'static str>> {
    let fields = bounded_fields(data);
    if !fields.iter().all(|text| text.is_ascii()) {
        return None;
    }
    let found: Vec<&str> = fields.iter().filter_map(|t| field_severity(t.as_bytes())).collect();
    Some([HIGH, MEDIUM].into_iter().filter(|s| found.contains(s)).collect())
}
