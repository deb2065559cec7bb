//! Replays the committed fuzz corpus (`fuzz/corpus/TARGET/*`) through the same
//! entry points the fuzz targets call, on the stable toolchain: a crash once
//! found and kept in the corpus stays fixed.

use std::path::PathBuf;

use super::fuzz_entries as entries;

fn replay(target: &str, entry: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut n = 0;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; the corpus must be committed", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let data = std::fs::read(&f).unwrap();
        let outcome = std::panic::catch_unwind(|| entry(&data));
        assert!(outcome.is_ok(), "fuzz input {} crashes {target}", f.display());
        n += 1;
    }
    assert!(n > 0, "{} is empty", dir.display());
    n
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
