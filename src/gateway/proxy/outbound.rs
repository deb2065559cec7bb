//! [`Outbound`]: a request body on its way to the upstream, as a plain enum so
//! that no request body is boxed on its way through: the client's own hyper
//! body, the same with a length cap, or an axum [`Body`] when the request came
//! through a router.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use http_body_util::Limited;
use hyper::body::{Body as HttpBody, Bytes, Frame, SizeHint};

use crate::gateway::idle::ClientBody;

/// The error type the bodies report (what hyper wants from a body).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body forwarded to the upstream.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A body that came through an axum router.
    Axum(Body),
    /// The client connection's body, as hyper delivered it.
    Client(ClientBody),
    /// The same, cut off past `--upstream-max-body-bytes`.
    Capped(Limited<ClientBody>),
}

impl HttpBody for Outbound {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Every variant is Unpin.
        match self.get_mut() {
            Self::Axum(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Client(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Capped(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Axum(b) => b.is_end_stream(),
            Self::Client(b) => b.is_end_stream(),
            Self::Capped(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Axum(b) => b.size_hint(),
            Self::Client(b) => b.size_hint(),
            Self::Capped(b) => b.size_hint(),
        }
    }
}
