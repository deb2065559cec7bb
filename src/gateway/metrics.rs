//! Counting what the gateway serves, and `/metrics` in the Prometheus text
//! format.
//!
//! The hot path only touches atomics: each connection looks up the counters
//! of its service on its listener once ([`Meter::http`]), and each response
//! adds one to a status class there, and to its refusal code if it is one
//! ([`Metered`]). The text is made at scrape time by a `prometheus-client`
//! collector that reads the atomics ([`render`]), so no label map is locked
//! per request. Every HTTP service of a gateway (the top-level one, named
//! [`TOP_SERVICE`], and each `[[service]]`) counts into the gateway's one
//! [`Meter`], so `/metrics` shows `meshgate_requests_total` with a `service`
//! label beside `listener` and `class`.
//!
//! The access log lives here too: one `tracing` record per response at target
//! [`ACCESS_TARGET`], made only when that target is enabled (off unless
//! `--access-log`), so that a disabled log costs one cached check. It names
//! the service, and never carries a token, a cookie or a query string.

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

/// The name of the top-level HTTP service (the single-upstream settings and
/// `serve` flags, or meshgate's own routes) in metrics, the access log and
/// the status page: a `[[service]]` has its own name.
pub const TOP_SERVICE: &str = "meshgate";

/// One HTTP service's responses on one listener, by status class (1xx to
/// 5xx) and by refusal code ([`REFUSAL_CODES`]).
#[derive(Debug)]
pub struct ListenerCounters {
    service: Arc<str>,
    classes: [AtomicU64; 5],
    refusals: [AtomicU64; REFUSAL_CODES.len()],
}

impl ListenerCounters {
    fn new(service: Arc<str>) -> Self {
        Self { service, classes: Default::default(), refusals: Default::default() }
    }

    /// The service these count for.
    pub fn service(&self) -> &Arc<str> {
        &self.service
    }

    /// Counts one response with this status.
    pub fn count(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.classes[class].fetch_add(1, Ordering::Relaxed);
        if let Some(i) = REFUSAL_CODES.iter().position(|&c| c == status) {
            self.refusals[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn responses(&self) -> u64 {
        self.classes.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// An HTTP service on a listener: what [`ListenerCounters`] are kept for.
type ServiceAt = (Arc<str>, SocketAddr);

/// One connection's counters: of its listener set's one HTTP service, or of
/// each of several sharing the port by path (in
/// [`ServiceNames`](super::context::ServiceNames) order).
#[derive(Debug)]
pub enum ServiceMeters {
    /// The one service's.
    One(Arc<ListenerCounters>),
    /// Each service's.
    Several(Box<[Arc<ListenerCounters>]>),
}

impl ServiceMeters {
    /// The counters of the service at `index` (the first if out of range).
    pub fn get(&self, index: usize) -> &Arc<ListenerCounters> {
        match self {
            Self::One(c) => c,
            Self::Several(all) => all.get(index).or(all.first()).expect("at least one service"),
        }
    }
}

/// Every counter `/metrics` shows that the gateway keeps (the refusal
/// counters of [`Stats`](super::context::Stats) are read beside it).
#[derive(Debug, Default)]
pub struct Meter {
    /// By service, then listener.
    listeners: Mutex<BTreeMap<ServiceAt, Arc<ListenerCounters>>>,
    open: AtomicI64,
    /// Listeners closed since start (bumped by whoever watches the events).
    /// Attaches are these plus the listeners open now: every listener ever
    /// opened is one or the other, and the count never races the events.
    pub detached: AtomicU64,
    tls: OnceLock<Arc<TlsStats>>,
    upstream_idle: OnceLock<IdleCount>,
    /// The TCP services' counters, shown with a `service` label.
    services: Mutex<BTreeMap<String, ServiceCounters>>,
}

/// Reads one service's counters at scrape time: `(name, help, value)`, each
/// name ending in `_total` for a counter.
pub struct ServiceCounters(pub Box<dyn Fn() -> CounterValues + Send + Sync>);

/// `(name, help, value)` of each counter of a service.
pub type CounterValues = Vec<(&'static str, &'static str, u64)>;

impl std::fmt::Debug for ServiceCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceCounters")
    }
}

/// Reads the upstream pool's idle connections at scrape time.
pub struct IdleCount(pub Box<dyn Fn() -> u64 + Send + Sync>);

impl std::fmt::Debug for IdleCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdleCount")
    }
}

impl Meter {
    /// The counters of the top-level service ([`TOP_SERVICE`]) on the
    /// listener at `local`.
    pub fn listener(&self, local: SocketAddr) -> Arc<ListenerCounters> {
        self.http(&Arc::from(TOP_SERVICE), local)
    }

