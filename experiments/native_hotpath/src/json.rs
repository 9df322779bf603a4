//! Strict JSON in and out, only where the bytes are certain to be the Python path's.
//!
//! The parser accepts a subset of what `pipeline.cloudevents.codec.decode_object` accepts
//! and answers `None` (let Python decide) for the rest: duplicate member names, integers
//! beyond 64 bits, floats that Python and orjson write with an exponent (below 1e-4 or from
//! 1e16 in magnitude), numbers out of a double's range, lone surrogates, nesting past
//! `MAX_DEPTH`. Within that subset orjson writes what `write` writes here: compact, members
//! in order, `"` `\` and control characters escaped (short forms, else lower-case `\u00xx`),
//! everything else as raw UTF-8, floats as their shortest round-trip digits with a point.

use std::io::Write as _;

pub const MAX_DEPTH: usize = 64;

#[derive(Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Arr(Vec<Value>),
    Obj(Vec<(String, Value)>),
}

/// Not certain: the Python path decides (it may accept, reject or write it otherwise).
#[derive(Debug)]
pub struct Unsure;

pub type Parsed<T> = Result<T, Unsure>;

pub fn parse(raw: &[u8]) -> Parsed<Value> {
    let text = std::str::from_utf8(raw).map_err(|_| Unsure)?;
    let mut parser = Parser { bytes: text.as_bytes(), at: 0 };
    parser.skip_space();
    let value = parser.value(0)?;
    parser.skip_space();
    if parser.at != parser.bytes.len() {
        return Err(Unsure);
    }
    Ok(value)
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, literal: &[u8]) -> Parsed<()> {
        if self.bytes[self.at..].starts_with(literal) {
            self.at += literal.len();
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    fn value(&mut self, depth: usize) -> Parsed<Value> {
        if depth > MAX_DEPTH {
            return Err(Unsure);
        }
        match self.peek().ok_or(Unsure)? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => Ok(Value::Str(self.string()?)),
            b't' => self.expect(b"true").map(|_| Value::Bool(true)),
            b'f' => self.expect(b"false").map(|_| Value::Bool(false)),
            b'n' => self.expect(b"null").map(|_| Value::Null),
            _ => self.number(),
        }
    }

    fn object(&mut self, depth: usize) -> Parsed<Value> {
        self.at += 1;
        let mut members: Vec<(String, Value)> = Vec::new();
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Value::Obj(members));
        }
        loop {
            self.skip_space();
            if self.peek() != Some(b'"') {
                return Err(Unsure);
            }
            let name = self.string()?;
            self.skip_space();
            self.expect(b":")?;
            self.skip_space();
            let value = self.value(depth + 1)?;
            members.push((name, value));
            self.skip_space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    break;
                }
                _ => return Err(Unsure),
            }
        }
        if has_duplicate_names(&members) {
            // Python keeps the first position and the last value; not worth copying.
            return Err(Unsure);
        }
        Ok(Value::Obj(members))
    }

    fn array(&mut self, depth: usize) -> Parsed<Value> {
        self.at += 1;
        let mut items = Vec::new();
        self.skip_space();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Value::Arr(items));
        }
        loop {
            self.skip_space();
            items.push(self.value(depth + 1)?);
            self.skip_space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Value::Arr(items));
                }
                _ => return Err(Unsure),
            }
        }
    }

    fn string(&mut self) -> Parsed<String> {
        self.at += 1; // the opening quote
        let start = self.at;
        // Fast path: no escape before the closing quote.
        while let Some(byte) = self.peek() {
            match byte {
                b'"' => {
                    let text = &self.bytes[start..self.at];
                    self.at += 1;
                    // SAFETY: the input was checked as UTF-8 and both ends are ASCII quotes.
                    return Ok(unsafe { std::str::from_utf8_unchecked(text) }.to_owned());
                }
                b'\\' => break,
                0..=0x1f => return Err(Unsure),
                _ => self.at += 1,
            }
        }
        let mut out: Vec<u8> = self.bytes[start..self.at].to_vec();
        loop {
            let byte = self.peek().ok_or(Unsure)?;
            self.at += 1;
            match byte {
                b'"' => return String::from_utf8(out).map_err(|_| Unsure),
                b'\\' => self.escape(&mut out)?,
                0..=0x1f => return Err(Unsure),
                _ => out.push(byte),
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Parsed<()> {
        let byte = self.peek().ok_or(Unsure)?;
        self.at += 1;
        let simple = match byte {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let code = self.code_point()?;
                let mut buffer = [0u8; 4];
                out.extend_from_slice(code.encode_utf8(&mut buffer).as_bytes());
                return Ok(());
            }
            _ => return Err(Unsure),
        };
        out.push(simple);
        Ok(())
    }

    fn hex4(&mut self) -> Parsed<u32> {
        let digits = self.bytes.get(self.at..self.at + 4).ok_or(Unsure)?;
        let text = std::str::from_utf8(digits).map_err(|_| Unsure)?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Unsure);
        }
        self.at += 4;
        u32::from_str_radix(text, 16).map_err(|_| Unsure)
    }

    fn code_point(&mut self) -> Parsed<char> {
        let first = self.hex4()?;
        if (0xDC00..0xE000).contains(&first) {
            return Err(Unsure); // a lone low surrogate
        }
        if (0xD800..0xDC00).contains(&first) {
            self.expect(b"\\u")?;
            let second = self.hex4()?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err(Unsure);
            }
            let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
            return char::from_u32(code).ok_or(Unsure);
        }
        char::from_u32(first).ok_or(Unsure)
    }

    fn number(&mut self) -> Parsed<Value> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let int_start = self.at;
        self.digits();
        let int_digits = &self.bytes[int_start..self.at];
        if int_digits.is_empty() || (int_digits.len() > 1 && int_digits[0] == b'0') {
            return Err(Unsure);
        }
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return Err(Unsure);
            }
            is_float = true;
        }
        let mantissa_end = self.at;
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(Unsure);
            }
            is_float = true;
        }
        // Only ASCII digits, signs, points and exponents were consumed.
        let text = std::str::from_utf8(&self.bytes[start..self.at]).map_err(|_| Unsure)?;
        if !is_float {
            return text.parse::<i64>().map(Value::Int).map_err(|_| Unsure);
        }
        let value: f64 = text.parse().map_err(|_| Unsure)?;
        let mantissa = &self.bytes[start..mantissa_end];
        if value == 0.0 && mantissa.iter().any(|b| (b'1'..=b'9').contains(b)) {
            return Err(Unsure); // below the smallest double: the Python path refuses it
        }
        if !is_plain_float(value) {
            return Err(Unsure);
        }
        Ok(Value::Float(value))
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }
}

