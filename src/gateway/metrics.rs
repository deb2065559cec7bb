//! Counting what the gateway serves, and `/metrics` in the Prometheus text
//! format.
//!
//! The hot path only touches atomics: each connection looks up its
//! listener's counters once ([`Meter::listener`]), and each response adds one
//! to a status class there ([`Metered`]). The text is made at scrape time by a
//! `prometheus-client` collector that reads the atomics ([`render`]), so no
//! label map is locked per request.
//!
//! The access log lives here too: one `tracing` record per response at target
//! [`ACCESS_TARGET`], made only when that target is enabled (off unless
//! `--access-log`), so that a disabled log costs one cached check. It never
//! carries a token, a cookie or a query string.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::tls::TlsStats;

/// The `tracing` target of the access log.
pub const ACCESS_TARGET: &str = "meshgate::access";

/// The refusals counted by status code: 401 (no token), 403 (browser guard),
/// 421 (Host guard), 413 (body cap), 502 (upstream unreachable), 504
/// (upstream too slow).
pub const REFUSAL_CODES: [u16; 6] = [401, 403, 421, 413, 502, 504];

/// One listener's responses by status class (1xx to 5xx).
#[derive(Debug, Default)]
pub struct ListenerCounters {
    classes: [AtomicU64; 5],
}

impl ListenerCounters {
    fn count(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.classes[class].fetch_add(1, Ordering::Relaxed);
    }
}

/// Every counter `/metrics` shows that the gateway keeps (the refusal
/// counters of [`Stats`](super::context::Stats) are read beside it).
#[derive(Debug, Default)]
pub struct Meter {
    listeners: Mutex<BTreeMap<SocketAddr, Arc<ListenerCounters>>>,
    refusals: [AtomicU64; REFUSAL_CODES.len()],
    open: AtomicI64,
    /// Listeners closed since start (bumped by whoever watches the events).
    /// Attaches are these plus the listeners open now: every listener ever
    /// opened is one or the other, and the count never races the events.
    pub detached: AtomicU64,
    tls: OnceLock<Arc<TlsStats>>,
    upstream_idle: OnceLock<IdleCount>,
}

/// Reads the upstream pool's idle connections at scrape time.
pub struct IdleCount(pub Box<dyn Fn() -> u64 + Send + Sync>);

impl std::fmt::Debug for IdleCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdleCount")
    }
}

impl Meter {
    /// The counters of the listener at `local` (looked up once per connection).
    pub fn listener(&self, local: SocketAddr) -> Arc<ListenerCounters> {
        let mut map = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(local).or_default().clone()
    }

    /// Counts an open connection until the guard drops.
    pub fn connection(self: &Arc<Self>) -> OpenConnection {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }

    /// Shows these TLS handshake counters too (the first call wins).
    pub fn set_tls(&self, stats: Arc<TlsStats>) {
        let _ = self.tls.set(stats);
    }

    /// Shows the upstream pool's idle connections too, read by `count` at
    /// scrape time (the first call wins).
    pub fn set_upstream_idle(&self, count: IdleCount) {
        let _ = self.upstream_idle.set(count);
    }

