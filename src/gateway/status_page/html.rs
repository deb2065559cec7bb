//! The status page as HTML: a [`StatusDoc`] rendered by the server, every
//! value escaped (peer names come from a config file, interface names from
//! the OS), one style sheet and one small script, both inline and allowed by
//! their SHA-256 in the Content-Security-Policy ([`csp`]), nothing loaded
//! from elsewhere. The request-rate graph is an inline SVG drawn here.
//!
//! Without JavaScript the page is whole and refreshes itself every 5 s
//! (`<noscript>` meta refresh); with it, the script fetches the page again
//! every second and swaps in its `<main>`, so a change shows within 2 s.

use std::fmt::Write as _;
use std::sync::OnceLock;

use base64::Engine as _;

use super::board::{BoardEvent, EventKind, TailnetCaller};
use super::doc::{PeerDoc, StatusDoc};

/// The style sheet.
const CSS: &str = r#"
:root{--bg:#f5f6f8;--card:#fff;--fg:#1b1f24;--muted:#59636e;--line:#dfe3e8;--accent:#2f6fed;--ok:#1a7f37;--okbg:#dafbe1;--warn:#8a5a00;--warnbg:#fff4d6;--bad:#cf222e;--badbg:#ffebe9;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--card:#161b22;--fg:#e6edf3;--muted:#8d96a0;--line:#30363d;--accent:#58a6ff;--ok:#3fb950;--okbg:#12261b;--warn:#d29922;--warnbg:#2b2111;--bad:#f85149;--badbg:#2d1214}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header,main,footer{max-width:1100px;margin:0 auto;padding:0 16px}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:4px 14px;padding-top:18px;padding-bottom:6px}
h1{font-size:22px;margin:0;letter-spacing:-.01em}
h1 span{color:var(--accent)}
h2{font-size:13px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted);margin:0 0 10px}
h3{font-size:16px;margin:0 0 6px;display:flex;flex-wrap:wrap;gap:6px;align-items:center}
.sub{color:var(--muted);font-size:13px}
.live{font-size:12px;padding:1px 8px;border-radius:99px;background:var(--okbg);color:var(--ok)}
.live.off{background:var(--badbg);color:var(--bad)}
main{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:14px;padding-bottom:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;min-width:0}
.wide{grid-column:1/-1}
.you{display:flex;flex-wrap:wrap;gap:6px 12px;align-items:center}
.you b{font-weight:600}
.state{margin:0 0 10px;padding:8px 12px;border-radius:8px;font-weight:600}
.state.ok{background:var(--okbg);color:var(--ok)}
.state.warn{background:var(--warnbg);color:var(--warn)}
.state.info{background:var(--bg);color:var(--fg)}
.nowrap{white-space:nowrap}
table.kv th{width:110px;border-bottom:1px solid var(--line);vertical-align:top;padding-top:7px}
table.kv tr:last-child th{border-bottom:0}
dd.bad{color:var(--bad);font-weight:600}
h3 .muted{font-weight:400;font-size:14px}
.tag{font-size:12px;font-weight:600;padding:1px 7px;border-radius:6px;border:1px solid var(--line);color:var(--muted)}
.tag.ok{color:var(--ok);border-color:var(--ok)}
.tag.no{color:var(--bad);border-color:var(--bad)}
.muted{color:var(--muted)}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px;overflow-wrap:anywhere}
table{width:100%;border-collapse:collapse;font-size:14px}
th{text-align:left;font-weight:600;color:var(--muted);font-size:12px;padding:4px 8px 4px 0;border-bottom:1px solid var(--line)}
td{padding:6px 8px 6px 0;border-bottom:1px solid var(--line);vertical-align:top}
tr:last-child td{border-bottom:0}
.why{color:var(--muted);font-size:13px}
.svc+.svc{margin-top:16px}
.graph{width:100%;height:90px;display:block;color:var(--accent)}
.graph .bar{fill:currentColor}
.graph .base{stroke:var(--line)}
.axis{display:flex;justify-content:space-between;color:var(--muted);font-size:12px}
dl{display:grid;grid-template-columns:1fr auto;gap:2px 12px;margin:10px 0 0;font-size:14px}
dt{color:var(--muted)}dd{margin:0;text-align:right;font-variant-numeric:tabular-nums}
ol{list-style:none;margin:0;padding:0;font-size:14px}
ol li{display:grid;grid-template-columns:76px 1fr;gap:8px;padding:5px 0;border-bottom:1px solid var(--line)}
ol li:last-child{border-bottom:0}
.k{font-size:12px;font-weight:600;text-transform:uppercase;letter-spacing:.04em}
.k.attach{color:var(--ok)}.k.detach,.k.fallback{color:var(--warn)}.k.refused{color:var(--bad)}.k.reload{color:var(--accent)}
footer{color:var(--muted);font-size:13px;padding-bottom:24px}
a{color:var(--accent)}
@media (max-width:720px){
main{grid-template-columns:minmax(0,1fr)}
header,main,footer{padding:0 10px}
header{padding-top:12px}
table,tbody,tr,td{display:block;width:100%}
thead{display:none}
tr{padding:6px 0;border-bottom:1px solid var(--line)}
tr:last-child{border-bottom:0}
td{border:0;padding:1px 0;display:grid;grid-template-columns:88px minmax(0,1fr);gap:8px}
td::before{content:attr(data-label);color:var(--muted);font-size:12px;padding-top:2px}
table.kv th{display:none}
.nowrap{white-space:normal}
}
"#;

