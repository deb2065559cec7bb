//! The gateway: the auth matrix without sockets, follow with a mocked watcher,
//! and the real process (exit codes, all-or-nothing binding, /ws).

mod auth_matrix;
mod follow_mock;
mod process;
