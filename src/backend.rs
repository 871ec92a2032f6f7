//! Where commands run: the seam between the request path and the data.
//!
//! The request path (authentication, metering, namespacing) builds each command as a
//! [`redis::Cmd`] with its keys already in the account's namespace, and hands batches of
//! them to a [`Backend`]. There are two: the upstream Redis ([`crate::upstream`]) and the
//! embedded in-process store ([`crate::embedded`]). Both answer with [`redis::Value`]s, so
//! everything above this seam is the same code for both.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use redis::{Pipeline, Value};
use tokio::sync::mpsc;

use crate::protocol::Proto;

/// A boxed future, so that backends can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Failures that are not Redis error replies: the backend could not answer at all. The
/// client sees the same error either way; what differs is the bill (SPEC 7).
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// Nothing was sent (no connection): the commands certainly did not run.
    #[error("ERR upstream unavailable: {0}")]
    Unavailable(String),
    /// The commands were handed to a connection and their replies never came (timed out,
    /// connection lost): they may have run, and are paid for what they are known to cost.
    #[error("ERR upstream unavailable: {0}")]
    Lost(String),
}

impl BackendError {
    /// True when the commands may have run upstream although no reply came.
    pub fn may_have_run(&self) -> bool {
        matches!(self, BackendError::Lost(_))
    }
}

/// Runs commands.
pub trait Backend: Send + Sync {
    /// Runs a batch of commands, in order, on a shared connection; one reply per command.
    /// Redis error replies are [`Value::ServerError`]s, not `Err`.
    fn pipeline<'a>(
        &'a self,
        proto: Proto,
        pipe: &'a Pipeline,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<Value>, BackendError>>;

    /// A connection for one client alone: it keeps MULTI/WATCH state, and blocking
    /// commands wait on it. Dropping it ends any wait still in progress.
    fn dedicated(&self, proto: Proto) -> BoxFuture<'_, Result<Box<dyn Dedicated>, BackendError>>;

    /// A Pub/Sub subscription with no channels yet.
    fn subscription(&self) -> BoxFuture<'_, Result<Subscription, BackendError>>;

    /// Work the backend does in the background while pkv serves (expiry, snapshots).
    /// pkv runs it as a task from start-up and stops it at shutdown.
    fn housekeeping(self: std::sync::Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }

    /// Called once at shutdown, after the last client is gone and the ledger is settled.
    fn shutdown(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// A connection owned by one client.
pub trait Dedicated: Send {
    /// Like [`Backend::pipeline`], on this connection.
    fn pipeline<'a>(
        &'a mut self,
        pipe: &'a Pipeline,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<Value>, BackendError>>;
}

/// A Pub/Sub message as it was published: channel names as the backend knows them (inside
/// the namespace), and the pattern that matched, if any.
#[derive(Debug, Clone)]
pub struct Message {
    pub channel: Bytes,
    pub pattern: Option<Bytes>,
    pub payload: Bytes,
}

/// Subscribes and unsubscribes.
pub trait SubscriptionSink: Send {
    fn subscribe<'a>(
        &'a mut self,
        name: &'a [u8],
        pattern: bool,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    fn unsubscribe<'a>(
        &'a mut self,
        name: &'a [u8],
        pattern: bool,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
}

/// One subscriber's end: where it subscribes, and the messages it receives. The receiver
/// ends when the backend drops the subscription (the upstream connection is lost).
pub struct Subscription {
    pub sink: Box<dyn SubscriptionSink>,
    pub messages: mpsc::Receiver<Message>,
}

/// A Redis error reply (`-CODE details`) as a value, as a backend returns it.
pub fn error_value(message: &str) -> Value {
    let line: String = message
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    let mut raw = Vec::with_capacity(line.len() + 3);
    raw.push(b'-');
    raw.extend_from_slice(line.as_bytes());
    raw.extend_from_slice(b"\r\n");
    match redis::parse_redis_value(&raw) {
        Ok(value) => value,
        // An error line always parses; keep a visible error if that ever changes.
        Err(_) => Value::SimpleString(format!("ERR {line}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_values_keep_code_and_text() {
        let Value::ServerError(err) = error_value("WRONGTYPE Operation against a key") else {
            panic!("not an error value");
        };
        assert_eq!(err.code(), "WRONGTYPE");
        assert_eq!(err.details(), Some("Operation against a key"));
        let Value::ServerError(err) = error_value("ERR two\r\nlines") else {
            panic!("not an error value");
        };
        assert_eq!(err.details(), Some("two  lines"));
    }
}
