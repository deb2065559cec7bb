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
//! `revoked-sessions` there (one `NONCE EXPIRY` a line, mode 0600, merged
//! with what is there and written whole to a new temporary file that is
//! renamed over it on each logout), so a logout outlives a restart and holds
//! for every process that shares the directory and the token: each looks for
//! the others' logouts in the file at most once a second
//! ([`RELOAD_EVERY`]). The file is never read or written through a symlink,
//! and at most [`MAX_REVOKED`] nonces (a few MiB) are read from it.

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
    /// When the store was last looked at, and what it was then.
    seen: Mutex<Seen>,
    /// Held while the store is written (one logout at a time).
    writing: Mutex<()>,
}

/// The file in the state directory that holds the revoked nonces.
pub const REVOKED_FILE: &str = "revoked-sessions";
/// The most revoked nonces read from the file.
pub const MAX_REVOKED: usize = 100_000;
/// The most bytes read from the file (a line is about 34).
const MAX_FILE_BYTES: u64 = 8 << 20;
/// How often a session check looks for other processes' logouts.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// What the store was when last read or written: which file (a new one on
/// every write), when it changed, its length.
type Stamp = (u64, Option<SystemTime>, u64);

#[derive(Debug, Default)]
struct Seen {
    checked: Option<std::time::Instant>,
    stamp: Option<Stamp>,
}

fn stamp_of(meta: &std::fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let ino = 0;
    (ino, meta.modified().ok(), meta.len())
}

/// The revoked nonces in `path` not yet expired (at most [`MAX_REVOKED`],
/// from the first [`MAX_FILE_BYTES`]), and the file's stamp; `None` when
/// there is no file. A symlink, or anything but a plain file, is an error
/// naming the path.
fn read_store(path: &Path) -> std::io::Result<Option<(HashMap<String, u64>, Stamp)>> {
    use std::io::Read as _;
    let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW | libc::O_NONBLOCK);
    let file = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(named(e)),
    };
    let meta = file.metadata().map_err(named)?;
    if !meta.is_file() {
        return Err(named(std::io::Error::other("not a plain file (remove it; meshgate makes it again)")));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES).read_to_end(&mut bytes).map_err(named)?;
    let text = String::from_utf8_lossy(&bytes);
    let now = now();
    let mut revoked = HashMap::new();
    for line in text.lines() {
        if revoked.len() >= MAX_REVOKED {
            break;
        }
        let mut parts = line.split_ascii_whitespace();
        if let (Some(nonce), Some(Ok(expiry))) = (parts.next(), parts.next().map(str::parse::<u64>)) {
            if expiry > now && nonce.len() <= 64 {
                revoked.insert(nonce.to_owned(), expiry);
            }
        }
    }
    Ok(Some((revoked, stamp_of(&meta))))
}