/// The live update: fetch the page again every second (while it is
/// visible), swap in its `<main>`, and say when the gateway stops answering.
const JS: &str = r#"
(function () {
  var live = document.getElementById("live");
  var busy = false;
  function say(ok) {
    live.textContent = ok ? "live" : "no answer (gateway gone, or signed out)";
    live.className = ok ? "live" : "live off";
  }
  function tick() {
    if (busy || document.hidden) return;
    busy = true;
    fetch(location.pathname, { cache: "no-store", credentials: "same-origin", redirect: "error", headers: { Accept: "text/html" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
      .then(function (text) {
        var page = new DOMParser().parseFromString(text, "text/html");
        var fresh = page.getElementById("status"), main = document.getElementById("status");
        if (fresh && main) main.replaceWith(document.adoptNode(fresh));
        var up = page.getElementById("up");
        if (up) document.getElementById("up").textContent = up.textContent;
        say(true);
      })
      .catch(function () { say(false); })
      .then(function () { busy = false; });
  }
  say(true);
  setInterval(tick, 1000);
})();
"#;

fn sha256_source(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest.as_ref()))
}

/// The page's Content-Security-Policy: nothing but its own inline style and
/// script (by hash), fetches to its own origin, no frames, no forms elsewhere.
pub fn csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'none'; style-src {}; script-src {}; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            sha256_source(CSS),
            sha256_source(JS)
        )
    })
}

/// Escapes text for HTML content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// "42 s ago", "3 min ago", "2 h ago", "5 d ago".
pub fn ago(now: u64, then: u64) -> String {
    let d = now.saturating_sub(then);
    match d {
        0..=1 => "just now".to_owned(),
        2..=119 => format!("{d} s ago"),
        120..=7199 => format!("{} min ago", d / 60),
        7200..=172_799 => format!("{} h ago", d / 3600),
        _ => format!("{} d ago", d / 86_400),
    }
}

