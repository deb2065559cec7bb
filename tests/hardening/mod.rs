//! Hardening: the promises of docs/security.md as evidence. Never-widen properties over random
//! hosts, replay of the fuzz seeds and regressions, start-up faults.

mod ambient;
mod browser;
mod browser_ca;
mod browser_real;
mod faults;
mod fuzz_replay;
mod guards;
mod never_widen;
mod status_page;

/// The fuzz targets' entry points, compiled here too so the corpus replays on stable.
#[path = "../../fuzz/src/entries.rs"]
mod fuzz_entries;
