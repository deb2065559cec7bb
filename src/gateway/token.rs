//! The bearer token: loaded from `--token-file`, `MESHGATE_TOKEN` or the config
//! file, and never printed (its `Debug` is redacted).

use std::path::{Path, PathBuf};

/// A bearer token. `Debug` never shows it, and it has no `==`: compare it
/// only in constant time (`auth::bearer_value_matches`).
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The token could not be loaded (exit 78).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Missing or unreadable file.
    #[error("read token file {path}: {source}; create it with e.g. `{}`", create_advice(.path))]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file or variable holds nothing.
    #[error("the token from {0} is empty; put a long random string in it (e.g. `head -c 32 /dev/urandom | base64`)")]
    Empty(String),
    /// Characters that cannot appear in an HTTP header.
    #[error("the token from {0} has characters that cannot be sent in an Authorization header (control characters or spaces); use printable ASCII such as base64")]
    Invalid(String),
}

/// A shell line that makes a token file at `path`, its directory included
/// (a host without `/etc/meshgate` has none to write into).
/// The path is quoted for the shell when it needs it (a space, a quote, `$`).
pub fn create_advice(path: &std::path::Path) -> String {
    let p = sh_quote(&path.to_string_lossy());
    let mkdir = match path.parent().filter(|d| !d.as_os_str().is_empty() && *d != std::path::Path::new("/")) {
        Some(dir) => format!("mkdir -p {} && ", sh_quote(&dir.to_string_lossy())),
        None => String::new(),
    };
    format!("{mkdir}head -c 32 /dev/urandom | base64 > {p} && chmod 600 {p}")
}

/// `s` as one shell word: as it is when every character is plain, else in
/// single quotes (a `'` in it written `'\''`).
fn sh_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

impl Token {
    /// A token from a string; `origin` names where it came from, for messages.
    pub fn new(value: &str, origin: &str) -> Result<Self, TokenError> {
        let v = value.trim();
        if v.is_empty() {
            return Err(TokenError::Empty(origin.to_owned()));
        }
        if !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Invalid(origin.to_owned()));
        }
        Ok(Self(v.to_owned()))
    }

    /// Reads a token file. Returns the token and, if the file is readable by
    /// group or others, a warning to log.
    pub fn from_file(path: &Path) -> Result<(Self, Option<String>), TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read { path: path.into(), source })?;
        let token = Self::new(&text, &path.display().to_string())?;
        Ok((token, loose_permissions(path)))
    }

    /// The secret bytes, for the constant-time comparison only.
    pub(crate) fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

#[cfg(unix)]
fn loose_permissions(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "token file {} is readable by other users (mode {:o}); run `chmod 600 {}` (secrets mounted read-only by a container runtime are often 0444: then restrict the mount instead)",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

#[cfg(not(unix))]
fn loose_permissions(_: &Path) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advice_runs_as_written_whatever_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["plain/token", "my dir/it's a token", "$(touch pwned)/t"] {
            let path = tmp.path().join(name);
            let advice = create_advice(&path);
            let o = std::process::Command::new("sh").args(["-c", &advice]).current_dir(tmp.path()).output().unwrap();
            assert!(o.status.success(), "{advice}: {}", String::from_utf8_lossy(&o.stderr));
            let token = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{advice}: {e}"));
            assert!(token.trim().len() >= 40, "{advice}: {token}");
        }
        assert!(!tmp.path().join("pwned").exists(), "the path ran as a command");
        assert_eq!(
            create_advice(std::path::Path::new("/etc/meshgate/token")),
            "mkdir -p /etc/meshgate && head -c 32 /dev/urandom | base64 > /etc/meshgate/token && chmod 600 /etc/meshgate/token"
        );
    }

    #[test]
    fn debug_is_redacted_and_values_are_checked() {
        let t = Token::new(" s3cret\n", "test").unwrap();
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert_eq!(t.expose(), b"s3cret");
        assert!(matches!(Token::new(" \n", "x"), Err(TokenError::Empty(_))));
        assert!(matches!(Token::new("a b", "x"), Err(TokenError::Invalid(_))));
    }
}
