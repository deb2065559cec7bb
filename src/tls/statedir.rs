//! Where meshgate keeps state (the self-signed key) when `--state-dir` is not given.
//!
//! Order: systemd's `$STATE_DIRECTORY` (from `StateDirectory=`; a colon-separated
//! list when several are configured: the first is ours), then `/var/lib/meshgate`
//! for root, then the XDG data dir (`$XDG_DATA_HOME/meshgate`, else
//! `~/.local/share/meshgate`). The environment is a parameter so tests need not
//! change the process's own.

use std::ffi::OsString;
use std::path::PathBuf;

use super::error::TlsError;

/// The state directory from this process's environment and user.
pub fn default_state_dir() -> Result<PathBuf, TlsError> {
    state_dir_from(|k| std::env::var_os(k), running_as_root())
}

/// True when this process runs as root (where the system-wide paths apply:
/// `/var/lib/meshgate`, `/etc/meshgate`).
pub fn running_as_root() -> bool {
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// The state directory for the environment `env` and whether we run as root.
pub fn state_dir_from(env: impl Fn(&str) -> Option<OsString>, root: bool) -> Result<PathBuf, TlsError> {
    // Relative values are ignored, as systemd never sets one and the XDG spec says
    // to ignore them: a state dir that moves with the working directory would lose
    // the key.
    let absolute = |v: OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(first) = env("STATE_DIRECTORY")
        .and_then(|v| v.to_str().map(|s| s.split(':').next().unwrap_or("").to_owned()))
        .and_then(|s| absolute(s.into()))
    {
        return Ok(first);
    }
    if root {
        return Ok(PathBuf::from("/var/lib/meshgate"));
    }
    if let Some(xdg) = env("XDG_DATA_HOME").and_then(absolute) {
        return Ok(xdg.join("meshgate"));
    }
    match env("HOME").and_then(absolute) {
        Some(home) => Ok(home.join(".local/share/meshgate")),
        None => {
            Err(TlsError::NoStateDir("neither $STATE_DIRECTORY, $XDG_DATA_HOME nor $HOME is set to an absolute path"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(vars: &[(&str, &str)], root: bool) -> Result<PathBuf, TlsError> {
        let vars: Vec<(String, OsString)> = vars.iter().map(|(k, v)| (k.to_string(), OsString::from(v))).collect();
        state_dir_from(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()), root)
    }

    #[test]
    fn picks_in_order() {
        let p = PathBuf::from;
        let all = [("STATE_DIRECTORY", "/srv/mg:/srv/other"), ("XDG_DATA_HOME", "/home/u/.data"), ("HOME", "/home/u")];
        assert_eq!(dir(&all, false).unwrap(), p("/srv/mg"));
        assert_eq!(dir(&all, true).unwrap(), p("/srv/mg"));
        assert_eq!(dir(&all[1..], true).unwrap(), p("/var/lib/meshgate"));
        assert_eq!(dir(&all[1..], false).unwrap(), p("/home/u/.data/meshgate"));
        assert_eq!(dir(&all[2..], false).unwrap(), p("/home/u/.local/share/meshgate"));
        // Relative values are skipped, not used.
        let rel = [("STATE_DIRECTORY", "state"), ("XDG_DATA_HOME", "data"), ("HOME", "/h")];
        assert_eq!(dir(&rel, false).unwrap(), p("/h/.local/share/meshgate"));
        let err = dir(&[], false).unwrap_err();
        assert!(err.to_string().contains("--state-dir"), "{err}");
    }
}
