//! Names for peers ([`PeerNames`], the config's `[peers]`) and the peers let in
//! without a token ([`AllowList`], `allow_peers` / `--allow-peer`).
//!
//! A peer without a name is known by its key. Names go into the
//! `Meshgate-Peer-Name` header and into logs, so they are restricted to a
//! header- and log-safe alphabet, and a name may never itself look like a key
//! (an allow-list entry must mean one thing).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::PublicKey;

/// The longest peer name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// A `[peers]` entry or an allow-list entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerNameError {
    /// A name outside the allowed alphabet or length.
    #[error(
        "peer name {name:?}: use 1 to {MAX_NAME_LEN} letters, digits, '.', '_', '-' or '@' (it is sent in a header)"
    )]
    BadName {
        /// The name.
        name: String,
    },
    /// A name's value is not a key.
    #[error("peer {name:?}: {source}")]
    BadKey {
        /// The name.
        name: String,
        /// Why the value is not a key.
        source: super::KeyError,
    },
    /// One key under two names.
    #[error("peer {name:?}: duplicate key {key}, already named {first:?}; give each peer one name")]
    DuplicateKey {
        /// The second name.
        name: String,
        /// The first name.
        first: String,
        /// The key.
        key: PublicKey,
    },
    /// An allow-list entry that is neither a name nor a key.
    #[error("{value:?} is not a [peers] name nor a 44-character base64 WireGuard key; {known}")]
    UnknownPeer {
        /// The entry.
        value: String,
        /// `names known: a, b` or `no [peers] names are configured`.
        known: String,
    },
}

/// `[peers]`: name ↔ key, both ways.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerNames {
    by_name: BTreeMap<String, PublicKey>,
    by_key: HashMap<PublicKey, String>,
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
        && PublicKey::from_base64(name).is_err()
}

impl PeerNames {
    /// Names for keys given as `(name, base64 key)`, in file order. Refuses a bad
    /// name, a value that is not a key, and a key under two names.
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, PeerNameError> {
        let mut out = Self::default();
        for (name, value) in entries {
            let key = PublicKey::from_base64(value)
                .map_err(|source| PeerNameError::BadKey { name: name.to_owned(), source })?;
            out.insert(name, key)?;
        }
        Ok(out)
    }

    /// Adds one name.
    pub fn insert(&mut self, name: &str, key: PublicKey) -> Result<(), PeerNameError> {
        if !valid_name(name) {
            return Err(PeerNameError::BadName { name: name.to_owned() });
        }
        if let Some(first) = self.by_key.get(&key) {
            return Err(PeerNameError::DuplicateKey { name: name.to_owned(), first: first.clone(), key });
        }
        if let Some(old) = self.by_name.insert(name.to_owned(), key) {
            self.by_key.remove(&old);
        }
        self.by_key.insert(key, name.to_owned());
        Ok(())
    }

    /// The name of `key`, if it has one.
    pub fn name_of(&self, key: &PublicKey) -> Option<&str> {
        self.by_key.get(key).map(String::as_str)
    }

    /// The key named `name`.
    pub fn key_of(&self, name: &str) -> Option<PublicKey> {
        self.by_name.get(name).copied()
    }

    /// Every (name, key), by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PublicKey)> {
        self.by_name.iter().map(|(n, k)| (n.as_str(), k))
    }

    /// No names.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Resolves one allow-list entry (`laptop` or a base64 key) to a key.
    pub fn resolve(&self, entry: &str) -> Result<PublicKey, PeerNameError> {
        if let Some(k) = self.key_of(entry) {
            return Ok(k);
        }
        PublicKey::from_base64(entry).map_err(|_| PeerNameError::UnknownPeer {
            value: entry.to_owned(),
            known: if self.is_empty() {
                "no [peers] names are configured".into()
            } else {
                format!("names known: {}", self.by_name.keys().cloned().collect::<Vec<_>>().join(", "))
            },
        })
    }
}

/// The peers let in without a token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    keys: HashSet<PublicKey>,
}

impl AllowList {
    /// Resolves names and keys (`allow_peers`, `--allow-peer`) through `names`.
    /// The first entry that is neither is the error.
    pub fn resolve<'a>(names: &PeerNames, entries: impl IntoIterator<Item = &'a str>) -> Result<Self, PeerNameError> {
        let keys = entries.into_iter().map(|e| names.resolve(e)).collect::<Result<_, _>>()?;
        Ok(Self { keys })
    }

    /// Whether `key` is allowed.
    pub fn allows(&self, key: &PublicKey) -> bool {
        self.keys.contains(key)
    }

    /// No peer is allowed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many distinct peers are allowed.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The allowed keys, sorted (for display).
    pub fn keys(&self) -> BTreeSet<PublicKey> {
        self.keys.iter().copied().collect()
    }

    /// Adds the entries of `other`.
    pub fn extend(&mut self, other: &AllowList) {
        self.keys.extend(other.keys.iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    const B: &str = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";

    #[test]
    fn names_resolve_both_ways() {
        let n = PeerNames::new([("laptop", A), ("phone.ana", B)]).unwrap();
        let a: PublicKey = A.parse().unwrap();
        assert_eq!(n.name_of(&a), Some("laptop"));
        assert_eq!(n.key_of("phone.ana"), Some(B.parse().unwrap()));
        assert_eq!(n.iter().map(|(n, _)| n).collect::<Vec<_>>(), ["laptop", "phone.ana"]);
        let allow = AllowList::resolve(&n, ["laptop", B, B]).unwrap();
        assert_eq!(allow.len(), 2);
        assert!(allow.allows(&a) && allow.allows(&B.parse().unwrap()));
        assert!(!AllowList::resolve(&n, ["laptop"]).unwrap().allows(&B.parse().unwrap()));
        // An unnamed key is allowed by key.
        let other = "mHTSkbvrIvHEdTJRgS6xCqCSw4p0jrEj+0E8BFl6iG8=";
        assert!(AllowList::resolve(&PeerNames::default(), [other]).unwrap().allows(&other.parse().unwrap()));
    }

    #[test]
    fn bad_entries_name_the_value_and_the_fix() {
        let n = PeerNames::new([("laptop", A), ("phone", B)]).unwrap();
        let e = AllowList::resolve(&n, ["laptop", "lapotp"]).unwrap_err().to_string();
        assert_eq!(
            e,
            "\"lapotp\" is not a [peers] name nor a 44-character base64 WireGuard key; names known: laptop, phone"
        );
        let e = AllowList::resolve(&PeerNames::default(), ["x"]).unwrap_err().to_string();
        assert!(e.ends_with("no [peers] names are configured"), "{e}");
        let e = PeerNames::new([("laptop", A), ("again", A)]).unwrap_err().to_string();
        assert!(e.contains("\"again\"") && e.contains("duplicate key") && e.contains("\"laptop\""), "{e}");
        let e = PeerNames::new([("laptop", "c2hvcnQ=")]).unwrap_err().to_string();
        assert!(e.contains("laptop") && e.contains("c2hvcnQ=") && e.contains("5 bytes"), "{e}");
        for bad in ["", "two words", "x\r\ny", &"n".repeat(65), A] {
            let e = PeerNames::new([(bad, B)]).unwrap_err();
            assert_eq!(e, PeerNameError::BadName { name: bad.to_owned() });
        }
    }
}
