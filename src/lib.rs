//! # pkv: a paid Redis-protocol proxy
//!
//! Clients speak Redis to pkv, authenticate with a prepaid quota token, and use Redis inside
//! a private key namespace; pkv forwards their commands to an upstream Redis.
//!
//! # Layout
//!
//! - [`cli`]: the `pkv` command line (`serve`, `token mint|inspect`, `keygen`).
//! - [`config`]: settings, loaded in layers and validated at start-up.
//! - [`server`]: the listener, graceful shutdown, each connection, and the session that
//!   runs the request path (read → authenticate → look up → rewrite keys → reserve the
//!   cost → forward → rewrite reply → write → pay).
//! - [`protocol`]: parsing client requests and writing RESP2/RESP3 replies.
//! - [`commands`]: the command table (every served command's facts, stated once) and the
//!   key locator derived from it.
//! - [`namespace`]: each account's key prefix, applied to requests and removed from replies.
//! - [`auth`]: quota tokens (Prex, EdDSA), session tokens (HS256), did:key, key derivation.
//! - [`meter`]: prices, the cost of each command, prepaid storage, and leases from the
//!   ledger so that metering needs no round trip per command.
//! - [`ledger`]: redeemed token ids, account credit, spending and usage, kept in the
//!   backend.
//! - [`backend`]: the seam where commands run, with two implementations:
//!   - [`upstream`]: pooled and dedicated connections to an upstream Redis;
//!   - [`embedded`]: the in-process store pkv serves from when no upstream is set.
//! - [`metrics`]: counters and the `/metrics`, `/healthz` endpoint.

pub mod auth;
pub mod backend;
pub mod cli;
pub mod commands;
pub mod config;
pub mod embedded;
pub mod ledger;
pub mod meter;
pub mod metrics;
pub mod namespace;
pub mod protocol;
pub mod server;
pub mod upstream;
