//! Below HTTP: where a connection was going, what protocol it speaks, and
//! how upstream connections are opened.

pub mod connect;
pub mod detect;
pub mod orig_dst;
pub mod prefixed;
pub mod splice;
pub mod target;
pub mod tls;

/// What serves a connection once it is set up (detected, its handshake
/// done, its policy known): the accept loop runs it in a task of its own,
/// whose size is this stage's alone, for as long as the connection lives
/// (issue #14: memory per idle connection). The set-up's futures are freed
/// with the task that ran them.
pub type Serving = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
