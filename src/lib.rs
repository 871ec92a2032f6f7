//! # pkv: a paid Redis-protocol proxy
//!
//! Clients speak Redis to pkv, authenticate with a prepaid quota token, and use Redis inside
//! a private key namespace; pkv forwards their commands to an upstream Redis.
//!
//! # Layout
//!
//! - [`cli`]: the `pkv` command line (`serve`, `token mint|inspect`, `keygen`,
//!   `accounts top`); [`accounts`] finds the biggest spenders in the ledger.
//! - [`config`]: settings, loaded in layers and validated at start-up.
//! - [`server`]: the listener, graceful shutdown, settings reloaded on SIGHUP
//!   (`server/reload.rs`), each connection, and the session that
//!   runs the request path (read → authenticate → look up → rewrite keys → reserve the
//!   cost → forward → rewrite reply → write → pay).
//! - [`protocol`]: parsing client requests, pkv's own RESP value ([`protocol::frame::Frame`])
//!   and the decoder of upstream replies, and writing RESP2/RESP3 replies.
//! - [`commands`]: the command table (every served command's facts, stated once), the key
//!   locator derived from it, and [`commands::Call`], a command with its row resolved once,
//!   as the request path hands it to a backend.
//! - [`redis_num`]: Redis's numbers (integers, doubles, long doubles, blocking timeouts) and
//!   the text of a double in a reply, shared by the request path and the embedded store.
//! - [`namespace`]: each account's key prefix, applied to requests and removed from replies.
//! - [`notify`]: keyspace notifications (`PKV_KEYSPACE_EVENTS`), each tenant's own.
//! - [`scripting`]: Lua scripts (`EVAL`, `EVALSHA`, `SCRIPT`): their arguments, each
//!   account's registry, and pkv's own Lua 5.1 sandbox (with its pattern matcher, under
//!   the script's time limit) whose `redis.call` takes a client command's path; they run
//!   on the embedded store, and inside Redis on an upstream, wrapped into the caller's
//!   namespace and run as the account's own ACL user (`scripting::upstream`).
//! - [`error`]: every error line a client can see, written once: each concern (the embedded
//!   store's commands too, [`embedded::error::StoreError`]) has its own error type.
//! - [`auth`]: quota tokens (Prex, EdDSA), session tokens (HS256), did:key, key derivation.
//! - [`meter`]: prices, the cost of each command, prepaid storage, and leases from the
//!   ledger so that metering needs no round trip per command; [`meter::ledger`] keeps
//!   redeemed token ids, account credit, spending and usage in the backend (its Redis side
//!   is [`upstream::book`], the embedded store's is [`embedded`]'s own).
//! - [`backend`]: the seam where commands run: calls in, frames out, no type of the `redis`
//!   crate above it. Two implementations:
//!   - [`upstream`]: pkv's own pooled and dedicated connections to an upstream Redis (the
//!     `redis` crate parses URLs, and still carries Pub/Sub and the start-up checks), and
//!     the ledger's Lua scripts; [`upstream::cluster`] routes them by hash slot to the
//!     masters of a Redis Cluster;
//!   - [`embedded`]: the in-process store pkv serves from when no upstream is set; each
//!     command's handler is found from its table row.
//! - [`metrics`]: the Prometheus metrics (prometheus-client) and the HTTP endpoint (hyper)
//!   serving `/metrics`, `/healthz`, `/readyz` and `/accounts/top`.
//! - [`tls`]: rustls settings: the TLS listener's certificate (reloaded when it changes)
//!   and the roots a `rediss://` upstream is verified against.

pub mod accounts;
pub mod auth;
pub mod backend;
pub mod cli;
pub mod commands;
pub mod config;
pub mod embedded;
pub mod error;
pub mod meter;
pub mod metrics;
pub mod namespace;
pub mod notify;
pub mod protocol;
pub mod redis_num;
pub mod scripting;
pub mod server;
pub mod tls;
pub mod upstream;
