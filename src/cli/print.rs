//! What `serve` prints on stdout as the gateway reports [`Event`]s: one line
//! per listener opened or closed. These lines are a contract (scripts and
//! tests read them); everything else goes to the log on stderr.

use std::io::Write as _;

use meshgate_core::{Listener, ListenerRole};

use crate::gateway::{display_addr, Event};

/// The line printed as a listener opens.
pub fn listening_line(l: &Listener, tls: bool) -> String {
    let via = l.interface.as_deref().filter(|_| l.role != ListenerRole::Companion).map(|i| format!(" via {i}"));
    let what = match l.role {
        ListenerRole::Selected => format!("{}{}", l.provider, via.unwrap_or_default()),
        ListenerRole::Fallback => format!("loopback fallback{}", via.unwrap_or_default()),
        ListenerRole::Companion => "loopback companion".to_owned(),
    };
    format!("listening on {}://{} ({what})", if tls { "https" } else { "http" }, display_addr(l))
}

/// Prints one line to stdout at once (the listening lines are a contract).
pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The line printed as a listener closes.
pub fn stopped_line(l: &Listener, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("stopped listening on {scheme}://{} ({}: no longer matched)", display_addr(l), l.provider)
}

/// The stdout line for an event, if it has one.
pub fn event_line(event: &Event) -> Option<String> {
    match event {
        Event::Listening { listener, tls } => Some(listening_line(listener, *tls)),
        Event::Stopped { listener, tls } => Some(stopped_line(listener, *tls)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use meshgate_core::resolver::ScopedAddr;

    use super::*;

    fn listener(addr: &str, provider: &str, iface: Option<&str>, role: ListenerRole) -> Listener {
        let (ip, scope) = match addr.split_once('%') {
            Some((ip, scope)) => (ip, Some(scope.to_owned())),
            None => (addr, None),
        };
        Listener {
            address: ScopedAddr { addr: ip.parse().unwrap(), scope_id: scope.as_ref().map(|_| 7), scope_name: scope },
            port: 18789,
            provider: provider.into(),
            interface: iface.map(Into::into),
            reason: "r".into(),
            role,
        }
    }

    /// The stdout lines are a contract: these are the bytes `serve` printed
    /// before the library stopped printing.
    #[test]
    fn listener_lines_are_pinned() {
        let wg = listener("10.8.0.1", "wireguard", Some("wg0"), ListenerRole::Selected);
        assert_eq!(listening_line(&wg, false), "listening on http://10.8.0.1:18789 (wireguard via wg0)");
        assert_eq!(
            stopped_line(&wg, false),
            "stopped listening on http://10.8.0.1:18789 (wireguard: no longer matched)"
        );
        let v6 = listener("fe80::1%wg0", "iface", Some("wg0"), ListenerRole::Selected);
        assert_eq!(listening_line(&v6, false), "listening on http://[fe80::1%wg0]:18789 (iface via wg0)");
        let fb = listener("127.0.0.1", "loopback", Some("lo"), ListenerRole::Fallback);
        assert_eq!(listening_line(&fb, false), "listening on http://127.0.0.1:18789 (loopback fallback via lo)");
        let comp = listener("::1", "loopback", Some("lo"), ListenerRole::Companion);
        assert_eq!(listening_line(&comp, false), "listening on http://[::1]:18789 (loopback companion)");
        let bare = listener("10.8.0.1", "ip", None, ListenerRole::Selected);
        assert_eq!(listening_line(&bare, false), "listening on http://10.8.0.1:18789 (ip)");
        assert_eq!(
            event_line(&Event::Listening { listener: wg.clone(), tls: false }),
            Some(listening_line(&wg, false))
        );
        assert_eq!(event_line(&Event::Stopped { listener: wg.clone(), tls: false }), Some(stopped_line(&wg, false)));
        assert_eq!(
            event_line(&Event::Listening { listener: wg.clone(), tls: true }).unwrap(),
            "listening on https://10.8.0.1:18789 (wireguard via wg0)"
        );
        assert_eq!(
            event_line(&Event::Stopped { listener: wg.clone(), tls: true }).unwrap(),
            "stopped listening on https://10.8.0.1:18789 (wireguard: no longer matched)"
        );
        assert_eq!(event_line(&Event::FallbackOver), None);
    }
}