fn has_duplicate_names(members: &[(String, Value)]) -> bool {
    if members.len() <= 16 {
        return members
            .iter()
            .enumerate()
            .any(|(i, (name, _))| members[..i].iter().any(|(seen, _)| seen == name));
    }
    let mut names: Vec<&str> = members.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    names.windows(2).any(|pair| pair[0] == pair[1])
}

/// A finite float that Python's repr and orjson both write without an exponent.
pub fn is_plain_float(value: f64) -> bool {
    let magnitude = value.abs();
    value.is_finite() && (magnitude == 0.0 || (1e-4..1e16).contains(&magnitude))
}

/// Member order as given (orjson.dumps), or sorted by name (the HMAC canonical form).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Order {
    AsGiven,
    Sorted,
}

pub fn write(value: &Value, order: Order, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(number) => write_int(*number, out),
        Value::Float(number) => write_float(*number, out),
        Value::Str(text) => write_str(text, out),
        Value::Arr(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write(item, order, out);
            }
            out.push(b']');
        }
        Value::Obj(members) => write_members(members.iter().map(|(n, v)| (n.as_str(), v)), order, out),
    }
}

/// An object from (name, value) pairs, in either order.
pub fn write_members<'a>(
    members: impl Iterator<Item = (&'a str, &'a Value)>,
    order: Order,
    out: &mut Vec<u8>,
) {
    let mut members: Vec<(&str, &Value)> = members.collect();
    if order == Order::Sorted {
        // Byte order of UTF-8 is code point order, as json.dumps(sort_keys=True) sorts.
        members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    }
    out.push(b'{');
    for (index, (name, value)) in members.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_str(name, out);
        out.push(b':');
        write(value, order, out);
    }
    out.push(b'}');
}

fn write_int(number: i64, out: &mut Vec<u8>) {
    let _ = write!(out, "{number}");
}

fn write_float(number: f64, out: &mut Vec<u8>) {
    // Ryu's shortest round-trip digits, exact ties to even as Python's repr (core's `{:?}`
    // rounds a tie up: 1796062888904.03125 is "...0313" there, "...0312" in Python), laid
    // out positionally with at least one fraction digit (callers keep to that range).
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(number.abs());
    let (mantissa, exponent) = match text.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = format!("{whole}{fraction}");
    let significant = all.trim_start_matches('0');
    // value = 0.<digits> * 10^point
    let point = whole.len() as i32 - (all.len() - significant.len()) as i32 + exponent;
    let digits = significant.trim_end_matches('0');
    if number.is_sign_negative() {
        out.push(b'-');
    }
    if digits.is_empty() {
        out.extend_from_slice(b"0.0");
    } else if point <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-point) as usize));
        out.extend_from_slice(digits.as_bytes());
    } else if point as usize >= digits.len() {
        out.extend_from_slice(digits.as_bytes());
        out.extend(std::iter::repeat_n(b'0', point as usize - digits.len()));
        out.extend_from_slice(b".0");
    } else {
        let (head, tail) = digits.split_at(point as usize);
        out.extend_from_slice(head.as_bytes());
        out.push(b'.');
        out.extend_from_slice(tail.as_bytes());
    }
}

/// Bytes orjson escapes: `"`, `\` and control characters.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

pub fn write_str(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        if !NEEDS_ESCAPE[byte as usize] {
            continue;
        }
        out.extend_from_slice(&bytes[start..index]);
        let escaped: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            _ => b"",
        };
        if escaped.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(byte >> 4) as usize]);
            out.push(HEX[(byte & 0xf) as usize]);
        } else {
            out.extend_from_slice(escaped);
        }
        start = index + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}
