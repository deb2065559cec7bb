//! build.rs in a checkout of its own: a crate with meshgate's build script,
//! in a fresh `git init` (no `.git/packed-refs`), built twice. The second
//! build must not run the script again: cargo reruns a script whose
//! `rerun-if-changed` names a missing file on every build, which relinked
//! the release binary each time (about 4 minutes).

use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> std::process::Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

#[test]
fn a_checkout_without_packed_refs_does_not_rebuild() {
    let dir = std::env::temp_dir().join(format!("meshgate-buildrs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("build.rs"), dir.join("build.rs")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"buildrs-probe\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(dir.join("src/main.rs"), "fn main() { println!(\"{}\", env!(\"MESHGATE_VERSION_LONG\")); }\n")
        .unwrap();
    let git = |args: &[&str]| {
        run(Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(&dir))
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "probe"]);
    assert!(!dir.join(".git/packed-refs").exists(), "a fresh repository has no packed-refs");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = || {
        let o = run(Command::new(&cargo)
            .args(["build", "--offline", "-v"])
            .env("CARGO_TARGET_DIR", dir.join("target"))
            .env_remove("RUSTFLAGS")
            .current_dir(&dir));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let first = build();
    assert!(first.contains("build-script-build"), "the first build runs the script: {first}");
    packs_relocations_and_starts(&dir.join("target/debug/buildrs-probe"));
    let second = build();
    assert!(second.contains("Fresh buildrs-probe"), "the second build rebuilt: {second}");
    assert!(!second.contains("Running `"), "the second build ran something: {second}");
    // It still follows the commit: a new one reruns the script.
    std::fs::write(dir.join("README"), "x").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-qm", "another"]);
    let third = build();
    assert!(third.contains("build-script-build"), "a new commit did not rerun the script: {third}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// On glibc 2.36 or later the script packs the binary's relative relocations
/// (DT_RELR, a smaller table for the loader to read at start), and the
/// binary still starts here; on an older glibc it leaves them unpacked.
fn packs_relocations_and_starts(bin: &Path) {
    let ran = run(&mut Command::new(bin));
    assert!(String::from_utf8_lossy(&ran.stdout).starts_with("0.1.0"), "{ran:?}");
    // SAFETY: glibc returns a static NUL-terminated string such as "2.36".
    let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) }.to_string_lossy().into_owned();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let recent = (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (2, 36);
    let dynamic = run(Command::new("readelf").arg("--dynamic").arg(bin));
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    assert_eq!(dynamic.contains("(RELR)"), recent, "glibc {version}: {dynamic}");
}