    /// The counters of HTTP service `service` on the listener at `local`
    /// (looked up once per connection).
    pub fn http(&self, service: &Arc<str>, local: SocketAddr) -> Arc<ListenerCounters> {
        let mut map = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((service.clone(), local)).or_insert_with(|| Arc::new(ListenerCounters::new(service.clone()))).clone()
    }

    /// Responses sent so far by each HTTP service, by name.
    pub fn service_responses(&self) -> BTreeMap<String, u64> {
        let listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = BTreeMap::new();
        for ((service, _), c) in listeners.iter() {
            *out.entry(service.to_string()).or_insert(0) += c.responses();
        }
        out
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

    /// Shows a service's counters (replacing any of that name) until
    /// [`remove_service`](Self::remove_service).
    pub fn add_service(&self, name: &str, counters: ServiceCounters) {
        self.services.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned(), counters);
    }

    /// Each service's counter named `name` (a [`CounterValues`] name), by service name.
    pub fn service_counter(&self, name: &str) -> Vec<(String, u64)> {
        let services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        let read: Vec<(String, CounterValues)> = services.iter().map(|(n, c)| (n.clone(), (c.0)())).collect();
        drop(services);
        read.into_iter()
            .filter_map(|(service, values)| values.iter().find(|v| v.0 == name).map(|v| (service, v.2)))
            .collect()
    }

    /// Stops showing a service's counters.
    pub fn remove_service(&self, name: &str) {
        self.services.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
    }

    /// Responses sent on every listener, open connections, and the refusals
    /// by status ([`REFUSAL_CODES`] order): what the status page samples.
    pub fn totals(&self) -> MeterTotals {
        let listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let responses = listeners.values().map(|c| c.responses()).sum();
        MeterTotals { responses, open: self.open.load(Ordering::Relaxed), refusals: refusals(listeners.values()) }
    }
}

/// The refusals by code ([`REFUSAL_CODES`] order), summed over `counters`.
fn refusals<'a>(counters: impl Iterator<Item = &'a Arc<ListenerCounters>>) -> [u64; REFUSAL_CODES.len()] {
    let mut out = [0; REFUSAL_CODES.len()];
    for c in counters {
        for (sum, n) in out.iter_mut().zip(&c.refusals) {
            *sum += n.load(Ordering::Relaxed);
        }
    }
    out
}

/// The [`Meter`]'s sums at one moment ([`Meter::totals`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeterTotals {
    /// Responses sent, every listener and status.
    pub responses: u64,
    /// Client connections open now.
    pub open: i64,
    /// Refusals by status, in [`REFUSAL_CODES`] order.
    pub refusals: [u64; REFUSAL_CODES.len()],
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
    service: Arc<str>,
    listener: SocketAddr,
    peer: SocketAddr,
    identity: Option<String>,
    method: axum::http::Method,
    path: String,
    started: Instant,
}

