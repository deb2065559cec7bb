//! The gateway: the auth matrix without sockets, follow with a mocked watcher,
//! the real process (exit codes, all-or-nothing binding, /ws), the upstream
//! proxy and the library API.

mod auth_matrix;
mod embed;
mod follow_mock;
mod limits;
mod process;
mod upstream;
