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
    #[error("{value:?} is not a [peers] name, a 44-character base64 WireGuard key, a tailnet login (user@example.com) nor a tag (tag:NAME); {known}")]
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

/// The peers let in without a token: WireGuard keys, and tailnet identities
/// (a login such as `user@example.com`, or an ACL tag such as `tag:server`),
/// which tailscaled's `whois` vouches for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    keys: HashSet<PublicKey>,
    tailnet: BTreeSet<String>,
}

/// True for what names a tailnet identity rather than a WireGuard peer.
fn is_tailnet_identity(entry: &str) -> bool {
    entry.strip_prefix("tag:").is_some_and(|t| !t.is_empty())
        || entry.split_once('@').is_some_and(|(u, d)| !u.is_empty() && !d.is_empty())
}

impl AllowList {
    /// Resolves names and keys (`allow_peers`, `--allow-peer`) through `names`;
    /// an entry that is neither but reads as a tailnet login or tag is one. The
    /// first entry that is none of these is the error.
    pub fn resolve<'a>(names: &PeerNames, entries: impl IntoIterator<Item = &'a str>) -> Result<Self, PeerNameError> {
        let mut out = Self::default();
        for e in entries {
            match names.resolve(e) {
                Ok(k) => {
                    out.keys.insert(k);
                }
                Err(_) if is_tailnet_identity(e) => {
                    out.tailnet.insert(e.to_owned());
                }
                Err(err) => return Err(err),
            }
        }
        Ok(out)
    }

    /// Whether `key` is allowed.
    pub fn allows(&self, key: &PublicKey) -> bool {
        self.keys.contains(key)
    }

    /// Whether a tailnet node of this login and these tags is allowed.
    pub fn allows_tailnet(&self, login: &str, tags: &[String]) -> bool {
        self.tailnet.contains(login) || tags.iter().any(|t| self.tailnet.contains(t))
    }

    /// No peer is allowed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.tailnet.is_empty()
    }

    /// How many distinct peers are allowed.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The allowed tailnet logins and tags, sorted (for display).
    pub fn tailnet(&self) -> &BTreeSet<String> {
        &self.tailnet
    }

    /// The allowed keys, sorted (for display).
    pub fn keys(&self) -> BTreeSet<PublicKey> {
        self.keys.iter().copied().collect()
    }

    /// Adds the entries of `other`.
    pub fn extend(&mut self, other: &AllowList) {
        self.keys.extend(other.keys.iter().copied());
        self.tailnet.extend(other.tailnet.iter().cloned());
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
    fn tailnet_logins_and_tags_are_allowed_by_whois() {
        let n = PeerNames::new([("laptop", A)]).unwrap();
        let allow = AllowList::resolve(&n, ["laptop", "ana@example.com", "tag:server"]).unwrap();
        assert!(allow.allows_tailnet("ana@example.com", &[]));
        assert!(allow.allows_tailnet("tagged-devices", &["tag:other".into(), "tag:server".into()]));
        assert!(!allow.allows_tailnet("bob@example.com", &["tag:other".into()]));
        assert!(!allow.allows(&B.parse().unwrap()));
        // Half an identity is not one.
        for bad in ["tag:", "@example.com", "ana@", "lapotp"] {
            assert!(AllowList::resolve(&n, [bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_entries_name_the_value_and_the_fix() {
        let n = PeerNames::new([("laptop", A), ("phone", B)]).unwrap();
        let e = AllowList::resolve(&n, ["laptop", "lapotp"]).unwrap_err().to_string();
        assert_eq!(
            e,
            "\"lapotp\" is not a [peers] name, a 44-character base64 WireGuard key, a tailnet login (user@example.com) nor a tag (tag:NAME); names known: laptop, phone"
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