/// Writes `revoked` to `path`: to a new file of mode 0600 beside it (never
/// one already there, nor through a symlink), renamed over it. Its stamp.
fn write_store(path: &Path, revoked: &HashMap<String, u64>) -> std::io::Result<Stamp> {
    use std::io::Write as _;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if let Some(dir) = path.parent() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir)?;
    }
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_file_name(format!("{REVOKED_FILE}.{}.{n}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = (|| {
        let mut file = options.open(&tmp)?;
        let text: String = revoked.iter().map(|(n, e)| format!("{n} {e}\n")).collect();
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        let stamp = stamp_of(&file.metadata()?);
        std::fs::rename(&tmp, path)?;
        Ok(stamp)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

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
            seen: Mutex::default(),
            writing: Mutex::new(()),
        }
    }

    /// Keeps the revoked nonces in `dir` (made if missing, mode 0700) from
    /// now on, after reading the ones already there (a restart). Once per
    /// `Sessions`; a second call changes nothing.
    pub fn persist_in(&self, dir: &Path) -> std::io::Result<()> {
        let path = dir.join(REVOKED_FILE);
        if let Some((found, stamp)) = read_store(&path)? {
            self.revoked.lock().unwrap_or_else(|e| e.into_inner()).extend(found);
            self.seen.lock().unwrap_or_else(|e| e.into_inner()).stamp = Some(stamp);
        }
        let _ = self.store.set(path);
        Ok(())
    }

    /// Takes in the logouts other processes wrote to the store since it was
    /// last looked at (at most once every [`RELOAD_EVERY`]).
    fn refresh(&self) {
        let Some(path) = self.store.get() else { return };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if seen.checked.is_some_and(|t| now.duration_since(t) < RELOAD_EVERY) {
            return;
        }
        seen.checked = Some(now);
        let Ok(meta) = std::fs::symlink_metadata(path) else { return };
        if seen.stamp == Some(stamp_of(&meta)) {
            return;
        }
        match read_store(path) {
            Ok(Some((found, stamp))) => {
                self.revoked.lock().unwrap_or_else(|e| e.into_inner()).extend(found);
                seen.stamp = Some(stamp);
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "could not read the logged-out sessions"),
        }
    }

    /// Writes the revoked nonces to the store, if there is one, with those
    /// another process wrote there (which this one then refuses too).
    fn save(&self) {
        let Some(path) = self.store.get() else { return };
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(Some((found, _))) = read_store(path) {
            self.revoked.lock().unwrap_or_else(|e| e.into_inner()).extend(found);
        }
        let revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match write_store(path, &revoked) {
            Ok(stamp) => self.seen.lock().unwrap_or_else(|e| e.into_inner()).stamp = Some(stamp),
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "could not keep a logout in the state directory; it holds until a restart"
            ),
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
        self.refresh();
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
        {
            let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
            // Forget what has expired anyway, so the set stays as small as the live sessions.
            revoked.retain(|_, exp| *exp > now);
            revoked.insert(nonce.to_owned(), expiry);
        }
        // Written without holding the set: a slow disk does not hold up checks.
        self.save();
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
/// Blanks before the `=` too (`meshgate_session =x`): a parser that trims
/// names reads that as the same name.
fn is_ours_any_case(kv: &[u8]) -> bool {
    let n = COOKIE_NAME.len();
    kv.len() > n
        && kv[..n].eq_ignore_ascii_case(COOKIE_NAME.as_bytes())
        && kv[n..].trim_ascii_start().first() == Some(&b'=')
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

    /// Review of issue #25 part 5: the revoked-nonce file. Two processes on
    /// one state directory each wrote their own set over the other's (the
    /// first one's logout was lost from the file, and never reached the
    /// second); the temporary file had a fixed name and followed a symlink
    /// planted there (overwriting what it pointed at); the file was read
    /// whole, whatever its size, and through a symlink; it was made 0644.
    #[cfg(unix)]
    #[test]
    fn the_revoked_file_is_shared_private_bounded_and_never_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (a, b) = (Sessions::new(&token("s3cret-token")), Sessions::new(&token("s3cret-token")));
        a.persist_in(&state).unwrap();
        b.persist_in(&state).unwrap();
        let (ca, cb) = (a.issue(), a.issue());
        // A symlink where the temporary file goes: not followed.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me\n").unwrap();
        std::fs::create_dir_all(&state).unwrap();
        std::os::unix::fs::symlink(&victim, state.join(format!("{REVOKED_FILE}.tmp"))).unwrap();
        a.revoke(&ca);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n", "a planted symlink was written through");
        std::thread::sleep(RELOAD_EVERY + Duration::from_millis(100));
        b.revoke(&cb);
        let text = std::fs::read_to_string(state.join(REVOKED_FILE)).unwrap();
        assert_eq!(text.lines().count(), 2, "one process's logout overwrote the other's: {text}");
        let mode = std::fs::metadata(state.join(REVOKED_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
        // Each process refuses the other's logout without a restart.
        assert_eq!(b.check(&ca), Err(Refused::Revoked));
        std::thread::sleep(RELOAD_EVERY + Duration::from_millis(100));
        assert_eq!(a.check(&cb), Err(Refused::Revoked));
        // A huge file is read only up to its bound.
        let big = dir.path().join("big");
        let far = now() + 3600;
        let line = |i: usize| format!("{i:0>22} {far}\n");
        let text: String = (0..MAX_REVOKED + 5_000).map(line).collect();
        std::fs::create_dir_all(&big).unwrap();
        std::fs::write(big.join(REVOKED_FILE), text).unwrap();
        let c = Sessions::new(&token("s3cret-token"));
        c.persist_in(&big).unwrap();
        assert!(c.revoked.lock().unwrap().len() <= MAX_REVOKED);
        // The file itself a symlink: refused, not read.
        let linked = dir.path().join("linked");
        std::fs::create_dir_all(&linked).unwrap();
        std::os::unix::fs::symlink(state.join(REVOKED_FILE), linked.join(REVOKED_FILE)).unwrap();
        let err = Sessions::new(&token("s3cret-token")).persist_in(&linked).unwrap_err();
        assert!(err.to_string().contains(REVOKED_FILE), "{err}");
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

    /// Review of issue #25 part 5: a name with blanks before its `=`
    /// (`meshgate_session =x`), in any case, in any of several `Cookie`
    /// lines, is the session cookie to a parser that trims names (Node's
    /// `cookie`, Python's `http.cookies`): it never reaches the upstream.
    #[test]
    fn a_name_with_blanks_before_its_equals_sign_is_stripped() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; meshgate_session =x; Meshgate_Session\t=y".parse().unwrap());
        h.append(header::COOKIE, "MESHGATE_SESSION  =z; b=2; meshgate_session_x =keep".parse().unwrap());
        strip_cookie(&mut h);
        assert_eq!(h[header::COOKIE], "a=1; b=2; meshgate_session_x =keep");
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