    fn count(&self, counters: &ListenerCounters, status: u16) {
        counters.count(status);
        if let Some(i) = REFUSAL_CODES.iter().position(|&c| c == status) {
            self.refusals[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An open connection, counted while it lives.
#[derive(Debug)]
pub struct OpenConnection(Arc<Meter>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the access log says about a request, taken before it is served.
#[derive(Debug)]
pub struct AccessRecord {
    listener: SocketAddr,
    peer: SocketAddr,
    identity: Option<String>,
    method: axum::http::Method,
    path: String,
    started: Instant,
}

impl AccessRecord {
    /// A record for `request` when the access log is on, else `None` (one
    /// cached check). `identity` is the peer's name or key when the mesh gives one.
    pub fn start<B>(
        request: &axum::http::Request<B>,
        listener: SocketAddr,
        peer: SocketAddr,
        identity: impl FnOnce() -> Option<String>,
    ) -> Option<Box<Self>> {
        if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
            return None;
        }
        Some(Box::new(Self {
            listener,
            peer,
            identity: identity(),
            method: request.method().clone(),
            // The path only: a query string may carry secrets.
            path: request.uri().path().to_owned(),
            started: Instant::now(),
        }))
    }

    fn log(&self, status: u16, bytes: Option<u64>) {
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            target: ACCESS_TARGET,
            listener = %self.listener,
            peer = %self.peer,
            identity = self.identity.as_deref().unwrap_or("-"),
            method = %self.method,
            path = %self.path,
            status,
            bytes = bytes.map_or_else(|| "-".to_owned(), |b| b.to_string()),
            duration_ms = format_args!("{ms:.3}"),
            "request"
        );
    }
}

pin_project_lite::pin_project! {
    /// A response future that counts its status on the way out, and logs it
    /// when the access log is on.
    pub struct Metered<F> {
        #[pin]
        inner: F,
        counting: Option<(Arc<Meter>, Arc<ListenerCounters>)>,
        access: Option<Box<AccessRecord>>,
    }
}

impl<F> Metered<F> {
    /// Wraps `inner`: its status is counted in `meter` and `counters`.
    pub fn new(
        inner: F,
        meter: Arc<Meter>,
        counters: Arc<ListenerCounters>,
        access: Option<Box<AccessRecord>>,
    ) -> Self {
        Self { inner, counting: Some((meter, counters)), access }
    }

    /// Wraps `inner` without counting it (only the access log, if on): what
    /// a `--cfg meshgate_uncounted` bench build serves with, to measure what
    /// counting costs.
    pub fn uncounted(inner: F, access: Option<Box<AccessRecord>>) -> Self {
        Self { inner, counting: None, access }
    }
}

impl<F, B> Future for Metered<F>
where
    F: Future<Output = Result<axum::http::Response<B>, Infallible>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(Ok(response)) = this.inner.poll(cx) else {
            return Poll::Pending;
        };
        let status = response.status().as_u16();
        if let Some((meter, counters)) = this.counting {
            meter.count(counters, status);
        }
        if let Some(record) = this.access.take() {
            let bytes = response
                .headers()
                .get(axum::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            record.log(status, bytes);
        }
        Poll::Ready(Ok(response))
    }
}

/// The numbers `/metrics` shows beside the [`Meter`]'s, read at scrape time.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    /// Requests refused 401.
    pub unauthorized: u64,
    /// Browsers sent to the sign-in page.
    pub signin_redirects: u64,
    /// Sign-ins refused.
    pub signin_refused: u64,
    /// Connections closed at once: their address held its share.
    pub per_address_refused: u64,
    /// Listeners open now.
    pub listeners: u64,
    /// True when loopback stands in because nothing matched.
    pub fallback: bool,
}

/// The Prometheus text document.
pub fn render(meter: &Arc<Meter>, gauges: Gauges) -> String {
    let mut registry = Registry::with_prefix("meshgate");
    registry.register_collector(Box::new(Scrape { meter: meter.clone(), gauges }));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[derive(Debug)]
struct Scrape {
    meter: Arc<Meter>,
    gauges: Gauges,
}

fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> Result<(), std::fmt::Error> {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let m = &self.meter;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        {
            let listeners = m.listeners.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let mut family = e.encode_descriptor(
                "requests",
                "Responses sent, by listener and status class.",
                None,
                MetricType::Counter,
            )?;
            for (addr, c) in &listeners {
                let addr = addr.to_string();
                for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
                    let labels = [("listener", addr.as_str()), ("class", *class)];
                    ConstCounter::new(get(&c.classes[i])).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = e.encode_descriptor(
                "refusals",
                "Requests refused, by status: 401 no credentials, 403 browser guard, 421 Host guard, 413 body cap, 502 upstream unreachable, 504 upstream too slow.",
                None,
                MetricType::Counter,
            )?;
            for (i, code) in REFUSAL_CODES.iter().enumerate() {
                let code = code.to_string();
                let labels = [("status", code.as_str())];
                ConstCounter::new(get(&m.refusals[i])).encode(family.encode_family(&labels)?)?;
            }
        }
        let g = &self.gauges;
        counter(
            &mut e,
            "unauthorized",
            "Requests refused for want of a token, session or allowed peer.",
            g.unauthorized,
        )?;
        counter(&mut e, "signin_redirects", "Browsers sent to the sign-in page.", g.signin_redirects)?;
        counter(&mut e, "signin_refused", "Sign-ins refused.", g.signin_refused)?;
        counter(
            &mut e,
            "per_address_refused",
            "Connections closed at once because their address held its share.",
            g.per_address_refused,
        )?;
        gauge(&mut e, "open_connections", "Client connections open now.", m.open.load(Ordering::Relaxed))?;
        gauge(&mut e, "listeners", "Listeners open now.", i64::try_from(g.listeners).unwrap_or(i64::MAX))?;
        counter(&mut e, "listener_attaches", "Listeners opened since start.", get(&m.detached) + g.listeners)?;
        counter(&mut e, "listener_detaches", "Listeners closed since start.", get(&m.detached))?;
        gauge(&mut e, "fallback", "1 while loopback stands in because nothing matched.", i64::from(g.fallback))?;
        if let Some(idle) = m.upstream_idle.get() {
            let n = i64::try_from((idle.0)()).unwrap_or(i64::MAX);
            gauge(
                &mut e,
                "upstream_idle_connections",
                "Idle keep-alive connections to the upstream, pooled for reuse.",
                n,
            )?;
        }
        if let Some(tls) = m.tls.get() {
            let s = tls.snapshot();
            let mut family =
                e.encode_descriptor("tls_handshakes", "TLS handshakes by outcome.", None, MetricType::Counter)?;
            for (outcome, v) in [
                ("ok", s.ok),
                ("failed", s.failed),
                ("not_tls", s.garbage),
                ("closed", s.closed),
                ("timeout", s.timeout),
                ("http_redirected", s.redirected),
            ] {
                let labels = [("outcome", outcome)];
                ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_counted_by_class_and_refusal() {
        let meter = Arc::new(Meter::default());
        let a = meter.listener("127.0.0.1:1".parse().unwrap());
        for s in [200, 204, 401, 401, 504, 101] {
            meter.count(&a, s);
        }
        let open = meter.connection();
        let text = render(&meter, Gauges { fallback: true, ..Gauges::default() });
        assert!(text.contains("meshgate_requests_total{listener=\"127.0.0.1:1\",class=\"2xx\"} 2"), "{text}");
        assert!(text.contains("meshgate_requests_total{listener=\"127.0.0.1:1\",class=\"4xx\"} 2"), "{text}");
        assert!(text.contains("meshgate_requests_total{listener=\"127.0.0.1:1\",class=\"1xx\"} 1"), "{text}");
        assert!(text.contains("meshgate_refusals_total{status=\"401\"} 2"), "{text}");
        assert!(text.contains("meshgate_refusals_total{status=\"504\"} 1"), "{text}");
        assert!(text.contains("meshgate_open_connections 1"), "{text}");
        assert!(text.contains("meshgate_fallback 1"), "{text}");
        drop(open);
        assert!(render(&meter, Gauges::default()).contains("meshgate_open_connections 0"));
    }
}
