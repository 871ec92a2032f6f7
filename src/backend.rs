//! Where commands run: the seam between the request path and the data.
//!
//! The request path (authentication, metering, namespacing) builds each command as a
//! [`Call`] (its table row and its arguments, keys already in the account's namespace), and
//! hands batches of them to a [`Backend`]. There are two: the upstream Redis
//! ([`crate::upstream`]) and the embedded in-process store ([`crate::embedded`]). Both answer
//! with [`Frame`]s, pkv's own RESP values, so everything above this seam is the same code for
//! both, and no type of the `redis` crate appears above it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use crate::commands::Call;
use crate::protocol::frame::Frame;
use crate::protocol::Proto;

/// A boxed future, so that backends can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Failures that are not Redis error replies: the backend could not answer at all. The
/// client sees the same error either way; what differs is the bill (SPEC 7).
#[derive(Debug, Clone)]
pub enum BackendError {
    /// Nothing was sent (no connection): the commands certainly did not run.
    Unavailable(String),
    /// The account holds as many connections of this kind as it may.
    Limit(crate::server::LimitError),
    /// The commands were handed to a connection and their replies never came (timed out,
    /// connection lost): they may have run, and are paid for what they are known to cost.
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
    /// Redis error replies are [`Frame::Error`]s, not `Err`.
    fn pipeline<'a>(
        &'a self,
        proto: Proto,
        calls: &'a [Call],
    ) -> BoxFuture<'a, Result<Vec<Frame>, BackendError>>;

    /// A connection for one client alone: it keeps MULTI/WATCH state, and blocking
    /// commands wait on it. Dropping it ends any wait still in progress.
    fn dedicated(&self, proto: Proto) -> BoxFuture<'_, Result<Box<dyn Dedicated>, BackendError>>;

    /// A Pub/Sub subscription with no channels yet, whose subscriber is cut off once the
    /// messages waiting for it pass `max_queued` bytes (see [`message_queue`]).
    fn subscription(&self, max_queued: usize) -> BoxFuture<'_, Result<Subscription, BackendError>>;

    /// Work the backend does in the background while pkv serves (expiry, snapshots).
    /// pkv runs it as a task from start-up and stops it at shutdown.
    fn housekeeping(self: std::sync::Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }

    /// Called once at shutdown, after the last client is gone and the ledger is settled.
    fn shutdown(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    /// Whether commands can run now (`/readyz`); `Err` says why not.
    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    /// Takes up reloaded settings that concern the backend (the embedded store's
    /// `PKV_MAXMEMORY`).
    fn reconfigure(&self, _settings: &crate::config::Settings) {}

    /// The embedded store, when this backend is it: scripts run there in-process.
    fn embedded(&self) -> Option<&crate::embedded::Store> {
        None
    }

    /// The backend's figures for `/metrics` (its pool, keys, snapshots), read when scraped.
    fn figures(&self) -> crate::metrics::BackendFigures {
        crate::metrics::BackendFigures::default()
    }
}

/// A connection owned by one client.
pub trait Dedicated: Send {
    /// Like [`Backend::pipeline`], on this connection.
    fn pipeline<'a>(
        &'a mut self,
        calls: &'a [Call],
    ) -> BoxFuture<'a, Result<Vec<Frame>, BackendError>>;

    /// Queues a script in the transaction open on this connection, to run at EXEC in its
    /// turn: `QUEUED`, or `None` where no transaction is open or the backend does not run
    /// scripts itself (only the embedded store does).
    fn queue_script(&mut self, _script: crate::embedded::script::Queued) -> Option<Frame> {
        None
    }
}

/// A Pub/Sub message as it was published: channel names as the backend knows them (inside
/// the namespace), and the pattern that matched, if any.
#[derive(Debug, Clone)]
pub struct Message {
    pub channel: Bytes,
    pub pattern: Option<Bytes>,
    pub payload: Bytes,
}

impl Message {
    /// What the message holds in memory while it waits, roughly: its names and payload.
    pub fn size(&self) -> usize {
        const OVERHEAD: usize = 64;
        OVERHEAD
            + self.channel.len()
            + self.pattern.as_ref().map_or(0, Bytes::len)
            + self.payload.len()
    }
}

/// A new subscriber's message queue, bounded in bytes: the sending side never waits for the
/// subscriber (so nothing behind it, such as an upstream connection's reader, piles up
/// messages instead), and once the messages waiting pass `max_bytes` the queue is cut off,
/// as Redis disconnects a subscriber past its `client-output-buffer-limit pubsub`.
pub fn message_queue(max_bytes: usize) -> (MessageSender, Messages) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(QueueState::default());
    let weak = tx.downgrade();
    (
        MessageSender {
            tx,
            state: state.clone(),
            max_bytes,
        },
        Messages {
            weak,
            rx,
            state,
            max_bytes,
        },
    )
}

