//! The decisions of the outbound (and inbound) policy stack, as pure,
//! table-tested building blocks; the stacks that apply them to requests
//! (`crate::outbound`, `crate::inbound`) stay thin.
//!
//! ```text
//!   request ─► route::RouteTable::find ─► split::Split::pick ─► fault::FaultPolicy::decide
//!           ─► retry::RetryPolicy (+ budget::RetryBudget) ─► balancer (crate::balance: EWMA,
//!              round robin, least request, consistent hash) filtered by circuit::Circuit ─► endpoint
//!   inbound: rate_limit::RateLimiter / KeyedRateLimiter ─► 429 + Retry-After
//! ```
//!
//! Everything here is compiled once when a policy arrives (regexes,
//! cumulative weights, retry condition sets) and is cheap per request. No
//! function reads a clock or a random source: callers pass `now` and random
//! numbers in, which keeps the decisions deterministic under test.
//! (`tokio::time::Instant::into_std` gives the `std` instant these take,
//! honouring `tokio::time::pause` in tests.)

pub mod authz;
pub mod budget;
pub mod circuit;
pub mod compiled;
pub mod fault;
pub mod filters;
pub mod rate_limit;
pub mod retry;
pub mod reused;
pub mod route;
pub mod split;
mod window;
