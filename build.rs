//! Puts the git commit into `--version` when the source is a git checkout
//! (`meshgate 0.1.0 (abc1234def56)`); a crate built from a tarball says the
//! version only.
//!
//! Cargo treats a `rerun-if-changed` path that does not exist as always
//! changed, so only files that exist are named: a checkout without
//! `.git/packed-refs` (a fresh `git init`, some CI checkouts) would otherwise
//! rerun this script, and relink the binary, on every build
//! (tests/core/build_script.rs).
//!
//! It also packs the binary's relative relocations (`-z pack-relative-relocs`,
//! DT_RELR) when it is built for this Linux host and this host's glibc can
//! load them (2.36 or later): the loader then reads ~2 KiB at start instead
//! of a 400 KiB `.rela.dyn` (benches/startup_memory.sh measures it). The
//! binary then needs glibc 2.36 (`GLIBC_ABI_DT_RELR`), which `cargo deb`
//! writes into the package's dependencies by itself.
//!
//! A release binary's start-up functions are laid out together
//! (`benches/startup.order`, written by benches/startup_order.sh from a
//! profile of `serve` and `explain` starting) when the linker takes
//! `--symbol-ordering-file` (lld, rustc's default linker on x86_64 Linux since
//! 1.90; mold): the kernel maps a file's pages 64 KiB at a time around each
//! fault, so start-up code spread over the whole text maps most of it. A
//! probe link finds out; another linker builds as before. Names the file no
//! longer matches are skipped: a stale order costs pages, not correctness.

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
    if packs_relocations() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let order = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("benches/startup.order");
    if order.exists() && std::env::var("PROFILE").as_deref() == Ok("release") {
        println!("cargo:rerun-if-changed={}", order.display());
        let args = [format!("-Wl,--symbol-ordering-file={}", order.display()), "-Wl,--no-warn-symbol-ordering".into()];
        if links_with(&args) {
            for a in args {
                println!("cargo:rustc-link-arg-bins={a}");
            }
        }
    }
    if let Some(c) = git(&["rev-parse", "--short=12", "HEAD"]) {
        let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
        println!("cargo:rustc-env=MESHGATE_VERSION_LONG={version} ({c})");
    }
}

/// True when the binary is built for the Linux/glibc host that builds it
/// (not cross) and that host's glibc is 2.36 or later, the first to read
/// DT_RELR: a binary that runs here (`cargo run`, the tests) must start here.
fn packs_relocations() -> bool {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" || var("TARGET") != var("HOST") {
        return false;
    }
    glibc_version() >= (2, 36)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_version() -> (u32, u32) {
    extern "C" {
        fn gnu_get_libc_version() -> *const std::ffi::c_char;
    }
    // SAFETY: glibc returns a static NUL-terminated string such as "2.36".
    let v = unsafe { std::ffi::CStr::from_ptr(gnu_get_libc_version()) }.to_string_lossy();
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc_version() -> (u32, u32) {
    (0, 0)
}

/// True when rustc, for this target, with these flags and this linker, links
/// a program with `args` as well (the linker accepts them).
fn links_with(args: &[String]) -> bool {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let Ok(out) = std::env::var("OUT_DIR") else { return false };
    let dir = Path::new(&out).join("link-probe");
    let _ = std::fs::create_dir_all(&dir);
    let src = dir.join("probe.rs");
    if std::fs::write(&src, "fn main() {}\n").is_err() {
        return false;
    }
    let mut rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()));
    rustc.arg(&src).arg("--target").arg(var("TARGET")).arg("-o").arg(dir.join("probe")).arg("-Copt-level=0");
    // The linker cargo was told to use (`target.<triple>.linker`), which it
    // passes to rustc with -C linker, not in the rustflags.
    if let Some(linker) = std::env::var_os("RUSTC_LINKER").filter(|l| !l.is_empty()) {
        let mut flag = std::ffi::OsString::from("-Clinker=");
        flag.push(linker);
        rustc.arg(flag);
    }
    for flag in var("CARGO_ENCODED_RUSTFLAGS").split('\x1f').filter(|f| !f.is_empty()) {
        rustc.arg(flag);
    }
    for a in args {
        rustc.arg(format!("-Clink-arg={a}"));
    }
    rustc.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    rustc.status().is_ok_and(|s| s.success())
}
