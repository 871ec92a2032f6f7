//! Keyspace notifications on the upstream: `CONFIG SET notify-keyspace-events` with what
//! pkv needs (see [`crate::notify`]), before pkv subscribes to the upstream's events.
//!
//! pkv sets it only when `PKV_KEYSPACE_EVENTS` is set, and again each time its
//! subscription is made (a restarted Redis has forgotten it). A Redis that refuses
//! `CONFIG SET` (renamed or denied, as managed services do) gets one warning line saying
//! what to set there by hand; pkv subscribes anyway.

use std::time::Duration;

use redis::Value;

use crate::notify::Flags;

/// Sets `notify-keyspace-events` on the Redis at `url` to `flags`.
pub async fn enable(
    url: &str,
    ca: Option<&std::path::Path>,
    flags: Flags,
    timeout: Duration,
) -> Result<(), String> {
    let mut command = redis::cmd("CONFIG");
    command
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(flags.redis_string());
    match super::ask_alone(url, ca, timeout, &command).await? {
        Some(Value::Okay) => Ok(()),
        Some(Value::ServerError(e)) => Err(format!("{} {}", e.code(), e.details().unwrap_or(""))),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

/// [`enable`], saying in one line what is missing when it fails.
pub async fn enable_or_warn(
    url: &str,
    ca: Option<&std::path::Path>,
    flags: Flags,
    timeout: Duration,
) {
    if let Err(e) = enable(url, ca, flags, timeout).await {
        tracing::warn!(
            error = %e,
            "PKV_KEYSPACE_EVENTS: could not CONFIG SET notify-keyspace-events {} on the \
             upstream; set it there, or tenants receive no keyspace notifications",
            flags.redis_string()
        );
    }
}
