//! [`Admission`]: what lets a client connection in, shared by every accept
//! loop of a listener set and changeable while they run (a reload): the
//! connection cap of the mesh listeners and the loopback door's own, the
//! callers' shares and the reserve for credentials, and the [`ServerLimits`] each new connection is served
//! with.
//!
//! A cap that shrinks takes effect as connections close: the surplus permits
//! are taken as they come back and forgotten, so no open connection is cut
//! off. (The semaphore is fair: an accept loop that was already waiting for
//! a place when the cap shrank is served first, so each listener may admit
//! one connection past the new cap, once.)

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use super::limits::ServerLimits;
use super::slots::AddressSlots;

/// The caps, shares and limits of one listener set.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: ArcSwap<ServerLimits>,
    /// The cap shared by the non-loopback listeners.
    pub(crate) connections: Arc<Semaphore>,
    /// The loopback door's own cap: no mesh traffic can make it wait.
    pub(crate) loopback_connections: Arc<Semaphore>,
    /// Per-address shares of the mesh listeners.
    pub(crate) slots: Arc<AddressSlots>,
}

impl Admission {
    pub(crate) fn new(limits: ServerLimits) -> Self {
        let cap = limits.max_connections.max(1);
        let slots = AddressSlots::new(limits.max_connections_per_address, limits.max_unauthenticated_per_address);
        slots.set_cap(cap);
        Self {
            connections: Arc::new(Semaphore::new(cap)),
            loopback_connections: Arc::new(Semaphore::new(cap)),
            slots: Arc::new(slots),
            limits: ArcSwap::from_pointee(limits),
        }
    }

    /// The limits a connection accepted now is served with.
    pub(crate) fn limits(&self) -> arc_swap::Guard<Arc<ServerLimits>> {
        self.limits.load()
    }

    /// Ends the caps: waiting for a place fails from now on (the set is shut
    /// down), and a shrink still taking back permits gives up.
    pub(crate) fn close(&self) {
        self.connections.close();
        self.loopback_connections.close();
    }

    /// Puts `new` in force for connections accepted from now on. Must run
    /// inside a tokio runtime when a cap shrinks (the surplus is taken back
    /// by a task as connections close).
    pub(crate) fn set(&self, new: ServerLimits) {
        let old = self.limits.swap(Arc::new(new));
        let (from, to) = (old.max_connections.max(1), new.max_connections.max(1));
        for cap in [&self.connections, &self.loopback_connections] {
            resize(cap, from, to);
        }
        self.slots.set_shares(new.max_connections_per_address, new.max_unauthenticated_per_address);
        self.slots.set_cap(to);
    }
}

/// Moves a semaphore sized `from` to `to` permits.
fn resize(cap: &Arc<Semaphore>, from: usize, to: usize) {
    if to > from {
        cap.add_permits(to - from);
        return;
    }
    let surplus = from - to;
    // What is free now goes now; the rest as connections close.
    let left = surplus - cap.forget_permits(surplus);
    if left == 0 {
        return;
    }
    let Ok(n) = u32::try_from(left) else { return };
    let cap = cap.clone();
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(async move {
                if let Ok(permits) = cap.acquire_many_owned(n).await {
                    permits.forget();
                }
            });
        }
        Err(_) => tracing::warn!("the connection cap shrinks only once a runtime runs; {left} permits kept"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cap(n: usize) -> ServerLimits {
        ServerLimits::default().with_max_connections(n)
    }

    #[tokio::test]
    async fn a_cap_grows_at_once_and_shrinks_as_connections_close() {
        let a = Admission::new(with_cap(4));
        let held: Vec<_> = (0..3).map(|_| a.connections.clone().try_acquire_owned().unwrap()).collect();
        a.set(with_cap(6));
        assert_eq!(a.connections.available_permits(), 3);
        assert_eq!(a.loopback_connections.available_permits(), 6);
        // Down to 2 with 3 held: the free ones go now, nothing is admitted
        // until the held ones are back under the new cap.
        a.set(with_cap(2));
        assert_eq!(a.connections.available_permits(), 0);
        assert_eq!(a.loopback_connections.available_permits(), 2);
        drop(held);
        // The task forgetting the last surplus permit runs once they are back.
        for _ in 0..100 {
            if a.connections.available_permits() == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(a.connections.available_permits(), 2);
        assert_eq!(a.limits().max_connections, 2);
    }
}
