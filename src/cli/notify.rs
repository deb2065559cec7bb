//! Telling systemd how `serve` is doing (`Type=notify`): `READY=1` once the
//! first listeners are bound, `STATUS=` naming them (again on every change),
//! `RELOADING=1` around a SIGHUP, `STOPPING=1` at shutdown. Without
//! `NOTIFY_SOCKET` each call does nothing.

fn send(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "could not notify the service manager");
    }
}

fn status_line(listeners: &[String]) -> String {
    if listeners.is_empty() {
        "no listeners".to_owned()
    } else {
        format!("listening on {}", listeners.join(", "))
    }
}

/// `READY=1` and the listeners.
pub(crate) fn ready(listeners: &[String]) {
    send(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&status_line(listeners))]);
}

/// A new `STATUS=` after a listener opened or closed.
pub(crate) fn status(listeners: &[String]) {
    send(&[sd_notify::NotifyState::Status(&status_line(listeners))]);
}

/// `STATUS=` before the first bind, while `--wait` may hold it back (the
/// unit shows `activating` with this line instead of an empty status).
pub(crate) fn starting(wait: Option<std::time::Duration>) {
    let text = match wait {
        Some(w) => format!("starting: waiting up to {} s for the bind to match", w.as_secs_f64()),
        None => "starting".to_owned(),
    };
    send(&[sd_notify::NotifyState::Status(&text)]);
}

/// `RELOADING=1` as a SIGHUP is handled.
pub(crate) fn reloading() {
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[sd_notify::NotifyState::Reloading, now]),
        Err(_) => send(&[sd_notify::NotifyState::Reloading]),
    }
}

/// `READY=1` after a reload.
pub(crate) fn ready_again() {
    send(&[sd_notify::NotifyState::Ready]);
}

/// `STOPPING=1` as the listeners close.
pub(crate) fn stopping() {
    send(&[sd_notify::NotifyState::Stopping]);
}