/// "3 h 12 min", "45 s".
pub fn span(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        7200..=172_799 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        172_800..=2_591_999 => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

/// "1.2 MiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// A UTC date, `2026-12-07`.
fn date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn graph(out: &mut String, doc: &StatusDoc) {
    let bars = &doc.rate.buckets;
    let peak = bars.iter().flatten().copied().max().unwrap_or(0);
    let total: u64 = bars.iter().flatten().sum();
    let minutes = doc.rate.bucket_seconds * bars.len() as u64 / 60;
    let (w, h) = (600.0_f64, 80.0_f64);
    let step = w / bars.len().max(1) as f64;
    let _ = write!(
        out,
        r#"<svg class="graph" viewBox="0 0 600 82" preserveAspectRatio="none" role="img" aria-label="requests per {} s over the last {minutes} minutes; peak {peak}">"#,
        doc.rate.bucket_seconds
    );
    for (i, bar) in bars.iter().enumerate() {
        let Some(n) = *bar else { continue };
        if n == 0 || peak == 0 {
            continue;
        }
        let bh = (n as f64 / peak as f64 * h).max(1.5);
        let _ = write!(
            out,
            r#"<rect class="bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" rx="1.5"><title>{n}</title></rect>"#,
            i as f64 * step + 1.0,
            h - bh,
            step - 2.0,
        );
    }
    let _ = write!(out, r#"<line class="base" x1="0" y1="80.5" x2="600" y2="80.5"/></svg>"#);
    let per_s = total as f64 / (minutes.max(1) * 60) as f64;
    let _ = write!(
        out,
        r#"<div class="axis"><span>{minutes} min ago</span><span>peak {peak} per {} s · avg {per_s:.2}/s</span><span>now</span></div>"#,
        doc.rate.bucket_seconds
    );
}

/// One table cell: its label (shown beside the value on a phone, where rows
/// become blocks) and its content, already escaped.
fn cell(label: &str, class: &str, content: &str) -> String {
    format!(r#"<td data-label="{label}" class="{class}"><div>{content}</div></td>"#)
}

fn event_line(out: &mut String, now: u64, e: &BoardEvent) {
    let kind = match e.kind {
        EventKind::Attach => "attach",
        EventKind::Detach => "detach",
        EventKind::Fallback => "fallback",
        EventKind::Reload => "reload",
        EventKind::Refused => "refused",
    };
    let times = if e.count > 1 { format!(" <b>×{}</b>", e.count) } else { String::new() };
    let when = if e.last != e.at { format!("{} (last {})", ago(now, e.at), ago(now, e.last)) } else { ago(now, e.at) };
    let _ = write!(
        out,
        r#"<li><span class="k {kind}">{kind}</span><span>{}{times} <span class="muted">· {}</span></span></li>"#,
        esc(&e.text),
        esc(&when)
    );
}

fn peer_row(out: &mut String, now: u64, p: &PeerDoc) {
    let name = match &p.name {
        Some(n) => format!("<b>{}</b>", esc(n)),
        None => format!(r#"<span class="mono">{}…</span>"#, esc(&p.short_key)),
    };
    let allowed =
        if p.allowed { r#"<span class="tag ok">allowed</span>"# } else { r#"<span class="tag">needs sign-in</span>"# };
    let handshake = p.last_handshake.map_or_else(|| "never".to_owned(), |t| ago(now, t));
    let ips = if p.allowed_ips.is_empty() { "no allowed-ips".to_owned() } else { p.allowed_ips.join(", ") };
    // A named peer shows its key below; an unnamed one is known by it already.
    let key = if p.name.is_some() { format!("{}… · ", esc(&p.short_key)) } else { String::new() };
    let who = format!(r#"{name}<div class="why mono" title="{}">{key}{}</div>"#, esc(&p.key), esc(&ips));
    let traffic = format!("↓ {} · ↑ {}", esc(&bytes(p.rx_bytes)), esc(&bytes(p.tx_bytes)));
    let _ = write!(
        out,
        "<tr>{}{}{}{}{}</tr>",
        cell("Peer", "", &who),
        cell("Access", "", allowed),
        cell("Handshake", "nowrap", &esc(&handshake)),
        cell("Bytes", "nowrap", &traffic),
        cell("Endpoint", "mono", &esc(p.endpoint.as_deref().unwrap_or("—"))),
    );
}

fn tailnet_row(out: &mut String, now: u64, c: &TailnetCaller) {
    let login = c.login.as_deref().unwrap_or("—");
    let mut why = c.node.clone().unwrap_or_default();
    if !c.tags.is_empty() {
        if !why.is_empty() {
            why.push_str(" · ");
        }
        why.push_str(&c.tags.join(", "));
    }
    let who = format!(r#"<b>{}</b><div class="why mono">{}</div>"#, esc(login), esc(&why));
    let access =
        if c.allowed { r#"<span class="tag ok">allowed</span>"# } else { r#"<span class="tag">needs sign-in</span>"# };
    let _ = write!(
        out,
        "<tr>{}{}{}{}{}</tr>",
        cell("Login", "", &who),
        cell("Access", "", access),
        cell("Last seen", "nowrap", &esc(&ago(now, c.last_seen))),
        cell("Requests", "", &c.requests.to_string()),
        cell("Address", "mono", &esc(c.address.as_deref().unwrap_or("—"))),
    );
}

/// The `<main>` of the page (what the live update swaps).
pub fn main(doc: &StatusDoc) -> String {
    let now = doc.now;
    let mut o = String::with_capacity(16 * 1024);
    o.push_str(r#"<main id="status">"#);

    // You are.
    let who = doc.you.identity.as_ref().map(|id| {
        let mut bits = vec![format!("{} on {}", id.mesh, id.interface)];
        if let Some(k) = &id.key {
            bits.push(format!("key {}…", k.chars().take(8).collect::<String>()));
        }
        if let Some(n) = &id.node {
            bits.push(format!("node {n}"));
        }
        if !id.tags.is_empty() {
            bits.push(id.tags.join(", "));
        }
        bits.join(" · ")
    });
    let _ = write!(
        o,
        r#"<section class="card wide you" id="you"><h2>You are</h2><b>{}</b>{}{}</section>"#,
        esc(&doc.you.words),
        who.map(|w| format!(r#"<span class="muted mono">{}</span>"#, esc(&w))).unwrap_or_default(),
        doc.you
            .address
            .as_ref()
            .map(|a| format!(r#"<span class="muted">from <span class="mono">{}</span></span>"#, esc(a)))
            .unwrap_or_default(),
    );

    // Services and listeners.
    let _ = write!(
        o,
        r#"<section class="card wide" id="services"><h2>Services</h2><p class="state {}" id="state">{}</p>"#,
        if doc.fallback || doc.services.iter().all(|s| s.listeners.is_empty()) {
            "warn"
        } else if doc.loopback_only {
            "info"
        } else {
            "ok"
        },
        esc(&doc.state)
    );
    for s in &doc.services {
        let target = match &s.info.upstream {
            Some(u) => format!(r#"→ <span class="mono">{}</span>"#, esc(u)),
            None => r#"<span class="muted">meshgate's own routes</span>"#.to_owned(),
        };
        let unit = match (s.info.protocol.as_str(), s.requests) {
            ("http", 1) => "request",
            ("http", _) => "requests",
            (_, 1) => "connection",
            _ => "connections",
        };
        let _ = write!(
            o,
            r#"<div class="svc"><h3>{} <span class="tag">{}</span> {target} <span class="muted count">{} {unit}</span></h3><table><thead><tr><th>Listener</th><th>Provider</th><th>Why</th><th>Since</th><th>TLS</th></tr></thead><tbody>"#,
            esc(&s.info.name),
            esc(&s.info.protocol),
            s.requests,
        );
        if s.listeners.is_empty() {
            o.push_str(r#"<tr><td colspan="5" class="muted">no listener</td></tr>"#);
        }
        // The mesh first, then the loopback door.
        let mut listeners: Vec<_> = s.listeners.iter().collect();
        listeners.sort_by_key(|l| (l.listener.is_loopback(), l.listener.address.addr.is_ipv6(), l.url.clone()));
        for l in listeners {
            let iface = l.listener.interface.as_deref().map(|i| format!(r#"<div class="why">on {}</div>"#, esc(i)));
            let tls = if l.tls { r#"<span class="tag ok">TLS</span>"# } else { r#"<span class="tag">plain</span>"# };
            let _ = write!(
                o,
                "<tr>{}{}{}{}{}</tr>",
                cell(
                    "Listener",
                    "",
                    &format!(r#"<span class="mono nowrap">{}</span>{}"#, esc(&l.url), iface.unwrap_or_default())
                ),
                cell("Provider", "", &format!("<b>{}</b>", esc(&l.listener.provider))),
                cell("Why", "why", &esc(&l.listener.reason)),
                cell("Since", "nowrap", &esc(&ago(now, l.since))),
                cell("TLS", "", tls),
            );
        }
        o.push_str("</tbody></table></div>");
    }
    o.push_str("</section>");

    // Peers.
    o.push_str(r#"<section class="card wide" id="peers"><h2>Peers</h2>"#);
    if doc.interfaces.is_empty() && doc.login_meshes.is_empty() {
        o.push_str(r#"<p class="muted">No WireGuard interface is served now, so there are no peers to show.</p>"#);
    }
    for i in &doc.interfaces {
        let _ = write!(
            o,
            r#"<h3><span class="mono">{}</span> <span class="tag">WireGuard, {}</span> <span class="muted">{} peer{}</span></h3>"#,
            esc(&i.interface),
            i.wireguard,
            i.peers.len(),
            if i.peers.len() == 1 { "" } else { "s" }
        );
        if let Some(e) = &i.error {
            let _ = write!(o, r#"<p class="muted">its peers could not be read: {}</p>"#, esc(e));
            continue;
        }
        o.push_str(r#"<table><thead><tr><th>Peer</th><th>Access</th><th>Last handshake</th><th>Bytes</th><th>Endpoint</th></tr></thead><tbody>"#);
        for p in &i.peers {
            peer_row(&mut o, now, p);
        }
        o.push_str("</tbody></table>");
    }
    for m in &doc.login_meshes {
        let allowed = if doc.allowed_logins.is_empty() {
            "no login or tag is let in without signing in".to_owned()
        } else {
            format!("let in by login or tag: {}", doc.allowed_logins.join(", "))
        };
        let _ = write!(
            o,
            r#"<h3><span class="mono">{}</span> <span class="tag">tailnet</span></h3><p class="muted">Callers are named by their login (tailscaled's whois; see “You are” for yours); {}.</p>"#,
            esc(m),
            esc(&allowed)
        );
    }
    if !doc.tailnet_callers.is_empty() {
        let _ = write!(o, r#"<h3>Tailnet callers <span class="muted">{}</span></h3>"#, doc.tailnet_callers.len());
        o.push_str(r#"<table><thead><tr><th>Login</th><th>Access</th><th>Last seen</th><th>Requests</th><th>Address</th></tr></thead><tbody>"#);
        for c in &doc.tailnet_callers {
            tailnet_row(&mut o, now, c);
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>");

    // Traffic.
    o.push_str(r#"<section class="card" id="traffic"><h2>Requests</h2>"#);
    graph(&mut o, doc);
    let c = &doc.counters;
    let _ = write!(
        o,
        "<dl><dt>responses</dt><dd>{}</dd><dt>open connections</dt><dd>{}</dd><dt>listeners opened / closed</dt><dd>{} / {}</dd>",
        c.responses, c.open_connections, c.listener_attaches, c.listener_detaches
    );
    // Only the reasons that refused something; all of them are in /metrics and /status.
    let refused: Vec<_> = c.refusals.iter().filter(|r| r.count > 0).collect();
    if refused.is_empty() {
        o.push_str("<dt>refused</dt><dd>none</dd>");
    }
    for r in refused {
        let _ = write!(o, r#"<dt>refused: {}</dt><dd class="bad">{}</dd>"#, esc(&r.reason), r.count);
    }
    o.push_str("</dl></section>");

    // Recent events.
    o.push_str(r#"<section class="card" id="events"><h2>Recent events</h2>"#);
    if doc.events.is_empty() {
        o.push_str(r#"<p class="muted">nothing yet</p>"#);
    } else {
        o.push_str("<ol>");
        for e in doc.events.iter().take(30) {
            event_line(&mut o, now, e);
        }
        o.push_str("</ol>");
    }
    o.push_str("</section>");

    // TLS.
    o.push_str(r#"<section class="card wide" id="tls"><h2>TLS</h2>"#);
    match &doc.certificate {
        None => {
            o.push_str(r#"<p class="muted">Plain HTTP: no listener speaks TLS (see <code>--tls</code>).</p>"#);
        }
        Some(cert) => {
            let expiry = cert.info.not_after.map_or_else(
                || "unknown".to_owned(),
                |t| {
                    let left = t - now as i64;
                    if left < 0 {
                        format!("{} (expired)", date(t))
                    } else {
                        format!("{} (in {})", date(t), span(left as u64))
                    }
                },
            );
            let names = if cert.info.names.is_empty() { "—".to_owned() } else { cert.info.names.join(", ") };
            let _ = write!(
                o,
                r#"<table class="kv"><tbody><tr><th>Certificate</th>{}</tr><tr><th>Names</th>{}</tr><tr><th>Expires</th>{}</tr>"#,
                cell("Certificate", "", &esc(&cert.mode)),
                cell("Names", "mono", &esc(&names)),
                cell("Expires", "", &esc(&expiry))
            );
            if let Some(pin) = &cert.info.pin {
                let _ = write!(o, r#"<tr><th>Pin</th>{}</tr>"#, cell("Pin", "mono", &format!("sha256//{}", esc(pin))));
            }
            if let Some(url) = &cert.ca_url {
                let _ = write!(
                    o,
                    r#"<tr><th>CA</th>{}</tr>"#,
                    cell(
                        "CA",
                        "",
                        &format!(
                            r#"<a href="{}" download>download the CA certificate</a> <span class="muted">and trust it once on each device</span>"#,
                            esc(url)
                        )
                    )
                );
            }
            o.push_str("</tbody></table>");
        }
    }
    o.push_str("</section></main>");
    o
}

/// The whole page; `own` is where meshgate's own routes are (`""` or `/_meshgate`).
pub fn page(doc: &StatusDoc, own: &str) -> String {
    let mut o = String::with_capacity(24 * 1024);
    let _ = write!(
        o,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta name="color-scheme" content="light dark"><meta name="referrer" content="no-referrer"><title>meshgate status</title><noscript><meta http-equiv="refresh" content="5"></noscript><style>{CSS}</style></head><body><header><h1>mesh<span>gate</span></h1><span class="sub" id="up">v{} · up {}</span><span id="live" class="live">updated</span></header>"#,
        esc(doc.version),
        esc(&span(doc.uptime_seconds))
    );
    o.push_str(&main(doc));
    let own = esc(own);
    let _ = write!(
        o,
        r#"<footer>The same as JSON: <a href="{own}/status">status</a> · <a href="{own}/metrics">metrics</a> · <a href="{own}/whoami">whoami</a></footer><script>{JS}</script></body></html>"#
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc(r#"<script>"a'&"#), "&lt;script&gt;&quot;a&#39;&amp;");
    }

    #[test]
    fn names_from_configs_and_the_os_cannot_inject_markup() {
        use super::super::doc::{CountersDoc, InterfaceDoc, RateDoc, You};
        let evil = r#"<img src=x onerror=alert(1)>"#;
        let doc = StatusDoc {
            version: "0",
            uptime_seconds: 1,
            now: 100,
            you: You { door: "peer", words: evil.into(), identity: None, allowed: true, address: None },
            services: Vec::new(),
            fallback: true,
            fallback_reason: Some(evil.into()),
            state: evil.into(),
            loopback_only: true,
            interfaces: vec![InterfaceDoc {
                interface: evil.into(),
                wireguard: "kernel",
                error: None,
                peers: vec![PeerDoc {
                    name: Some(evil.into()),
                    key: evil.into(),
                    short_key: evil.into(),
                    allowed: false,
                    allowed_ips: vec![evil.into()],
                    endpoint: Some(evil.into()),
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                }],
            }],
            login_meshes: vec![evil.into()],
            allowed_logins: vec![evil.into()],
            tailnet_callers: vec![crate::gateway::status_page::board::TailnetCaller {
                login: Some(evil.into()),
                node: Some(evil.into()),
                tags: vec![evil.into()],
                address: Some(evil.into()),
                allowed: false,
                last_seen: 1,
                requests: 1,
            }],
            certificate: None,
            events: vec![BoardEvent { at: 1, last: 1, kind: EventKind::Attach, text: evil.into(), count: 1 }],
            counters: CountersDoc {
                responses: 0,
                open_connections: 0,
                listener_attaches: 0,
                listener_detaches: 0,
                refusals: Vec::new(),
            },
            rate: RateDoc { bucket_seconds: 10, buckets: vec![None; 60] },
        };
        let html = page(&doc, "/_meshgate\"><script>");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("\"><script>"), "{html}");
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        // The one script is the page's own.
        assert_eq!(html.matches("<script>").count(), 1);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(ago(100, 58), "42 s ago");
        assert_eq!(ago(10_000, 10_000 - 300), "5 min ago");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(date(1_925_078_400), "2031-01-02");
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(span(3 * 3600 + 12 * 60), "3 h 12 min");
        assert_eq!(span(396 * 86_400 + 5), "396 days");
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_style_and_script() {
        let csp = csp();
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert!(csp.contains(&sha256_source(CSS)) && csp.contains(&sha256_source(JS)), "{csp}");
        assert!(csp.starts_with("default-src 'none'"));
    }
}
