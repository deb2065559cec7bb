//! Browser sessions: the cookie a person gets after signing in with the token
//! once, so that page loads (which carry no `Authorization` header) pass.
//!
//! The cookie holds no secret: `v1.EXPIRY.NONCE.MAC`, where the MAC is
//! HMAC-SHA256 over the version, expiry and nonce, keyed with a key derived
//! from the token. So a cookie cannot be made without the token, a changed
//! expiry breaks the MAC, and rotating the token ends every session at once.
//! Logging out records the nonce as revoked until the cookie would have
//! expired, so a copy of a logged-out cookie is refused too. With a state
//! directory ([`Sessions::persist_in`]) the revoked nonces are kept in
//! `revoked-sessions` there (one `NONCE EXPIRY` a line, written whole to a
//! temporary file and renamed on each logout), so a logout outlives a restart
//! and holds for every process that shares the directory and the token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use super::token::Token;

/// The cookie's name.
pub const COOKIE_NAME: &str = "meshgate_session";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

const VERSION: &str = "v1";
/// What the session key is derived under: a new label is a new key.
const KEY_LABEL: &[u8] = b"meshgate session key v1";

/// Signs and checks session cookies for one token.
pub struct Sessions {
    key: hmac::Key,
    ttl: Duration,
    rng: SystemRandom,
    /// Nonces logged out, with the expiry of their cookie.
    revoked: Mutex<HashMap<String, u64>>,
    /// Where they are kept across restarts, if anywhere.
    store: OnceLock<PathBuf>,
}

/// The file in the state directory that holds the revoked nonces.
pub const REVOKED_FILE: &str = "revoked-sessions";

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

