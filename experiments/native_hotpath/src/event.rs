//! An Agent OS governance event as govpipe's unsigned CloudEvent: a second copy of
//! `pipeline/cloudevents/mapping.py` (`_from_governance_event`), `attributes.py` (the rules
//! the built event must pass) and `position.py`. Anything those would reject, and every
//! input shape other than a governance event, is `Unsure`: the Python path answers.

use std::collections::HashMap;

use crate::json::{Parsed, Unsure, Value};

/// The CloudEvent being built: member names are govpipe's own, so static.
pub type Members = Vec<(&'static str, Value)>;

/// Where the record was read: a Kafka topic/partition/offset, or a line of an input.
pub struct Position<'a> {
    pub line: bool,
    pub topic: &'a str,
    pub partition: i64,
    pub offset: i64,
}

/// What the mapping needs besides the event: the configured source and the type names.
pub struct Vocabulary {
    pub configured_source: Option<String>,
    pub type_prefix: String,
    pub kind_types: HashMap<String, String>,
}

const OPTIONAL_STRINGS: [&str; 13] = [
    "severity", "agent_id", "agent_did", "session_id", "action", "resource", "decision",
    "reason", "policy_name", "trace_id", "span_id", "parent_span_id", "schema_version",
];
// Indexes into OPTIONAL_STRINGS.
const SEVERITY: usize = 0;
const AGENT_ID: usize = 1;
const AGENT_DID: usize = 2;
const SESSION_ID: usize = 3;
const ACTION: usize = 4;
const RESOURCE: usize = 5;
const DECISION: usize = 6;
const REASON: usize = 7;
const POLICY_NAME: usize = 8;
const TRACE_ID: usize = 9;
const SPAN_ID: usize = 10;
const PARENT_SPAN_ID: usize = 11;
const SCHEMA_VERSION: usize = 12;

/// The fields of a governance event that the mapping reads, checked as Python checks them.
#[derive(Default)]
struct Fields {
    event_id: Option<String>,
    kind: Option<String>,
    occurred_at: Option<String>,
    latency_ms: Option<Value>,
    attributes: Option<Vec<(String, Value)>>,
    strings: [Option<String>; 13],
}

impl Fields {
    fn read(event: Vec<(String, Value)>) -> Parsed<Fields> {
        let mut fields = Fields::default();
        let mut seen_shape = false;
        for (name, value) in event {
            match name.as_str() {
                "specversion" => return Err(Unsure), // a CloudEvent: Python re-signs it
                "event_id" => {
                    seen_shape = true;
                    fields.event_id = Some(non_empty_string(value)?);
                }
                "kind" => {
                    seen_shape = true;
                    fields.kind = Some(non_empty_string(value)?);
                }
                "occurred_at" => fields.occurred_at = Some(string(value)?),
                "latency_ms" => match value {
                    Value::Null => {}
                    Value::Int(_) | Value::Float(_) => fields.latency_ms = Some(value),
                    _ => return Err(Unsure),
                },
                "attributes" => match value {
                    Value::Null => {}
                    Value::Obj(members) => fields.attributes = Some(members),
                    _ => return Err(Unsure),
                },
                other => {
                    if let Some(index) = OPTIONAL_STRINGS.iter().position(|n| *n == other) {
                        match value {
                            Value::Null => {}
                            Value::Str(text) => fields.strings[index] = Some(text),
                            _ => return Err(Unsure),
                        }
                    }
                }
            }
        }
        if !seen_shape || fields.event_id.is_none() || fields.kind.is_none() {
            return Err(Unsure);
        }
        Ok(fields)
    }

    /// The value of an optional string field, or its GovernanceEvent default.
    fn or_default(&self, index: usize, default: &str) -> String {
        self.strings[index].clone().unwrap_or_else(|| default.to_owned())
    }

    /// The field when it is a non-empty string (Python's truthiness).
    fn when_set(&self, index: usize) -> Option<&str> {
        self.strings[index].as_deref().filter(|text| !text.is_empty())
    }
}

fn string(value: Value) -> Parsed<String> {
    match value {
        Value::Str(text) => Ok(text),
        _ => Err(Unsure),
    }
}

fn non_empty_string(value: Value) -> Parsed<String> {
    string(value).and_then(|text| if text.is_empty() { Err(Unsure) } else { Ok(text) })
}

/// The unsigned CloudEvent of a governance event with its position attributes, and its
/// partition key (the agent id when set).
pub fn to_cloudevent(
    event: Vec<(String, Value)>,
    vocabulary: &Vocabulary,
    position: &Position,
) -> Parsed<(Members, Option<String>)> {
    let mut fields = Fields::read(event)?;
    let time = fields.occurred_at.take().ok_or(Unsure)?;
    if !is_timestamp(&time) {
        return Err(Unsure);
    }
    let id = fields.event_id.take().ok_or(Unsure)?;
    let kind = fields.kind.take().ok_or(Unsure)?;
    let source = source(&fields, vocabulary)?;
    let kind_type = match vocabulary.kind_types.get(&kind) {
        Some(suffix) => format!("{}{}", vocabulary.type_prefix, suffix),
        None => format!("{}governance.{}", vocabulary.type_prefix, kind),
    };
    let partition_key = fields.when_set(AGENT_ID).map(str::to_owned);
    let schema_version = fields.or_default(SCHEMA_VERSION, "1");
    let mut ce: Members = vec![
        ("specversion", Value::Str("1.0".to_owned())),
        ("id", Value::Str(id)),
        ("type", Value::Str(kind_type)),
        ("source", Value::Str(source)),
        ("time", Value::Str(time)),
        ("datacontenttype", Value::Str("application/json".to_owned())),
        ("data", data(&mut fields)),
        ("schemaversion", Value::Str(schema_version)),
    ];
    for (attribute, index) in [
        ("sessionid", SESSION_ID),
        ("traceid", TRACE_ID),
        ("spanid", SPAN_ID),
        ("parentspanid", PARENT_SPAN_ID),
    ] {
        if let Some(text) = fields.when_set(index) {
            ce.push((attribute, Value::Str(text.to_owned())));
        }
    }
    if let Some(key) = &partition_key {
        ce.push(("partitionkey", Value::Str(key.clone())));
    }
    check_attributes(&ce)?;
    push_position(&mut ce, position);
    Ok((ce, partition_key))
}

