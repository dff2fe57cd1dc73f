//! Secret values. `Debug` never shows the bytes, so a value cannot leak through a log line or a
//! panic message that formats it.

use std::fmt;

/// Bytes of a secret value.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
    /// The bytes themselves: the one way to read a value, easy to find in a review.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretBytes {
    fn from(s: String) -> Self {
        Self(s.into_bytes())
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

/// A value fetched from AWS: SecretString or SecretBinary.
#[derive(Clone, PartialEq, Eq)]
pub enum Payload {
    /// SecretString.
    String(SecretBytes),
    /// SecretBinary.
    Binary(SecretBytes),
}

impl Payload {
    /// The bytes, whichever kind.
    pub fn bytes(&self) -> &SecretBytes {
        match self {
            Payload::String(b) | Payload::Binary(b) => b,
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::String(b) => write!(f, "String({b:?})"),
            Payload::Binary(b) => write!(f, "Binary({b:?})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let v = Payload::String(SecretBytes::from("hunter2".to_string()));
        let shown = format!("{v:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("7 bytes"));
    }
}
