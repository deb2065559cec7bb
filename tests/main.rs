//! meshgate's one integration-test binary: every suite is a module of this crate,
//! so there is one link step and one place for shared helpers.
//!
//! An integration test is its own program: a provider crate it does not name is
//! dropped by the linker and its mode vanishes. [`registry`] therefore calls
//! `meshgate::builtin::link()` (which names every built-in provider crate) before
//! the registry is first built, and `core::registry` asserts the exact set.

mod core;
mod gateway;
mod hardening;
mod lab;
mod labnet;

use meshgate::core::Registry;

/// The registry of every built-in provider, as the binary sees it.
pub(crate) fn registry() -> &'static Registry {
    meshgate::builtin::link();
    Registry::global().expect("the built-in providers register without conflicts")
}

/// Each line `out` writes, as it comes (a thread reads until it ends or the
/// receiver is dropped): how the tests read a spawned program's output.
pub(crate) fn lines(out: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}
