//! Puts the git commit into `--version` when the source is a git checkout
//! (`meshgate 0.1.0 (abc1234def56)`); a crate built from a tarball says the
//! version only.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let o = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
    let s = String::from_utf8(o.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    // Rerun when the checked-out commit moves (HEAD, or the branch it names).
    if let (Some(dir), Some(common)) = (git(&["rev-parse", "--git-dir"]), git(&["rev-parse", "--git-common-dir"])) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={common}/refs/heads");
        println!("cargo:rerun-if-changed={common}/packed-refs");
    } else {
        println!("cargo:rerun-if-changed=build.rs");
    }
    if let Some(c) = git(&["rev-parse", "--short=12", "HEAD"]) {
        let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
        println!("cargo:rustc-env=MESHGATE_VERSION_LONG={version} ({c})");
    }
}
