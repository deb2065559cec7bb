//! A bare axum hello-world with the same dependency versions as meshgate: the
//! baseline `benches/serve_load.sh` and `benches/proxy_load.sh` compare
//! meshgate's `/healthz` against, and the upstream `benches/proxy_load.sh`
//! puts every proxy in front of. `/big` streams 1 GiB of zeros (64 KiB
//! frames of one static buffer, so the upstream itself costs next to
//! nothing) for the streaming row.
//!
//! `cargo run --release --example hello_axum -- 127.0.0.1:18799`

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper::body::{Frame, SizeHint};

const BIG: u64 = 1 << 30;
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// `left` bytes of zeros, one static 64 KiB frame at a time.
struct Zeros {
    left: u64,
}

impl hyper::body::Body for Zeros {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(ZEROS.len() as u64);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n as usize])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18799".into());
    let app = Router::new().route("/healthz", get(|| async { "ok\n" })).route(
        "/big",
        get(|| async {
            ([(header::CONTENT_TYPE, "application/octet-stream")], Body::new(Zeros { left: BIG })).into_response()
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr}");
    axum::serve(listener, app).await
}
