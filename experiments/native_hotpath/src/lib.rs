//! Experiment (issue 20): govpipe's per-record processing, natively, for the common case.
//!
//! `NativeProcessor.process` turns one record value (an Agent OS governance event, JSON)
//! into the signed CloudEvent body that `pipeline.processor.EventProcessor.process` writes
//! with an HMAC signer and no inbound check, byte for byte, or answers None whenever it is
//! not certain to (other input shapes, anything Python would reject, numbers written
//! otherwise, non-ASCII text the tool-poisoning prefilter cannot clear...): the caller then
//! runs the Python path.

mod detect;
mod event;
mod json;
mod poisoning;

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use sha2::Sha256;

use event::{Members, Position, Vocabulary};
use json::{Order, Parsed, Unsure, Value};

type HmacSha256 = Hmac<Sha256>;

const HMAC_ALG: &str = "HMAC-SHA256";

/// What `process` returns on the native path: the event id, the body, the partition key
/// and the tool-poisoning severities found (to be counted).
type Signed<'py> = (String, Bound<'py, PyBytes>, Option<String>, Vec<&'static str>);

#[pyclass(frozen)]
struct NativeProcessor {
    mac: HmacSha256,
    key_id: String,
    max_event_bytes: usize,
    detector: bool,
    vocabulary: Vocabulary,
}

#[pymethods]
impl NativeProcessor {
    #[new]
    #[pyo3(signature = (key, key_id, max_event_bytes, configured_source, detector, type_prefix, kind_types))]
    fn new(
        key: &[u8],
        key_id: String,
        max_event_bytes: usize,
        configured_source: Option<String>,
        detector: bool,
        type_prefix: String,
        kind_types: HashMap<String, String>,
    ) -> PyResult<Self> {
        let mac = HmacSha256::new_from_slice(key)
            .map_err(|_| pyo3::exceptions::PyValueError::new_err("unusable HMAC key"))?;
        Ok(Self {
            mac,
            key_id,
            max_event_bytes,
            detector,
            vocabulary: Vocabulary { configured_source, type_prefix, kind_types },
        })
    }

    /// (id, body, partition key, severities) of the signed event, or None: let Python
    /// process it.
    #[pyo3(signature = (value, topic, partition, offset, line))]
    fn process<'py>(
        &self,
        py: Python<'py>,
        value: &[u8],
        topic: &str,
        partition: i64,
        offset: i64,
        line: bool,
    ) -> Option<Signed<'py>> {
        let position = Position { line, topic, partition, offset };
        let (id, body, key, alerts) = self.sign(value, &position).ok()?;
        Some((id, PyBytes::new(py, &body), key, alerts))
    }
}

impl NativeProcessor {
    #[allow(clippy::type_complexity)]
    fn sign(
        &self,
        raw: &[u8],
        position: &Position,
    ) -> Parsed<(String, Vec<u8>, Option<String>, Vec<&'static str>)> {
        if raw.len() > self.max_event_bytes {
            return Err(Unsure);
        }
        let Value::Obj(event) = json::parse(raw)? else {
            return Err(Unsure);
        };
        let (mut ce, partition_key) = event::to_cloudevent(event, &self.vocabulary, position)?;
        let (data_text, alerts) = self.data_text(&ce)?;
        if !alerts.is_empty() {
            let marks: Vec<String> = alerts.iter().map(|s| format!("tool_poisoning:{s}")).collect();
            ce.push(("agtalerts", Value::Str(marks.join(","))));
        }
        ce.push(("agtsignaturealg", Value::Str(HMAC_ALG.to_owned())));
        ce.push(("agtkeyid", Value::Str(self.key_id.clone())));
        let signature = self.signature(&ce)?;
        let id = match &ce[1] {
            (_, Value::Str(id)) => id.clone(),
            _ => return Err(Unsure),
        };
        ce.push(("agtsignature", Value::Str(signature)));
        Ok((id, body(&ce, &data_text), partition_key, alerts))
    }

    /// orjson's text of `data` and the detector's findings (none when it is off or its
    /// prefilter finds the event clean); `Unsure` when the rules would read non-ASCII text.
    fn data_text(&self, ce: &Members) -> Parsed<(Vec<u8>, Vec<&'static str>)> {
        let data = &ce.iter().find(|(name, _)| *name == "data").ok_or(Unsure)?.1;
        let mut text = Vec::with_capacity(512);
        json::write(data, Order::AsGiven, &mut text);
        if !self.detector || detect::surely_clean(&text) {
            return Ok((text, Vec::new()));
        }
        let found = poisoning::scan(data).ok_or(Unsure)?;
        Ok((text, found))
    }

    /// base64 HMAC-SHA256 of the sorted compact form, when it is certainly the form the
    /// Python signer uses (`_orjson_canonical`'s conditions for its fast path).
    fn signature(&self, ce: &Members) -> Parsed<String> {
        let mut canonical = Vec::with_capacity(1024);
        json::write_members(ce.iter().map(|(n, v)| (*n, v)), Order::Sorted, &mut canonical);
        if contains(&canonical, b"0.0000") || has_digit_e_minus_digit(&canonical) {
            return Err(Unsure);
        }
        let mut mac = self.mac.clone();
        mac.update(&canonical);
        Ok(STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The signed event as orjson writes it, `data` spliced in from its text.
fn body(ce: &Members, data_text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data_text.len() + 768);
    out.push(b'{');
    for (index, (name, value)) in ce.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        json::write_str(name, &mut out);
        out.push(b':');
        if *name == "data" {
            out.extend_from_slice(data_text);
        } else {
            json::write(value, Order::AsGiven, &mut out);
        }
    }
    out.push(b'}');
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

fn has_digit_e_minus_digit(text: &[u8]) -> bool {
    memchr::memmem::find_iter(text, b"e-").any(|at| {
        at > 0 && text[at - 1].is_ascii_digit() && text.get(at + 2).is_some_and(u8::is_ascii_digit)
    })
}

#[pymodule]
fn govpipe_native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<NativeProcessor>()?;
    Ok(())
}
