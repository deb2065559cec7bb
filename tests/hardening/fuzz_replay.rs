//! Replays what the repository keeps of the fuzzing (`fuzz/README.md`) through
//! the same entry points the fuzz targets call, on the stable toolchain: the
//! seed corpus (`fuzz/corpus/TARGET/*`) and the named crash regressions
//! (`fuzz/regressions/TARGET/NAME`). A crash once found and kept stays fixed.

use std::path::{Path, PathBuf};

use super::fuzz_entries as entries;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.expect("a readable directory entry").path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    files.retain(|f| f.is_file());
    files.sort();
    files
}

/// Runs `entry` over every file; returns how many ran and the ones that panicked.
fn replay_files(files: &[PathBuf], entry: fn(&[u8])) -> (usize, Vec<String>) {
    let mut crashed = Vec::new();
    for f in files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        if std::panic::catch_unwind(|| entry(&data)).is_err() {
            crashed.push(f.display().to_string());
        }
    }
    (files.len(), crashed)
}

/// Replays one target's seeds and regressions; fails naming every input that
/// panics, and when the target has no seeds (a replay of nothing proves nothing).
fn replay(target: &str, entry: fn(&[u8])) {
    let seeds = inputs(&fuzz_dir().join("corpus").join(target));
    assert!(!seeds.is_empty(), "fuzz/corpus/{target} has no seed inputs; the seed corpus must be committed");
    let mut files = seeds;
    files.extend(inputs(&fuzz_dir().join("regressions").join(target)));
    let (ran, crashed) = replay_files(&files, entry);
    assert_eq!(ran, files.len());
    assert!(crashed.is_empty(), "fuzz inputs crash {target}:\n{}", crashed.join("\n"));
}

#[test]
fn selector_corpus() {
    replay("selector", entries::selector);
}

#[test]
fn config_corpus() {
    replay("config", entries::config);
}

#[test]
fn auth_header_corpus() {
    replay("auth_header", entries::auth_header);
}

#[test]
fn resolution_corpus() {
    replay("resolution", entries::resolution);
}

/// The replay itself can fail: an entry that panics on one input is reported
/// with that input's path, and the others still run.
#[test]
fn replay_reports_a_panicking_input() {
    let dir = std::env::temp_dir().join(format!("meshgate-fuzz-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, body) in [("a-fine", "fine"), ("b-boom", "boom"), ("c-fine", "also fine")] {
        std::fs::write(dir.join(name), body).unwrap();
    }
    fn picky(data: &[u8]) {
        assert_ne!(data, b"boom", "the planted crash");
    }
    let files = inputs(&dir);
    let (ran, crashed) = replay_files(&files, picky);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(ran, 3);
    assert_eq!(crashed.len(), 1, "{crashed:?}");
    assert!(crashed[0].ends_with("b-boom"), "{crashed:?}");
}

/// Every named regression has its one-line reason in `fuzz/README.md`, and
/// every target it sits under exists.
#[test]
fn regressions_are_explained() {
    let readme = std::fs::read_to_string(fuzz_dir().join("README.md")).expect("fuzz/README.md");
    let targets = ["selector", "config", "auth_header", "resolution"];
    let mut n = 0;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fuzz_dir().join("regressions"))
        .expect("fuzz/regressions")
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for dir in dirs {
        assert!(dir.is_dir(), "{}: a regression goes under fuzz/regressions/TARGET/", dir.display());
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(targets.contains(&target.as_str()), "fuzz/regressions/{target}: no such fuzz target");
        for f in inputs(&dir) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let row = format!("`regressions/{target}/{name}`");
            assert!(readme.contains(&row), "fuzz/README.md has no line for {row}: add one saying what it caught");
            n += 1;
        }
    }
    assert!(n > 0, "fuzz/regressions holds no inputs");
}