/// Why a cookie was refused (for tests and debug logs; a person sees the
/// sign-in page either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not of the form `v1.EXPIRY.NONCE.MAC`.
    Malformed,
    /// The MAC does not match: tampered, or signed with another token.
    BadSignature,
    /// Past its expiry (or further in the future than a session lasts).
    Expired,
    /// Logged out.
    Revoked,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Sessions {
    /// Sessions keyed from `token`, lasting [`SESSION_TTL`].
    pub fn new(token: &Token) -> Self {
        Self::with_ttl(token, SESSION_TTL)
    }

    /// Sessions keyed from `token`, lasting `ttl`.
    pub fn with_ttl(token: &Token, ttl: Duration) -> Self {
        let master = hmac::Key::new(hmac::HMAC_SHA256, token.expose());
        let derived = hmac::sign(&master, KEY_LABEL);
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
            ttl,
            rng: SystemRandom::new(),
            revoked: Mutex::new(HashMap::new()),
            store: OnceLock::new(),
        }
    }

    /// Keeps the revoked nonces in `dir` (made if missing, mode 0700) from
    /// now on, after reading the ones already there (a restart). Once per
    /// `Sessions`; a second call changes nothing.
    pub fn persist_in(&self, dir: &Path) -> std::io::Result<()> {
        let path = dir.join(REVOKED_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let now = now();
                let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
                for line in text.lines() {
                    let mut parts = line.split_ascii_whitespace();
                    if let (Some(nonce), Some(Ok(expiry))) = (parts.next(), parts.next().map(str::parse::<u64>)) {
                        if expiry > now {
                            revoked.insert(nonce.to_owned(), expiry);
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let _ = self.store.set(path);
        Ok(())
    }

    /// Writes the revoked nonces to the store, if there is one.
    fn save(&self, revoked: &HashMap<String, u64>) {
        let Some(path) = self.store.get() else { return };
        let text: String = revoked.iter().map(|(n, e)| format!("{n} {e}\n")).collect();
        let written = (|| {
            if let Some(dir) = path.parent() {
                let mut b = std::fs::DirBuilder::new();
                b.recursive(true);
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
                b.create(dir)?;
            }
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = written {
            tracing::warn!(
                path = %path.display(),
                error = %e,
                "could not keep a logout in the state directory; it holds until a restart"
            );
        }
    }

    /// How long a new session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new cookie value.
    pub fn issue(&self) -> String {
        self.issue_at(now())
    }

    fn issue_at(&self, now: u64) -> String {
        let mut nonce = [0u8; 16];
        // The system RNG failing is not something to serve through.
        self.rng.fill(&mut nonce).expect("the system random number generator works");
        let nonce = URL_SAFE_NO_PAD.encode(nonce);
        let expiry = now + self.ttl.as_secs();
        let signed = format!("{VERSION}.{expiry}.{nonce}");
        let mac = URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, signed.as_bytes()).as_ref());
        format!("{signed}.{mac}")
    }

    /// Checks a cookie value.
    pub fn check(&self, value: &str) -> Result<(), Refused> {
        self.check_at(value, now())
    }

    fn check_at(&self, value: &str, now: u64) -> Result<(), Refused> {
        let (signed, mac) = value.rsplit_once('.').ok_or(Refused::Malformed)?;
        let mut parts = signed.split('.');
        let (Some(VERSION), Some(expiry), Some(nonce), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Refused::Malformed);
        };
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| Refused::Malformed)?;
        hmac::verify(&self.key, signed.as_bytes(), &mac).map_err(|_| Refused::BadSignature)?;
        let expiry: u64 = expiry.parse().map_err(|_| Refused::Malformed)?;
        if expiry <= now || expiry > now + self.ttl.as_secs() {
            return Err(Refused::Expired);
        }
        if self.revoked.lock().unwrap_or_else(|e| e.into_inner()).contains_key(nonce) {
            return Err(Refused::Revoked);
        }
        Ok(())
    }

    /// Keeps refusing what `older` (the sessions of a token this one replaced)
    /// logged out: should the token go back to that one, its logged-out
    /// cookies must not come back with it.
    /// Kept where the older ones were kept, if anywhere.
    pub fn inherit_revoked(&self, older: &Sessions) {
        let old = older.revoked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let now = now();
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        revoked.extend(old.into_iter().filter(|(_, exp)| *exp > now));
        if let Some(path) = older.store.get() {
            let _ = self.store.set(path.clone());
        }
    }

    /// Ends the session of a (valid) cookie: it is refused from now on.
    pub fn revoke(&self, value: &str) {
        if self.check(value).is_err() {
            return;
        }
        let mut parts = value.split('.');
        let (Some(_), Some(expiry), Some(nonce)) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        let expiry = expiry.parse().unwrap_or(0);
        let now = now();
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        // Forget what has expired anyway, so the set stays as small as the live sessions.
        revoked.retain(|_, exp| *exp > now);
        revoked.insert(nonce.to_owned(), expiry);
        self.save(&revoked);
    }

    /// The `Set-Cookie` value that starts a session.
    pub fn set_cookie(&self, value: &str, secure: bool) -> String {
        let secure = if secure { "; Secure" } else { "" };
        format!("{COOKIE_NAME}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", self.ttl.as_secs())
    }
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

/// Splits `Cookie` headers into `name=value` pairs, on bytes: a cookie of the
/// service's with non-ASCII bytes (`name=Zoë`) must not hide ours.
fn cookie_pairs(headers: &axum::http::HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .map(<[u8]>::trim_ascii)
        .filter(|kv| !kv.is_empty())
}

fn is_ours(kv: &[u8]) -> bool {
    kv.strip_prefix(COOKIE_NAME.as_bytes()).is_some_and(|rest| rest.first() == Some(&b'='))
}

/// The session cookie's name in any case (`Meshgate_Session`): never ours to
/// read (meshgate sets it in lower case), but a service that reads cookie
/// names without regard to case would take it for one, so it never reaches
/// the upstream either.
fn is_ours_any_case(kv: &[u8]) -> bool {
    let n = COOKIE_NAME.len();
    kv.len() > n && kv[..n].eq_ignore_ascii_case(COOKIE_NAME.as_bytes()) && kv[n] == b'='
}

/// The most `meshgate_session` values looked at in one request (another
/// service on the same host may set a cookie of the same name: browsers send
/// every one, the most specific path first).
const MAX_SESSION_COOKIES: usize = 4;

/// Every session cookie value among a request's `Cookie` headers (a few at
/// most), in the order sent.
pub fn cookie_values(headers: &axum::http::HeaderMap) -> impl Iterator<Item = &str> {
    cookie_pairs(headers)
        .filter(|kv| is_ours(kv))
        .filter_map(|kv| std::str::from_utf8(&kv[COOKIE_NAME.len() + 1..]).ok())
        .take(MAX_SESSION_COOKIES)
}

/// The first session cookie's value among a request's `Cookie` headers.
pub fn cookie_value(headers: &axum::http::HeaderMap) -> Option<&str> {
    cookie_values(headers).next()
}

/// Removes every session cookie from a request's `Cookie` headers, its name
/// in any case, keeping the others byte for byte (the service behind has its
/// own cookies).
pub fn strip_cookie(headers: &mut axum::http::HeaderMap) {
    use axum::http::{header, HeaderValue};
    if !cookie_pairs(headers).any(is_ours_any_case) {
        return;
    }
    let kept: Vec<&[u8]> = cookie_pairs(headers).filter(|kv| !is_ours_any_case(kv)).collect();
    let joined = kept.join(&b"; "[..]);
    headers.remove(header::COOKIE);
    if !joined.is_empty() {
        if let Ok(v) = HeaderValue::from_bytes(&joined) {
            headers.insert(header::COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{header, HeaderMap, HeaderValue};

    use super::*;

    fn token(t: &str) -> Token {
        Token::new(t, "test").unwrap()
    }

    #[test]
    fn a_fresh_cookie_passes() {
        let s = Sessions::new(&token("s3cret-token"));
        let c = s.issue();
        assert_eq!(s.check(&c), Ok(()));
        // It holds no part of the token.
        assert!(!c.contains("s3cret"));
    }

    #[test]
    fn tampered_cookies_are_refused() {
        let s = Sessions::new(&token("s3cret-token"));
        let c = s.issue();
        let (signed, mac) = c.rsplit_once('.').unwrap();
        let mut parts: Vec<&str> = signed.split('.').collect();
        let later = (parts[1].parse::<u64>().unwrap() + 3600).to_string();
        parts[1] = &later;
        assert_eq!(s.check(&format!("{}.{mac}", parts.join("."))), Err(Refused::BadSignature));
        let mut flipped = mac.to_owned().into_bytes();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(s.check(&format!("{signed}.{flipped}")), Err(Refused::BadSignature));
        for bad in ["", "v1", "v1.1.2", "v2.1.2.3", "v1.x.y.z.w", "v1.1.n.!!!"] {
            assert_eq!(s.check(bad), Err(Refused::Malformed), "{bad}");
        }
    }

    #[test]
    fn expired_cookies_are_refused() {
        let s = Sessions::with_ttl(&token("s3cret-token"), Duration::from_secs(60));
        let c = s.issue_at(1_000);
        assert_eq!(s.check_at(&c, 1_030), Ok(()));
        assert_eq!(s.check_at(&c, 1_060), Err(Refused::Expired));
        assert_eq!(s.check_at(&c, 5_000), Err(Refused::Expired));
        // Signed for longer than a session lasts (a clock far behind): refused too.
        assert_eq!(s.check_at(&c, 900), Err(Refused::Expired));
    }

    #[test]
    fn a_cookie_signed_with_an_old_token_is_refused() {
        let old = Sessions::new(&token("old-token"));
        let new = Sessions::new(&token("new-token"));
        assert_eq!(new.check(&old.issue()), Err(Refused::BadSignature));
    }

    #[test]
    fn a_logged_out_cookie_is_refused() {
        let s = Sessions::new(&token("s3cret-token"));
        let (a, b) = (s.issue(), s.issue());
        s.revoke(&a);
        assert_eq!(s.check(&a), Err(Refused::Revoked));
        assert_eq!(s.check(&b), Ok(()));
    }

    /// Issue #25 part 5: a logout outlives the process: the next `Sessions`
    /// of the same token reading the same state directory refuses the cookie,
    /// and so do the sessions of a token that replaced it.
    #[test]
    fn a_logout_is_kept_in_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = Sessions::new(&token("s3cret-token"));
        first.persist_in(&state).unwrap();
        let (out, kept) = (first.issue(), first.issue());
        first.revoke(&out);
        let text = std::fs::read_to_string(state.join(REVOKED_FILE)).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        // A restart: new sessions of the same token, the same directory.
        let again = Sessions::new(&token("s3cret-token"));
        assert_eq!(again.check(&out), Ok(()), "without the directory it is forgotten");
        again.persist_in(&state).unwrap();
        assert_eq!(again.check(&out), Err(Refused::Revoked));
        assert_eq!(again.check(&kept), Ok(()));
        // A reload to a new token keeps writing there.
        let rotated = Sessions::new(&token("another-token"));
        rotated.inherit_revoked(&again);
        let other = rotated.issue();
        rotated.revoke(&other);
        let text = std::fs::read_to_string(state.join(REVOKED_FILE)).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn the_cookie_is_found_and_stripped_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "theme=dark; meshgate_session=v1.2.n.m".parse().unwrap());
        h.append(header::COOKIE, "app=1".parse().unwrap());
        assert_eq!(cookie_value(&h), Some("v1.2.n.m"));
        strip_cookie(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().collect::<Vec<_>>(), ["theme=dark; app=1"]);
        let mut only = HeaderMap::new();
        only.insert(header::COOKIE, "meshgate_session=x".parse().unwrap());
        strip_cookie(&mut only);
        assert!(!only.contains_key(header::COOKIE));
    }

    #[test]
    fn a_cookie_with_other_bytes_does_not_hide_ours() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_bytes(b"meshgate_session=v1.2.n.m; name=Zo\xc3\xab").unwrap());
        assert_eq!(cookie_value(&h), Some("v1.2.n.m"));
        strip_cookie(&mut h);
        assert_eq!(h[header::COOKIE].as_bytes(), b"name=Zo\xc3\xab");
        // A look-alike name is not ours.
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "meshgate_sessionx=1; xmeshgate_session=2".parse().unwrap());
        assert_eq!(cookie_value(&h), None);
        strip_cookie(&mut h);
        assert_eq!(h[header::COOKIE], "meshgate_sessionx=1; xmeshgate_session=2");
    }

    /// Issue #25 part 5: a case variant of the name (`Meshgate_Session`)
    /// is not read as a session, and never reaches the upstream.
    #[test]
    fn every_case_form_of_the_name_is_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "Meshgate_Session=v1.2.n.m; a=1; MESHGATE_SESSION=x; meshGate_session=y; meshgate_sessions=keep"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie_value(&h), None);
        strip_cookie(&mut h);
        assert_eq!(h[header::COOKIE], "a=1; meshgate_sessions=keep");
    }

    #[test]
    fn every_session_cookie_is_seen_and_stripped() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "meshgate_session=junk; a=1; meshgate_session=v1.2.n.m".parse().unwrap());
        assert_eq!(cookie_values(&h).collect::<Vec<_>>(), ["junk", "v1.2.n.m"]);
        strip_cookie(&mut h);
        assert_eq!(h[header::COOKIE], "a=1");
    }

    #[test]
    fn set_cookie_attributes() {
        let s = Sessions::new(&token("s3cret-token"));
        let c = s.set_cookie("v", true);
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure", "Max-Age=43200"] {
            assert!(c.contains(attr), "{c}");
        }
        assert!(!s.set_cookie("v", false).contains("Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }
}