impl AccessRecord {
    /// A record for `request` when the access log is on, else `None` (one
    /// cached check). `service` is the service that serves it; `identity` is
    /// the peer's name or key when the mesh gives one.
    pub fn start<B>(
        request: &axum::http::Request<B>,
        service: &Arc<str>,
        listener: SocketAddr,
        peer: SocketAddr,
        identity: impl FnOnce() -> Option<String>,
    ) -> Option<Box<Self>> {
        if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
            return None;
        }
        Some(Box::new(Self {
            service: service.clone(),
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
        // Numbers, not strings, in the JSON log: milliseconds to the microsecond.
        let duration_ms = (self.started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
        let identity = self.identity.as_deref().unwrap_or("-");
        // A streamed body has no length up front: tracing records an
        // `Option` field only when it is `Some`, so the field is left out.
        tracing::info!(
            target: ACCESS_TARGET,
            service = %self.service,
            listener = %self.listener,
            peer = %self.peer,
            identity,
            method = %self.method,
            path = %self.path,
            status,
            bytes,
            duration_ms,
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
        counting: Option<Arc<ListenerCounters>>,
        access: Option<Box<AccessRecord>>,
    }
}

impl<F> Metered<F> {
    /// Wraps `inner`: its status is counted in `counters`.
    pub fn new(inner: F, counters: Arc<ListenerCounters>, access: Option<Box<AccessRecord>>) -> Self {
        Self { inner, counting: Some(counters), access }
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
        if let Some(counters) = this.counting {
            counters.count(status);
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

/// The two text formats a scraper may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4 (`text/plain; version=0.0.4`): what
    /// is served unless the scraper asks for OpenMetrics.
    Prometheus,
    /// OpenMetrics 1.0.0 (`application/openmetrics-text`), ending in `# EOF`.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` with a weight above that of
    /// `text/plain` (and of `*/*`), as Prometheus itself sends; else the
    /// Prometheus text format.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let (mut open, mut plain) = (0.0_f32, 0.0_f32);
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => open = open.max(q),
                "text/plain" | "text/*" | "*/*" => plain = plain.max(q),
                _ => {}
            }
        }
        if open > 0.0 && open > plain {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The `/metrics` document in `format`.
pub fn render(meter: &Arc<Meter>, gauges: Gauges, format: Format) -> String {
    let families = families(meter, &gauges);
    match format {
        Format::OpenMetrics => {
            let mut registry = Registry::with_prefix("meshgate");
            registry.register_collector(Box::new(Scrape(families)));
            let mut out = String::new();
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
            out
        }
        Format::Prometheus => prometheus_text(&families),
    }
}

/// One metric family: its name (without the `meshgate_` prefix and a
/// counter's `_total`), help, type and samples.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    samples: Vec<(Vec<(&'static str, String)>, i128)>,
}

impl Family {
    fn one(name: &'static str, help: &'static str, counter: bool, v: i128) -> Self {
        Self { name, help, counter, samples: vec![(Vec::new(), v)] }
    }
}

/// Everything `/metrics` shows, read once per scrape.
fn families(m: &Meter, g: &Gauges) -> Vec<Family> {
    let get = |c: &AtomicU64| i128::from(c.load(Ordering::Relaxed));
    let mut out = Vec::new();
    let listeners = m.listeners.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut requests = Family {
        name: "requests",
        help: "Responses sent, by HTTP service, listener and status class.",
        counter: true,
        samples: Vec::new(),
    };
    for ((service, addr), c) in &listeners {
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let labels =
                vec![("service", service.to_string()), ("listener", addr.to_string()), ("class", (*class).to_owned())];
            requests.samples.push((labels, get(&c.classes[i])));
        }
    }
    out.push(requests);
    out.push(Family {
        name: "refusals",
        help: "Requests refused, every HTTP service together, by status: 401 no credentials, 403 browser guard, 421 Host guard, 413 body cap, 502 upstream unreachable, 504 upstream too slow.",
        counter: true,
        samples: REFUSAL_CODES
            .iter()
            .zip(refusals(listeners.values()))
            .map(|(code, n)| (vec![("status", code.to_string())], i128::from(n)))
            .collect(),
    });
    let u = i128::from;
    out.push(Family::one(
        "unauthorized",
        "Requests refused for want of a token, session or allowed peer.",
        true,
        u(g.unauthorized),
    ));
    out.push(Family::one("signin_redirects", "Browsers sent to the sign-in page.", true, u(g.signin_redirects)));
    out.push(Family::one("signin_refused", "Sign-ins refused.", true, u(g.signin_refused)));
    out.push(Family::one(
        "per_address_refused",
        "Connections closed at once because their address held its share.",
        true,
        u(g.per_address_refused),
    ));
    out.push(Family::one(
        "open_connections",
        "Client connections open now.",
        false,
        i128::from(m.open.load(Ordering::Relaxed)),
    ));
    out.push(Family::one("listeners", "Listeners open now.", false, u(g.listeners)));
    out.push(Family::one(
        "listener_attaches",
        "Listeners opened since start.",
        true,
        get(&m.detached) + u(g.listeners),
    ));
    out.push(Family::one("listener_detaches", "Listeners closed since start.", true, get(&m.detached)));
    out.push(Family::one(
        "fallback",
        "1 while loopback stands in because nothing matched.",
        false,
        i128::from(g.fallback),
    ));
    {
        // One family per service counter, the service as a label.
        let services = m.services.lock().unwrap_or_else(|e| e.into_inner());
        let read: Vec<(String, CounterValues)> = services.iter().map(|(n, c)| (n.clone(), (c.0)())).collect();
        drop(services);
        if let Some((_, first)) = read.first() {
            for (i, (name, help, _)) in first.iter().enumerate() {
                let (name, counter) = match name.strip_suffix("_total") {
                    Some(n) => (n, true),
                    None => (*name, false),
                };
                let samples = read
                    .iter()
                    .map(|(service, values)| {
                        (vec![("service", service.clone())], i128::from(values.get(i).map_or(0, |v| v.2)))
                    })
                    .collect();
                out.push(Family { name, help, counter, samples });
            }
        }
    }
    if let Some(idle) = m.upstream_idle.get() {
        out.push(Family::one(
            "upstream_idle_connections",
            "Idle keep-alive connections to the upstream, pooled for reuse.",
            false,
            u((idle.0)()),
        ));
    }
    if let Some(tls) = m.tls.get() {
        let s = tls.snapshot();
        out.push(Family {
            name: "tls_handshakes",
            help: "TLS handshakes by outcome.",
            counter: true,
            samples: [
                ("ok", s.ok),
                ("failed", s.failed),
                ("not_tls", s.garbage),
                ("closed", s.closed),
                ("timeout", s.timeout),
                ("http_redirected", s.redirected),
            ]
            .into_iter()
            .map(|(outcome, v)| (vec![("outcome", outcome.to_owned())], u(v)))
            .collect(),
        });
    }
    out
}

/// The Prometheus text format 0.0.4: `# HELP` and `# TYPE` name the samples'
/// own name (a counter's ends in `_total`), and there is no `# EOF`.
fn prometheus_text(families: &[Family]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for f in families {
        let name = format!("meshgate_{}{}", f.name, if f.counter { "_total" } else { "" });
        let help = f.help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {}", if f.counter { "counter" } else { "gauge" });
        for (labels, v) in &f.samples {
            out.push_str(&name);
            if !labels.is_empty() {
                let pairs: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| {
                        format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
                    })
                    .collect();
                let _ = write!(out, "{{{}}}", pairs.join(","));
            }
            let _ = writeln!(out, " {v}");
        }
    }
    out
}

/// The families as a `prometheus-client` collector, for OpenMetrics.
#[derive(Debug)]
struct Scrape(Vec<Family>);

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let kind = if f.counter { MetricType::Counter } else { MetricType::Gauge };
            let mut family = e.encode_descriptor(f.name, f.help, None, kind)?;
            let encode = |encoder: prometheus_client::encoding::MetricEncoder<'_>, v: i128| {
                if f.counter {
                    ConstCounter::new(u64::try_from(v).unwrap_or(u64::MAX)).encode(encoder)
                } else {
                    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(encoder)
                }
            };
            match f.samples.as_slice() {
                [(labels, v)] if labels.is_empty() => encode(family, *v)?,
                samples => {
                    for (labels, v) in samples {
                        encode(family.encode_family(labels)?, *v)?;
                    }
                }
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
            a.count(s);
        }
        let open = meter.connection();
        let text = render(&meter, Gauges { fallback: true, ..Gauges::default() }, Format::Prometheus);
        let at = "service=\"meshgate\",listener=\"127.0.0.1:1\"";
        assert!(text.contains(&format!("meshgate_requests_total{{{at},class=\"2xx\"}} 2")), "{text}");
        assert!(text.contains(&format!("meshgate_requests_total{{{at},class=\"4xx\"}} 2")), "{text}");
        assert!(text.contains(&format!("meshgate_requests_total{{{at},class=\"1xx\"}} 1")), "{text}");
        assert!(text.contains("meshgate_refusals_total{status=\"401\"} 2"), "{text}");
        assert!(text.contains("meshgate_refusals_total{status=\"504\"} 1"), "{text}");
        assert!(text.contains("meshgate_open_connections 1"), "{text}");
        assert!(text.contains("meshgate_fallback 1"), "{text}");
        drop(open);
        assert!(render(&meter, Gauges::default(), Format::Prometheus).contains("meshgate_open_connections 0"));
    }