fn source(fields: &Fields, vocabulary: &Vocabulary) -> Parsed<String> {
    if let Some(configured) = vocabulary.configured_source.as_deref().filter(|s| !s.is_empty()) {
        return Ok(configured.to_owned());
    }
    if let Some(did) = fields.when_set(AGENT_DID) {
        return Ok(did.to_owned());
    }
    match fields.when_set(AGENT_ID) {
        Some(agent) => Ok(format!("/agent-os/agent/{}", quote(agent))),
        None => Err(Unsure), // rejected (no_source) by the Python path
    }
}

/// The event's attributes, then the authoritative fields (replacing any attribute of the
/// same name in its place, as a dict assignment does).
fn data(fields: &mut Fields) -> Value {
    let mut data = fields.attributes.take().unwrap_or_default();
    let latency = fields.latency_ms.take().unwrap_or(Value::Float(0.0));
    let authoritative = [
        ("action", Value::Str(fields.or_default(ACTION, ""))),
        ("decision", Value::Str(fields.or_default(DECISION, ""))),
        ("reason", Value::Str(fields.or_default(REASON, ""))),
        ("severity", Value::Str(fields.or_default(SEVERITY, "info"))),
        ("latency_ms", latency),
    ];
    for (name, value) in authoritative {
        set(&mut data, name, value);
    }
    for (name, index) in [
        ("resource", RESOURCE),
        ("policy_name", POLICY_NAME),
        ("agent_id", AGENT_ID),
        ("agent_did", AGENT_DID),
    ] {
        if let Some(text) = fields.when_set(index) {
            set(&mut data, name, Value::Str(text.to_owned()));
        }
    }
    Value::Obj(data)
}

fn set(members: &mut Vec<(String, Value)>, name: &str, value: Value) {
    match members.iter_mut().find(|(existing, _)| existing == name) {
        Some(slot) => slot.1 = value,
        None => members.push((name.to_owned(), value)),
    }
}

/// `check_attributes` for the members a governance event yields: strings without control
/// characters, `source` a URI-reference (the other rules hold by construction).
fn check_attributes(ce: &Members) -> Parsed<()> {
    for (name, value) in ce {
        match (*name, value) {
            ("data" | "time", _) => {}
            ("source", Value::Str(text)) if is_uri_reference(text) => {}
            ("source", _) => return Err(Unsure),
            (_, Value::Str(text)) if !has_control(text) => {}
            _ => return Err(Unsure),
        }
    }
    Ok(())
}

fn has_control(text: &str) -> bool {
    text.chars().any(|c| matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'))
}

fn push_position(ce: &mut Members, position: &Position) {
    if position.line {
        ce.push(("agtinput", Value::Str(position.topic.to_owned())));
        ce.push(("agtline", Value::Str(position.offset.to_string())));
    } else {
        ce.push(("agttopic", Value::Str(position.topic.to_owned())));
        ce.push(("agtpartition", Value::Str(position.partition.to_string())));
        ce.push(("agtoffset", Value::Str(position.offset.to_string())));
    }
}

/// urllib.parse.quote(text, safe=""): UTF-8, unreserved characters kept, the rest %XX.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// RFC 3986 URI-reference as `pipeline.cloudevents.attributes.is_uri_reference` reads it.
fn is_uri_reference(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        if byte == b'%' {
            let hex = bytes.get(at + 1..at + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            at += 3;
        } else if byte.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=".contains(&byte) {
            at += 1;
        } else {
            return false;
        }
    }
    let head = text.split('/').next().unwrap_or("");
    match head.find(':') {
        None => true,
        Some(colon) => {
            let scheme = &head.as_bytes()[..colon];
            !scheme.is_empty()
                && scheme[0].is_ascii_alphabetic()
                && scheme.iter().all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(b))
        }
    }
}

/// `\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})` with every field in
/// the range `datetime.fromisoformat` accepts (offsets limited to ±23:59 here).
pub fn is_timestamp(text: &str) -> bool {
    let b = text.as_bytes();
    let number = |from: usize, len: usize| -> Option<u32> {
        let digits = b.get(from..from + len)?;
        digits.iter().all(u8::is_ascii_digit).then(|| {
            digits.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
        })
    };
    let at = |index: usize, expected: u8| b.get(index) == Some(&expected);
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        number(0, 4), number(5, 2), number(8, 2), number(11, 2), number(14, 2), number(17, 2),
    ) else {
        return false;
    };
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return false;
    }
    let mut rest = 19;
    if at(rest, b'.') {
        let digits = b[rest + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        rest += 1 + digits;
    }
    let zone_ok = match b.get(rest) {
        Some(b'Z') => b.len() == rest + 1,
        Some(b'+' | b'-') => {
            b.len() == rest + 6
                && at(rest + 3, b':')
                && number(rest + 1, 2).is_some_and(|h| h <= 23)
                && number(rest + 4, 2).is_some_and(|m| m <= 59)
        }
        _ => false,
    };
    zone_ok
        && year >= 1
        && (1..=12).contains(&month)
        && day >= 1
        && day <= days_in_month(year, month)
        && hour <= 23
        && minute <= 59
        && second <= 59
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}