#[derive(Default)]
struct QueueState {
    /// Bytes of the messages sent and not yet received.
    queued: AtomicUsize,
    cut_off: AtomicBool,
    /// Woken when the queue is cut off.
    notify: Notify,
}

impl QueueState {
    fn is_cut_off(&self) -> bool {
        self.cut_off.load(Ordering::Acquire)
    }

    /// Resolves once the queue is cut off.
    async fn cut_off(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_cut_off() {
                return;
            }
            notified.await;
        }
    }
}

/// The sending side of a subscriber's queue.
#[derive(Clone)]
pub struct MessageSender {
    tx: mpsc::UnboundedSender<Message>,
    state: Arc<QueueState>,
    max_bytes: usize,
}

impl MessageSender {
    /// Queues a message without waiting. `false` when the subscriber is gone or has just
    /// been cut off (this message passed its limit): stop sending to it.
    pub fn send(&self, message: Message) -> bool {
        if self.state.is_cut_off() {
            return false;
        }
        let size = message.size();
        let queued = self.state.queued.fetch_add(size, Ordering::AcqRel) + size;
        if queued > self.max_bytes {
            self.state.cut_off.store(true, Ordering::Release);
            self.state.notify.notify_waiters();
            return false;
        }
        self.tx.send(message).is_ok()
    }

    /// Resolves when the subscriber is gone or cut off.
    pub async fn closed(&self) {
        tokio::select! {
            () = self.tx.closed() => {}
            () = self.state.cut_off() => {}
        }
    }
}

/// The receiving side of a subscriber's queue.
pub struct Messages {
    rx: mpsc::UnboundedReceiver<Message>,
    state: Arc<QueueState>,
    /// For [`Messages::weak_sender`].
    weak: mpsc::WeakUnboundedSender<Message>,
    max_bytes: usize,
}

impl Messages {
    /// The next message; `None` when the backend ended the subscription or the queue was
    /// cut off ([`Messages::is_cut_off`] tells which).
    pub async fn recv(&mut self) -> Option<Message> {
        let message = tokio::select! {
            biased;
            () = self.state.cut_off() => None,
            message = self.rx.recv() => message,
        }?;
        self.state
            .queued
            .fetch_sub(message.size(), Ordering::AcqRel);
        Some(message)
    }

    /// True once the subscriber has been cut off for not reading.
    pub fn is_cut_off(&self) -> bool {
        self.state.is_cut_off()
    }

    /// Another way into this queue, for pkv's own messages (keyspace notifications) beside
    /// the backend's. It does not keep the queue open: when the backend drops its sender,
    /// the subscription ends as before.
    pub fn weak_sender(&self) -> WeakMessageSender {
        WeakMessageSender {
            tx: self.weak.clone(),
            state: self.state.clone(),
            max_bytes: self.max_bytes,
        }
    }

    /// A handle that resolves once the subscriber is cut off, to wait on apart from the
    /// queue.
    pub fn cut_off_signal(&self) -> CutOff {
        CutOff(self.state.clone())
    }
}

/// See [`Messages::weak_sender`].
#[derive(Clone)]
pub struct WeakMessageSender {
    tx: mpsc::WeakUnboundedSender<Message>,
    state: Arc<QueueState>,
    max_bytes: usize,
}

impl WeakMessageSender {
    /// As [`MessageSender::send`]; `false` as well once the subscription has ended.
    pub fn send(&self, message: Message) -> bool {
        let Some(tx) = self.tx.upgrade() else {
            return false;
        };
        MessageSender {
            tx,
            state: self.state.clone(),
            max_bytes: self.max_bytes,
        }
        .send(message)
    }
}

/// See [`Messages::cut_off_signal`].
pub struct CutOff(Arc<QueueState>);

impl CutOff {
    pub async fn wait(self) {
        self.0.cut_off().await
    }
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
    pub messages: Messages,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: usize) -> Message {
        Message {
            channel: Bytes::from_static(b"ch"),
            pattern: None,
            payload: Bytes::from(vec![b'x'; payload]),
        }
    }

    #[tokio::test]
    async fn a_queue_is_cut_off_past_its_bytes() {
        let (tx, mut rx) = message_queue(1000);
        assert!(tx.send(message(300)));
        assert!(tx.send(message(300)));
        // Reading makes room.
        assert_eq!(rx.recv().await.map(|m| m.payload.len()), Some(300));
        assert!(tx.send(message(300)));
        assert!(!rx.is_cut_off());
        assert!(!tx.send(message(300)), "past 1000 bytes");
        assert!(rx.is_cut_off());
        assert!(rx.recv().await.is_none());
        assert!(!tx.send(message(1)));
        tx.closed().await;
    }
}
