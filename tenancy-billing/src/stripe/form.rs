//! `application/x-www-form-urlencoded` with Stripe's bracketed keys.

/// An ordered list of form fields; keys name nested fields with brackets
/// (`line_items[0][price]`), which are kept readable in the encoding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    fields: Vec<(String, String)>,
}

fn encode_into(out: &mut String, text: &str, keep_brackets: bool) {
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(char::from(byte));
            }
            b'[' | b']' if keep_brackets => out.push(char::from(byte)),
            b' ' => out.push('+'),
            _ => {
                const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(char::from(DIGITS[usize::from(byte >> 4)]));
                out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
            }
        }
    }
}

fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

impl Form {
    /// An empty form.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a field.
    pub fn push(&mut self, key: &str, value: &str) {
        self.fields.push((key.to_owned(), value.to_owned()));
    }

    /// The fields, in order.
    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The encoded body (or query string).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (n, (key, value)) in self.fields.iter().enumerate() {
            if n > 0 {
                out.push('&');
            }
            encode_into(&mut out, key, true);
            out.push('=');
            encode_into(&mut out, value, false);
        }
        out
    }

    /// Parses an encoded body; `None` if it is not valid form encoding.
    pub fn parse(text: &str) -> Option<Self> {
        let mut form = Self::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            form.fields.push((decode(key)?, decode(value)?));
        }
        Some(form)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn brackets_stay_readable_and_values_are_escaped() {
        let mut form = Form::new();
        form.push("line_items[0][price]", "price_1");
        form.push("metadata[note]", "a b&c=d/é");
        assert_eq!(
            form.encode(),
            "line_items[0][price]=price_1&metadata[note]=a+b%26c%3Dd%2F%C3%A9"
        );
        assert_eq!(Form::parse(&form.encode()), Some(form));
        assert_eq!(Form::parse("a=%zz"), None);
        assert_eq!(Form::parse("a=%2"), None);
    }

    proptest! {
        #[test]
        fn round_trips(fields in proptest::collection::vec(("[a-z\\[\\]0-9_]{1,12}", ".{0,20}"), 0..8)) {
            let mut form = Form::new();
            for (k, v) in &fields {
                form.push(k, v);
            }
            prop_assert_eq!(Form::parse(&form.encode()), Some(form));
        }
    }
}
