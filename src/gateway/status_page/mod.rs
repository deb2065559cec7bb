//! The status page (`/` with meshgate's own routes, `/_meshgate/` in front of
//! an upstream): where meshgate listens and why, each service, the WireGuard
//! peers served, the certificate, recent events and the request rate, and who
//! the caller is, for a person in a browser. `/status` carries the same
//! document as JSON, which `meshgate status` prints.
//!
//! - [`board`]: the memory the request context holds (the program's own
//!   description, recent events, the rate history); below the context;
//! - [`certinfo`]: names, expiry and pin of the certificate served;
//! - [`doc`]: [`StatusDoc`], gathered per read from the state, the request and the OS;
//! - [`html`]: the page, escaped, with its CSP;
//! - [`page`]: the handlers.

pub mod board;
pub mod certinfo;
pub mod doc;
pub mod html;
pub mod page;

pub use board::{EventKind, PageInfo, ServiceInfo, StatusBoard, TlsSource};
pub use doc::StatusDoc;
