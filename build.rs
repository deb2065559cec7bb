//! Puts the git commit into `--version` when the source is a git checkout
//! (`meshgate 0.1.0 (abc1234def56)`); a crate built from a tarball says the
//! version only.
//!
//! Cargo treats a `rerun-if-changed` path that does not exist as always
//! changed, so only files that exist are named: a checkout without
//! `.git/packed-refs` (a fresh `git init`, some CI checkouts) would otherwise
//! rerun this script, and relink the binary, on every build
//! (tests/core/build_script.rs).

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let o = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
    let s = String::from_utf8(o.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    // Rerun when the checked-out commit moves (HEAD, or the branch it names,
    // loose or packed).
    let mut watched = Vec::new();
    if let (Some(dir), Some(common)) = (git(&["rev-parse", "--git-dir"]), git(&["rev-parse", "--git-common-dir"])) {
        watched = [format!("{dir}/HEAD"), format!("{common}/refs/heads"), format!("{common}/packed-refs")]
            .into_iter()
            .filter(|p| Path::new(p).exists())
            .collect();
    }
    if watched.is_empty() {
        watched.push("build.rs".to_owned());
    }
    for p in watched {
        println!("cargo:rerun-if-changed={p}");
    }
    if let Some(c) = git(&["rev-parse", "--short=12", "HEAD"]) {
        let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
        println!("cargo:rustc-env=MESHGATE_VERSION_LONG={version} ({c})");
    }
}
