//! A bare axum hello-world with the same dependency versions as meshgate: the
//! baseline `benches/serve_load.sh` compares meshgate's `/healthz` against.
//!
//! `cargo run --release --example hello_axum -- 127.0.0.1:18799`

use axum::routing::get;
use axum::Router;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18799".into());
    let app = Router::new().route("/healthz", get(|| async { "ok\n" }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr}");
    axum::serve(listener, app).await
}
