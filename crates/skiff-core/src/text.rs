//! A JSON string borrowed from the input unless it holds escapes: for
//! decoders that look at keys and strings without keeping them.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A string as the input holds it, copied only when it had to be unescaped.
pub struct Text<'de>(pub Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(Read)
    }
}

struct Read;

impl<'de> Visitor<'de> for Read {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_unless_escaped() {
        let Text(plain) = serde_json::from_str::<Text>(r#""spec""#).unwrap();
        assert!(matches!(plain, Cow::Borrowed("spec")));
        let Text(escaped) = serde_json::from_str::<Text>(r#""a\"b""#).unwrap();
        assert!(matches!(escaped, Cow::Owned(ref s) if s == "a\"b"));
    }
}
