//! Secret values. `Debug` never shows the bytes, so a value cannot leak through a log line or a
//! panic message that formats it.

use std::fmt;

/// Bytes of a secret value.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wrap bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    /// Take the bytes.
    pub fn into_inner(self) -> Vec<u8> {
        self.0
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretBytes {
    fn from(s: String) -> Self {
        Self(s.into_bytes())
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(b: Vec<u8>) -> Self {
        Self(b)
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
    /// The raw bytes, whichever kind.
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
