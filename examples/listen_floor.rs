//! The floor of benches/startup_memory.sh's start-up row: a program that only
//! binds 127.0.0.1:PORT, accepts connections and closes them (std only, no
//! runtime). The bench starts it the way it starts meshgate, so the row can be
//! read as meshgate's own share over process start, the dynamic loader and
//! the harness's polling.
//!
//!     cargo run --release --example listen_floor -- PORT

use std::net::TcpListener;

fn main() {
    let port = match std::env::args().nth(1).map(|p| p.parse::<u16>()) {
        Some(Ok(p)) => p,
        _ => {
            eprintln!("usage: listen_floor PORT (a TCP port number, e.g. 18985)");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("listen_floor: bind 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    for stream in listener.incoming() {
        drop(stream);
    }
}
