//! [`GatewayBody`]: what a client connection sends back, as a plain enum so
//! that no response is boxed on its way through: an axum [`Body`] from
//! meshgate's own routes and answers, or the upstream's response body
//! streaming through. (The request body's twin is `proxy::outbound`.)

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use hyper::body::{Body as HttpBody, Bytes, Frame, SizeHint};

use super::proxy::outbound::BoxError;
use super::proxy::pool::PooledBody;

/// A response body sent to a client.
#[derive(Debug)]
pub(crate) enum GatewayBody {
    /// From meshgate itself (its routes, its refusals, its 502/504).
    Axum(Body),
    /// The upstream's response body, streaming through.
    Upstream(PooledBody),
}

impl GatewayBody {
    /// As an axum [`Body`] (boxing the upstream's body), for a router.
    pub(crate) fn into_axum(self) -> Body {
        match self {
            Self::Axum(b) => b,
            Self::Upstream(b) => Body::new(b),
        }
    }
}

impl HttpBody for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Axum(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Axum(b) => b.is_end_stream(),
            Self::Upstream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Axum(b) => b.size_hint(),
            Self::Upstream(b) => b.size_hint(),
        }
    }
}
