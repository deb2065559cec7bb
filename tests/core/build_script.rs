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

/// A scratch crate named `name` with meshgate's build.rs, empty `src/` and
/// `benches/`, in a fresh temporary directory.
fn probe_crate(kind: &str, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("meshgate-{kind}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.join("benches")).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("build.rs"), dir.join("build.rs")).unwrap();
    let manifest = format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n");
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    dir
}

/// A release binary's functions are laid out in the order
/// `benches/startup.order` names them (lld's `--symbol-ordering-file`), so
/// that start-up code shares pages: two builds of a probe with the order
/// reversed put the two functions in opposite places.
#[test]
fn the_startup_order_lays_out_the_release_binary() {
    let dir = probe_crate("order", "order-probe");
    std::fs::write(
        dir.join("src/main.rs"),
        "#[no_mangle]\n#[inline(never)]\npub extern \"C\" fn probe_one(x: u32) -> u32 { x.wrapping_mul(3) }\n\
         #[no_mangle]\n#[inline(never)]\npub extern \"C\" fn probe_two(x: u32) -> u32 { x.wrapping_add(7) }\n\
         fn main() {\n    let n = std::env::args().count() as u32;\n    \
         println!(\"{} {}\", probe_one(n), probe_two(n));\n}\n",
    )
    .unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let address = |nm: &str, name: &str| {
        let line = nm.lines().find(|l| l.ends_with(&format!(" {name}"))).unwrap_or_else(|| panic!("{name}: {nm}"));
        u64::from_str_radix(line.split_whitespace().next().unwrap(), 16).unwrap()
    };
    for (order, first, second) in
        [("probe_one\nprobe_two\n", "probe_one", "probe_two"), ("probe_two\nprobe_one\n", "probe_two", "probe_one")]
    {
        std::fs::write(dir.join("benches/startup.order"), order).unwrap();
        run(Command::new(&cargo)
            .args(["build", "--release", "--offline"])
            .env("CARGO_TARGET_DIR", dir.join("target"))
            .env_remove("RUSTFLAGS")
            .current_dir(&dir));
        let bin = dir.join("target/release/order-probe");
        run(&mut Command::new(&bin));
        // Only a linker that takes `--symbol-ordering-file` (lld: rustc's
        // default on x86_64 Linux since 1.90; mold) lays it out; with another
        // (GNU ld: rustc before 1.90, which rust-version allows, or another
        // host) the probe link says no and the binary builds as before.
        if !script_passed(&dir.join("target/release/build"), "--symbol-ordering-file=") {
            assert!(
                !takes_symbol_ordering(&dir),
                "the linker takes --symbol-ordering-file but build.rs did not pass it"
            );
            continue;
        }
        let nm = run(Command::new("nm").arg(&bin));
        let nm = String::from_utf8_lossy(&nm.stdout);
        assert!(address(&nm, first) < address(&nm, second), "{order:?} is not the layout: {nm}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// True when a build script's output under `build` (target/PROFILE/build)
/// passes a link argument starting with `arg`.
fn script_passed(build: &Path, arg: &str) -> bool {
    std::fs::read_dir(build).unwrap().flatten().any(|d| {
        std::fs::read_to_string(d.path().join("output"))
            .is_ok_and(|o| o.lines().any(|l| l.starts_with("cargo:rustc-link-arg-bins=") && l.contains(arg)))
    })
}

/// True when rustc, with the rustflags cargo would give this host's
/// programs, links a program with `--symbol-ordering-file`.
fn takes_symbol_ordering(dir: &Path) -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let vv = run(Command::new(&rustc).arg("-vV"));
    let vv = String::from_utf8_lossy(&vv.stdout).into_owned();
    let host = vv.lines().find_map(|l| l.strip_prefix("host: ")).unwrap().to_owned();
    let flags = std::env::var(format!("CARGO_TARGET_{}_RUSTFLAGS", host.to_uppercase().replace(['-', '.'], "_")))
        .unwrap_or_default();
    let src = dir.join("takes.rs");
    std::fs::write(&src, "fn main() {}\n").unwrap();
    let order = dir.join("benches/startup.order");
    Command::new(&rustc)
        .arg(&src)
        .arg("-o")
        .arg(dir.join("takes"))
        .args(flags.split_whitespace())
        .arg(format!("-Clink-arg=-Wl,--symbol-ordering-file={}", order.display()))
        .arg("-Clink-arg=-Wl,--no-warn-symbol-ordering")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The probe link uses the linker cargo was told to use
/// (`target.<triple>.linker`, given to build scripts as RUSTC_LINKER): one
/// that refuses `--symbol-ordering-file` must get a release build without
/// it, not a build that fails at the last link.
#[test]
fn the_order_is_probed_with_the_configured_linker() {
    let dir = probe_crate("linker", "linker-probe");
    std::fs::write(dir.join("src/main.rs"), "fn main() { println!(\"up\"); }\n").unwrap();
    std::fs::write(dir.join("benches/startup.order"), "main\n").unwrap();
    let linker = dir.join("picky-cc");
    std::fs::write(
        &linker,
        "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in *symbol-ordering*) echo \"refused: $a\" >&2; exit 1;; esac; done\n\
         exec cc \"$@\"\n",
    )
    .unwrap();
    run(Command::new("chmod").arg("755").arg(&linker));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let vv = run(Command::new(&rustc).arg("-vV"));
    let vv = String::from_utf8_lossy(&vv.stdout).into_owned();
    let host = vv.lines().find_map(|l| l.strip_prefix("host: ")).unwrap().to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo)
        .args(["build", "--release", "--offline"])
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env(format!("CARGO_TARGET_{}_LINKER", host.to_uppercase().replace(['-', '.'], "_")), &linker)
        .env_remove("RUSTFLAGS")
        .current_dir(&dir));
    let ran = run(&mut Command::new(dir.join("target/release/linker-probe")));
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "up\n");
    let _ = std::fs::remove_dir_all(&dir);
}
