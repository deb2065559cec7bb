//! [`Event`]: what a running gateway reports as it goes (listeners opened and
//! closed, bind retries, fallbacks). The library never prints; a program
//! subscribes with [`GatewayBuilder::on_event`](super::GatewayBuilder::on_event)
//! and decides what a person sees (`meshgate serve` prints its `listening on`
//! lines from these). Every event is also a `tracing` record.

use std::sync::Arc;
use std::time::Duration;

use meshgate_core::Listener;

use super::service::Protocol;

/// Something the gateway did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A listener opened, at start or later under follow. `port` is the real
    /// port (when 0 was asked for, the one the OS chose).
    Listening {
        /// What the resolver said about it.
        listener: Listener,
        /// True when it serves HTTPS.
        tls: bool,
    },
    /// A listener closed: its address no longer matches the selectors.
    Stopped {
        /// What the resolver had said about it.
        listener: Listener,
        /// True when it served HTTPS.
        tls: bool,
    },
    /// A listener stayed, but its provider, reason or role changed.
    Updated(Listener),
    /// A newly matched address could not be bound; it is retried.
    BindFailed {
        /// What failed, naming the address and the cause.
        error: String,
        /// When the next try is.
        retry_in: Duration,
    },
    /// Nothing matched: loopback stands in, and why.
    Fallback {
        /// Why nothing matched.
        reason: String,
    },
    /// The selectors match again; the fallback is over.
    FallbackOver,
    /// A listener of a `[[service]]` opened (the top-level service reports
    /// [`Event::Listening`]).
    ServiceListening {
        /// The service's name.
        service: String,
        /// What it speaks.
        protocol: Protocol,
        /// What the resolver said about the address.
        listener: Listener,
        /// True when it speaks TLS there.
        tls: bool,
    },
    /// A listener of a `[[service]]` closed.
    ServiceStopped {
        /// The service's name.
        service: String,
        /// What it spoke.
        protocol: Protocol,
        /// What the resolver had said about the address.
        listener: Listener,
    },
}

/// Where events go: the callback given to `on_event`.
pub(crate) type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;
