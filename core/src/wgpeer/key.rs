//! [`PublicKey`]: a WireGuard peer's Curve25519 public key, its identity.
//!
//! People and `wg` write keys in standard base64 with padding (44 characters);
//! the UAPI control socket writes them in hex. Both forms are here so that no
//! other code decodes keys by hand.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// The length of a WireGuard key in bytes.
pub const KEY_LEN: usize = 32;

/// A WireGuard public key (32 bytes). `Display` and `FromStr` use base64 as `wg` prints it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

/// A string that is not a WireGuard key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a WireGuard public key: {detail}")]
pub struct KeyError {
    /// The value as given (truncated when very long).
    pub value: String,
    /// What is wrong with it, and what is expected.
    pub detail: String,
}

impl KeyError {
    fn new(value: &str, detail: impl Into<String>) -> Self {
        // A key is 44 or 64 characters: a much longer value is not worth echoing in full.
        let value = if value.chars().count() > 80 {
            format!("{}...", value.chars().take(80).collect::<String>())
        } else {
            value.to_owned()
        };
        Self { value, detail: detail.into() }
    }
}

impl PublicKey {
    /// A key from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Parses standard base64 with padding (`wg pubkey`'s 44 characters).
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        let expect = "expected 44 characters of standard base64 (32 bytes), as `wg pubkey` prints";
        let bytes = STANDARD.decode(s).map_err(|e| KeyError::new(s, format!("{e}; {expect}")))?;
        let bytes: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| KeyError::new(s, format!("decodes to {} bytes, not {KEY_LEN}; {expect}", b.len())))?;
        Ok(Self(bytes))
    }

    /// Parses 64 hex digits (the UAPI socket's form).
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let expect = "expected 64 hex digits (32 bytes)";
        if s.len() != 2 * KEY_LEN || !s.is_ascii() {
            let n = s.chars().count();
            return Err(KeyError::new(s, format!("{n} character{}; {expect}", if n == 1 { "" } else { "s" })));
        }
        let mut out = [0u8; KEY_LEN];
        for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                // Both digits are < 16, so the byte cannot overflow.
                (Some(hi), Some(lo)) => out[i] = (hi * 16 + lo) as u8,
                _ => return Err(KeyError::new(s, format!("not a hex digit at {}; {expect}", 2 * i))),
            }
        }
        Ok(Self(out))
    }

    /// Standard base64 with padding, as `wg` prints keys.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Lower-case hex, as the UAPI socket writes keys.
    pub fn to_hex(&self) -> String {
        use fmt::Write as _;
        self.0.iter().fold(String::with_capacity(2 * KEY_LEN), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_base64(s)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A key made by `wg genkey | wg pubkey`.
    const B64: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    #[test]
    fn base64_and_hex_round_trip() {
        let k = PublicKey::from_base64(B64).unwrap();
        assert_eq!(k.to_string(), B64);
        assert_eq!(k.to_hex().len(), 64);
        assert_eq!(PublicKey::from_hex(&k.to_hex()).unwrap(), k);
        assert_eq!(PublicKey::from_hex(&k.to_hex().to_uppercase()).unwrap(), k);
        assert_eq!(B64.parse::<PublicKey>().unwrap(), k);
        assert_eq!(format!("{k:?}"), format!("PublicKey({B64})"));
        assert_eq!(k.as_bytes()[0], 0xc5);
    }

    #[test]
    fn anything_but_32_bytes_is_refused_naming_the_value() {
        for bad in [
            "",
            "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg",   // no padding
            "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8A==",  // 31 bytes
            "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8DgA",  // 33 bytes
            "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=x", // trailing junk
            "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8D!=",  // not base64
            "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dh=",  // non-canonical last bits
            "laptop",
        ] {
            let e = PublicKey::from_base64(bad).unwrap_err();
            assert_eq!(e.value, bad);
            let msg = e.to_string();
            assert!(msg.contains(&format!("{bad:?}")) && msg.contains("44 characters"), "{msg}");
        }
        let e = PublicKey::from_base64(&"A".repeat(500)).unwrap_err();
        assert!(e.value.len() < 100, "{}", e.value);
    }

    #[test]
    fn bad_hex_is_refused() {
        assert!(PublicKey::from_hex("00").is_err());
        assert!(PublicKey::from_hex(&"g".repeat(64)).unwrap_err().to_string().contains("hex digit at 0"));
        assert!(PublicKey::from_hex(&"é".repeat(32)).is_err());
        assert_eq!(PublicKey::from_hex(&"ab".repeat(32)).unwrap().as_bytes(), &[0xab; 32]);
    }
}
