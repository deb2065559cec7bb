//! The leanest reverse proxy hyper allows: each client connection gets its own
//! upstream connection, and requests pass through untouched (no header rules,
//! no auth, no pool, no limits). Not for use: `benches/proxy_load.sh` runs it
//! next to meshgate and nginx to show how much of meshgate's cost is the HTTP
//! stack itself (hyper's server and client halves) rather than meshgate.
//!
//! `cargo run --release --example bare_hyper_proxy -- 127.0.0.1:18814 127.0.0.1:18811`

use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:18814".into());
    let upstream = args.next().unwrap_or_else(|| "127.0.0.1:18811".into());
    let listener = TcpListener::bind(&listen).await?;
    println!("proxying http://{listen} to http://{upstream}");
    loop {
        let (client_io, _) = listener.accept().await?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let Ok(upstream_io) = TcpStream::connect(&upstream).await else { return };
            let _ = (client_io.set_nodelay(true), upstream_io.set_nodelay(true));
            let Ok((sender, conn)) = client::handshake::<_, Incoming>(TokioIo::new(upstream_io)).await else { return };
            tokio::spawn(conn);
            // One request at a time per HTTP/1 connection: the lock is never contended.
            let sender = std::sync::Arc::new(Mutex::new(sender));
            let service = hyper::service::service_fn(move |request| {
                let sender = sender.clone();
                async move { sender.lock().await.send_request(request).await }
            });
            let _ = server::Builder::new().serve_connection(TokioIo::new(client_io), service).await;
        });
    }
}
