//! Pub/Sub inside the store: who is subscribed to which channel or pattern, and delivery.
//!
//! Each subscriber has a queue bounded in bytes (`PKV_MAX_SUBSCRIBER_BYTES`). A publisher
//! never waits for a subscriber; a subscriber that stops reading is cut off, and
//! disconnected, once its queue passes the bound, as Redis disconnects such clients when
//! their output buffer passes its limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use super::glob;
use crate::backend::{
    message_queue, BackendError, BoxFuture, Message, MessageSender, Subscription, SubscriptionSink,
};

type Subscribers = HashMap<Bytes, HashMap<u64, MessageSender>>;

#[derive(Default)]
pub struct Registry {
    channels: RwLock<Subscribers>,
    patterns: RwLock<Subscribers>,
    next_id: AtomicU64,
}

fn read(lock: &RwLock<Subscribers>) -> std::sync::RwLockReadGuard<'_, Subscribers> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write(lock: &RwLock<Subscribers>) -> std::sync::RwLockWriteGuard<'_, Subscribers> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    fn table(&self, pattern: bool) -> &RwLock<Subscribers> {
        if pattern {
            &self.patterns
        } else {
            &self.channels
        }
    }

    /// Delivers `payload` to every subscriber of `channel` and of each matching pattern;
    /// returns how many deliveries were made.
    pub fn publish(&self, channel: &[u8], payload: &[u8]) -> i64 {
        let channel = Bytes::copy_from_slice(channel);
        let payload = Bytes::copy_from_slice(payload);
        let mut delivered = 0;
        let mut send = |tx: &MessageSender, pattern: Option<&Bytes>| {
            let message = Message {
                channel: channel.clone(),
                pattern: pattern.cloned(),
                payload: payload.clone(),
            };
            if tx.send(message) {
                delivered += 1;
            }
        };
        if let Some(subs) = read(&self.channels).get(&channel) {
            subs.values().for_each(|tx| send(tx, None));
        }
        for (pattern, subs) in read(&self.patterns).iter() {
            if glob::matches(pattern, &channel) {
                subs.values().for_each(|tx| send(tx, Some(pattern)));
            }
        }
        delivered
    }

    /// Like [`Registry::publish`], for a publisher that knows the one pattern that can
    /// match `channel`: delivers to the channel's subscribers and to that pattern's, with
    /// two lookups whatever the number of patterns held. The store's key events use it:
    /// every tenant's channel and pattern lies in its namespace, so only pkv's own pattern
    /// can match a `__keyevent@0__:` channel, and no tenant can make each write walk its
    /// patterns.
    pub fn publish_known(&self, channel: &[u8], payload: &[u8], pattern: &[u8]) -> i64 {
        let mut delivered = 0;
        let mut send = |tx: &MessageSender, pattern: Option<&[u8]>| {
            let message = Message {
                channel: Bytes::copy_from_slice(channel),
                pattern: pattern.map(Bytes::copy_from_slice),
                payload: Bytes::copy_from_slice(payload),
            };
            if tx.send(message) {
                delivered += 1;
            }
        };
        if let Some(subs) = read(&self.channels).get(channel) {
            subs.values().for_each(|tx| send(tx, None));
        }
        if glob::matches(pattern, channel) {
            if let Some(subs) = read(&self.patterns).get(pattern) {
                subs.values().for_each(|tx| send(tx, Some(pattern)));
            }
        }
        delivered
    }

    /// Channels with at least one subscriber, matching `pattern` if given.
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        read(&self.channels)
            .iter()
            .filter(|(name, subs)| {
                !subs.is_empty() && pattern.is_none_or(|p| glob::matches(p, name))
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Subscribers of `channel` (not counting patterns).
    pub fn numsub(&self, channel: &[u8]) -> i64 {
        read(&self.channels)
            .get(channel)
            .map_or(0, |subs| subs.len() as i64)
    }

    fn add(&self, id: u64, name: &[u8], pattern: bool, tx: &MessageSender) {
        write(self.table(pattern))
            .entry(Bytes::copy_from_slice(name))
            .or_default()
            .insert(id, tx.clone());
    }

    fn remove(&self, id: u64, name: &[u8], pattern: bool) {
        let mut table = write(self.table(pattern));
        if let Some(subs) = table.get_mut(name) {
            subs.remove(&id);
            if subs.is_empty() {
                table.remove(name);
            }
        }
    }
}

/// A subscriber's end in the store.
struct Sink {
    registry: Arc<Registry>,
    id: u64,
    tx: MessageSender,
    subscribed: Vec<(Bytes, bool)>,
}

impl SubscriptionSink for Sink {
    fn subscribe<'a>(
        &'a mut self,
        name: &'a [u8],
        pattern: bool,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        self.registry.add(self.id, name, pattern, &self.tx);
        let entry = (Bytes::copy_from_slice(name), pattern);
        if !self.subscribed.contains(&entry) {
            self.subscribed.push(entry);
        }
        Box::pin(async { Ok(()) })
    }

    fn unsubscribe<'a>(
        &'a mut self,
        name: &'a [u8],
        pattern: bool,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        self.registry.remove(self.id, name, pattern);
        self.subscribed
            .retain(|(n, p)| !(n.as_ref() == name && *p == pattern));
        Box::pin(async { Ok(()) })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        for (name, pattern) in &self.subscribed {
            self.registry.remove(self.id, name, *pattern);
        }
    }
}

/// A new subscriber with no channels, cut off once `max_queued` bytes of messages wait for
/// it.
pub fn subscription(registry: Arc<Registry>, max_queued: usize) -> Subscription {
    let (tx, messages) = message_queue(max_queued);
    let id = registry.next_id.fetch_add(1, Ordering::Relaxed);
    Subscription {
        sink: Box::new(Sink {
            registry,
            id,
            tx,
            subscribed: Vec::new(),
        }),
        messages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_known_publish_looks_up_its_channel_and_pattern_only() {
        let registry = Arc::new(Registry::default());
        let mut source = subscription(registry.clone(), 1 << 20);
        let mut tenant = subscription(registry.clone(), 1 << 20);
        for i in 0..1000 {
            let pattern = format!("pkv:t:a{i}:*");
            let _ = tenant.sink.subscribe(pattern.as_bytes(), true).await;
        }
        let _ = source.sink.subscribe(b"__keyevent@0__:*", true).await;
        let _ = tenant.sink.subscribe(b"__keyevent@0__:del", false).await;
        let sent =
            registry.publish_known(b"__keyevent@0__:del", b"pkv:t:a1:k", b"__keyevent@0__:*");
        assert_eq!(sent, 2, "the channel's subscriber and the pattern's");
        let got = source.messages.recv().await;
        assert_eq!(
            got.map(|m| (m.pattern, m.payload)),
            Some((
                Some(Bytes::from_static(b"__keyevent@0__:*")),
                Bytes::from_static(b"pkv:t:a1:k")
            ))
        );
        // A pattern that does not match the channel delivers nothing.
        let sent = registry.publish_known(b"__keyevent@0__:del", b"k", b"__keyspace@0__:*");
        assert_eq!(sent, 1);
    }
}