    /// Issue #30 part 5: two HTTP services on one listener count apart, each
    /// under its `service` label; the refusals and the totals sum them.
    #[test]
    fn each_http_service_counts_under_its_own_label() {
        let meter = Arc::new(Meter::default());
        let at: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let (dash, grafana) = (meter.http(&Arc::from("dash"), at), meter.http(&Arc::from("grafana"), at));
        assert_eq!(&**dash.service(), "dash");
        // Looked up again (the next connection): the same counters.
        assert!(Arc::ptr_eq(&dash, &meter.http(&Arc::from("dash"), at)));
        for s in [200, 200, 401] {
            dash.count(s);
        }
        grafana.count(502);
        let text = render(&meter, Gauges::default(), Format::Prometheus);
        for line in [
            "meshgate_requests_total{service=\"dash\",listener=\"127.0.0.1:8080\",class=\"2xx\"} 2",
            "meshgate_requests_total{service=\"dash\",listener=\"127.0.0.1:8080\",class=\"4xx\"} 1",
            "meshgate_requests_total{service=\"grafana\",listener=\"127.0.0.1:8080\",class=\"5xx\"} 1",
            "meshgate_requests_total{service=\"grafana\",listener=\"127.0.0.1:8080\",class=\"2xx\"} 0",
            "meshgate_refusals_total{status=\"401\"} 1",
            "meshgate_refusals_total{status=\"502\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in {text}");
        }
        let by = meter.service_responses();
        assert_eq!((by["dash"], by["grafana"]), (3, 1));
        assert_eq!(meter.totals().responses, 4);
        let om = render(&meter, Gauges::default(), Format::OpenMetrics);
        assert!(
            om.contains("meshgate_requests_total{service=\"grafana\",listener=\"127.0.0.1:8080\",class=\"5xx\"} 1"),
            "{om}"
        );
    }

    #[test]
    fn prometheus_text_by_default_openmetrics_when_asked() {
        use Format::{OpenMetrics, Prometheus};
        for (accept, want) in [
            (None, Prometheus),
            (Some("*/*"), Prometheus),
            (Some("text/plain;version=0.0.4"), Prometheus),
            (Some("application/openmetrics-text;version=1.0.0"), OpenMetrics),
            (
                Some("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"),
                OpenMetrics,
            ),
            (Some("application/openmetrics-text;q=0.2,text/plain;q=0.9"), Prometheus),
            (Some("application/openmetrics-text;q=0"), Prometheus),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
        let meter = Arc::new(Meter::default());
        let _ = meter.listener("127.0.0.1:1".parse().unwrap());
        let text = render(&meter, Gauges::default(), Prometheus);
        assert!(text.starts_with("# HELP meshgate_requests_total "), "{text}");
        assert!(text.contains("# TYPE meshgate_requests_total counter\n"), "{text}");
        assert!(text.contains("# TYPE meshgate_listeners gauge\nmeshgate_listeners 0\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        let om = render(&meter, Gauges::default(), OpenMetrics);
        assert!(om.contains("# TYPE meshgate_requests counter\n") && om.ends_with("# EOF\n"), "{om}");
    }
}
