//! Below HTTP: where a connection was going, what protocol it speaks, and
//! how upstream connections are opened.

pub mod connect;
pub mod detect;
pub mod orig_dst;
pub mod prefixed;
pub mod splice;
pub mod target;
pub mod tls;
