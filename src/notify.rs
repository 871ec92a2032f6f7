//! Keyspace notifications per tenant (`PKV_KEYSPACE_EVENTS`): the flags, and the hub that
//! hands each tenant the events of its own keys.
//!
//! The backend is asked for key-event notifications only (`__keyevent@0__:<event>`, the
//! key as payload): the upstream by `CONFIG SET notify-keyspace-events` with the operator's
//! classes and `E`, the embedded store by publishing them in its own Pub/Sub. pkv holds
//! ONE subscription to `__keyevent@0__:*` for the whole process ([`run`]), whatever the
//! number of tenants and subscribers. Each message's key starts with its account's prefix
//! (`pkv:t:<account>:`): the hub looks that prefix up in a map of the tenants that listen,
//! and only that tenant's listeners see the message, with the prefix taken off. From one
//! event it writes what Redis would publish for it, in Redis's order: the keyspace message
//! (`__keyspace@0__:<key>`, the event as payload) when the flags have `K`, then the
//! key-event message when they have `E`.
//!
//! Cost: for a message about another tenant's key, one scan of the key for the prefix's end
//! and one hash lookup, nothing held. For a listening tenant's own key, one comparison or
//! glob match per channel or pattern that tenant subscribed to. Whatever a tenant subscribes
//! to, pkv receives each event once and does that fixed work for other tenants' events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Notify;

use crate::backend::{Backend, Message, WeakMessageSender};
use crate::namespace::TENANT_ROOT;

/// The channel prefix of keyspace messages.
pub const KEYSPACE: &[u8] = b"__keyspace@0__:";
/// The channel prefix of key-event messages.
pub const KEYEVENT: &[u8] = b"__keyevent@0__:";

/// What pkv subscribes to in the backend.
pub const SOURCE_PATTERN: &[u8] = b"__keyevent@0__:*";

/// The longest a tenant's SUBSCRIBE waits for pkv's own subscription to be in place (at
/// start-up, or while it is made again): past it the tenant is answered anyway.
const MAX_READY_WAIT: Duration = Duration::from_secs(2);

/// Bytes of events pkv's own subscription may have waiting before it is cut off and made
/// again. The hub never waits on a subscriber, so this is reached only if pkv itself stalls.
const SOURCE_QUEUE_BYTES: usize = 64 << 20;

/// The event classes and kinds of `notify-keyspace-events`, as Redis 7.0 reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(u16);

impl Flags {
    pub const GENERIC: Flags = Flags(1 << 0);
    pub const STRING: Flags = Flags(1 << 1);
    pub const LIST: Flags = Flags(1 << 2);
    pub const SET: Flags = Flags(1 << 3);
    pub const HASH: Flags = Flags(1 << 4);
    pub const ZSET: Flags = Flags(1 << 5);
    pub const EXPIRED: Flags = Flags(1 << 6);
    pub const EVICTED: Flags = Flags(1 << 7);
    pub const STREAM: Flags = Flags(1 << 8);
    pub const MODULE: Flags = Flags(1 << 9);
    pub const NEW: Flags = Flags(1 << 10);
    pub const KEY_MISS: Flags = Flags(1 << 11);
    pub const KEYSPACE: Flags = Flags(1 << 12);
    pub const KEYEVENT: Flags = Flags(1 << 13);
    /// `A`: every class but `m` and `n`.
    const ALL: Flags = Flags(0x3ff);
    const CLASSES: Flags = Flags(0xfff);

    /// Redis's letters, in the order its `CONFIG GET` prints them.
    const LETTERS: [(u8, Flags); 11] = [
        (b'g', Flags::GENERIC),
        (b'$', Flags::STRING),
        (b'l', Flags::LIST),
        (b's', Flags::SET),
        (b'h', Flags::HASH),
        (b'z', Flags::ZSET),
        (b'x', Flags::EXPIRED),
        (b'e', Flags::EVICTED),
        (b't', Flags::STREAM),
        (b'd', Flags::MODULE),
        (b'n', Flags::NEW),
    ];

    /// Reads a flag string; `Ok(None)` when it is empty (off). Flags that would publish
    /// nothing (no `K` nor `E`, or no class), which Redis takes silently, are refused so
    /// that the operator learns of it at start-up.
    pub fn parse(text: &str) -> Result<Option<Flags>, String> {
        let mut flags = Flags(0);
        for c in text.bytes() {
            let flag = match c {
                b'A' => Flags::ALL,
                b'K' => Flags::KEYSPACE,
                b'E' => Flags::KEYEVENT,
                b'm' => Flags::KEY_MISS,
                _ => match Flags::LETTERS.iter().find(|(l, _)| *l == c) {
                    Some((_, f)) => *f,
                    None => {
                        return Err(format!(
                            "unknown event class {:?}; use Redis's notify-keyspace-events letters \
                             (K E g $ l s h z x e t m d n A), e.g. KEA",
                            char::from(c)
                        ))
                    }
                },
            };
            flags.0 |= flag.0;
        }
        if text.is_empty() {
            return Ok(None);
        }
        if flags.0 & (Flags::KEYSPACE.0 | Flags::KEYEVENT.0) == 0 {
            return Err(format!(
                "{text:?} names neither K (keyspace) nor E (keyevent): nothing would be published"
            ));
        }
        if flags.0 & Flags::CLASSES.0 == 0 {
            return Err(format!(
                "{text:?} names no event class (g $ l s h z x e t d n m, or A for most)"
            ));
        }
        Ok(Some(flags))
    }

    pub fn has(self, flag: Flags) -> bool {
        self.0 & flag.0 == flag.0
    }

    /// The flags that name `class` in them.
    pub fn any(self, class: Flags) -> bool {
        self.0 & class.0 != 0
    }

    /// The string Redis's `CONFIG GET notify-keyspace-events` answers for these flags.
    pub fn redis_string(self) -> String {
        let mut out = String::new();
        if self.has(Flags::ALL) {
            out.push('A');
        } else {
            for (letter, flag) in Flags::LETTERS {
                if self.has(flag) {
                    out.push(char::from(letter));
                }
            }
        }
        if self.has(Flags::KEYSPACE) {
            out.push('K');
        }
        if self.has(Flags::KEYEVENT) {
            out.push('E');
        }
        if self.has(Flags::KEY_MISS) {
            out.push('m');
        }
        out
    }

    /// What pkv asks the backend for: the same classes, key-event messages only (pkv
    /// writes the keyspace ones itself).
    pub fn backend(self) -> Flags {
        Flags((self.0 & Flags::CLASSES.0) | Flags::KEYEVENT.0)
    }
}

/// The account prefix a namespaced key starts with (`pkv:t:<account>:`), if it has one.
fn tenant_prefix(key: &[u8]) -> Option<&[u8]> {
    let rest = key.strip_prefix(TENANT_ROOT.as_bytes())?;
    let end = rest.iter().position(|&b| b == b':')?;
    Some(&key[..TENANT_ROOT.len() + end + 1])
}

/// One channel or pattern a subscriber of one tenant listens to.
struct Entry {
    listener: u64,
    /// As the tenant named it.
    name: Bytes,
    pattern: bool,
    tx: WeakMessageSender,
}

/// Who listens, per tenant prefix.
pub struct Hub {
    flags: Option<Flags>,
    tenants: RwLock<HashMap<Bytes, Vec<Entry>>>,
    next_listener: AtomicU64,
    /// Set while pkv's own subscription to the backend's events is in place.
    ready: AtomicBool,
    ready_changed: Notify,
}

impl Hub {
    pub fn new(flags: Option<Flags>) -> Hub {
        Hub {
            flags,
            tenants: RwLock::default(),
            next_listener: AtomicU64::new(1),
            ready: AtomicBool::new(false),
            ready_changed: Notify::new(),
        }
    }

    pub fn flags(&self) -> Option<Flags> {
        self.flags
    }

    /// A listener for one subscribed connection of the tenant whose keys start with
    /// `prefix`; it stops listening when dropped. `None` when notifications are off.
    pub fn listener(self: &Arc<Self>, prefix: &[u8], tx: WeakMessageSender) -> Option<Listener> {
        self.flags?;
        Some(Listener {
            hub: self.clone(),
            id: self.next_listener.fetch_add(1, Ordering::Relaxed),
            prefix: Bytes::copy_from_slice(prefix),
            tx,
        })
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Bytes, Vec<Entry>>> {
        self.tenants.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (at most `limit`) until pkv's own subscription is in place, so that a tenant
    /// told it is subscribed misses no event after that.
    async fn wait_ready(&self, limit: Duration) {
        if limit.is_zero() || self.ready.load(Ordering::Acquire) {
            return;
        }
        let wait = async {
            loop {
                let changed = self.ready_changed.notified();
                if self.ready.load(Ordering::Acquire) {
                    return;
                }
                changed.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }

    fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
        self.ready_changed.notify_waiters();
    }

    /// Hands the event `event` on the namespaced `key` to its tenant's listeners; returns
    /// how many subscriptions it looked at (only that tenant's).
    pub fn dispatch(&self, event: &[u8], key: &[u8]) -> usize {
        let Some(flags) = self.flags else { return 0 };
        let Some(prefix) = tenant_prefix(key) else {
            return 0;
        };
        let tenants = self.tenants.read().unwrap_or_else(|p| p.into_inner());
        let Some(entries) = tenants.get(prefix) else {
            return 0;
        };
        let own_key = &key[prefix.len()..];
        let publish = |kind: &[u8], suffix: &[u8], payload: &[u8]| {
            let mut channel = BytesMut::with_capacity(kind.len() + suffix.len());
            channel.put_slice(kind);
            channel.put_slice(suffix);
            let wrapped = |name: &[u8]| {
                let mut out = BytesMut::with_capacity(prefix.len() + name.len());
                out.put_slice(prefix);
                out.put_slice(name);
                out.freeze()
            };
            let payload = Bytes::copy_from_slice(payload);
            // As Redis: the channel's subscribers, then the patterns'.
            for entry in entries.iter().filter(|e| !e.pattern && e.name == channel) {
                entry.tx.send(Message {
                    channel: wrapped(&channel),
                    pattern: None,
                    payload: payload.clone(),
                });
            }
            for entry in entries
                .iter()
                .filter(|e| e.pattern && crate::embedded::glob::matches(&e.name, &channel))
            {
                entry.tx.send(Message {
                    channel: wrapped(&channel),
                    pattern: Some(wrapped(&entry.name)),
                    payload: payload.clone(),
                });
            }
        };
        if flags.has(Flags::KEYSPACE) {
            publish(KEYSPACE, own_key, event);
        }
        if flags.has(Flags::KEYEVENT) {
            publish(KEYEVENT, event, own_key);
        }
        entries.len()
    }
}

/// Whether a tenant's subscription to `name` can receive notifications: a channel that
/// is one, or any pattern (`*` matches them too).
fn concerns_notifications(name: &[u8], pattern: bool) -> bool {
    pattern || name.starts_with(KEYSPACE) || name.starts_with(KEYEVENT)
}

/// One subscribed connection's place in the hub.
pub struct Listener {
    hub: Arc<Hub>,
    id: u64,
    prefix: Bytes,
    tx: WeakMessageSender,
}

impl Listener {
    /// Listens on `name` (a channel or a pattern, as the tenant named it) too.
    pub async fn subscribe(&self, name: &[u8], pattern: bool, wait: Duration) {
        if !concerns_notifications(name, pattern) {
            return;
        }
        {
            let mut tenants = self.hub.write();
            let entries = tenants.entry(self.prefix.clone()).or_default();
            let known = entries
                .iter()
                .any(|e| e.listener == self.id && e.pattern == pattern && e.name == name);
            if !known {
                entries.push(Entry {
                    listener: self.id,
                    name: Bytes::copy_from_slice(name),
                    pattern,
                    tx: self.tx.clone(),
                });
            }
        }
        self.hub.wait_ready(wait.min(MAX_READY_WAIT)).await;
    }

    pub fn unsubscribe(&self, name: &[u8], pattern: bool) {
        self.remove(|e| e.pattern == pattern && e.name == name);
    }

    fn remove(&self, what: impl Fn(&Entry) -> bool) {
        let mut tenants = self.hub.write();
        if let Some(entries) = tenants.get_mut(&self.prefix) {
            entries.retain(|e| !(e.listener == self.id && what(e)));
            if entries.is_empty() {
                tenants.remove(&self.prefix);
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.remove(|_| true);
    }
}

/// pkv's own subscription to the backend's key events, dispatched to the tenants for as
/// long as pkv runs; made again a second after it is lost. `before` runs before each
/// subscription (the upstream's `CONFIG SET`).
pub async fn run<F, Fut>(hub: Arc<Hub>, backend: Arc<dyn Backend>, before: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if hub.flags.is_none() {
        return std::future::pending().await;
    }
    loop {
        before().await;
        match backend.subscription(SOURCE_QUEUE_BYTES).await {
            Ok(mut sub) => match sub.sink.subscribe(SOURCE_PATTERN, true).await {
                Ok(()) => {
                    hub.set_ready(true);
                    while let Some(msg) = sub.messages.recv().await {
                        if let Some(event) = msg.channel.strip_prefix(KEYEVENT) {
                            let _ = hub.dispatch(event, &msg.payload);
                        }
                    }
                    hub.set_ready(false);
                    tracing::warn!(
                        "keyspace notifications: the subscription to the backend's events \
                         was lost; subscribing again"
                    );
                }
                Err(e) => tracing::warn!(error = ?e, "keyspace notifications: cannot subscribe"),
            },
            Err(e) => tracing::warn!(error = ?e, "keyspace notifications: cannot subscribe"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_and_print_as_redis_does() {
        // Each pair checked against redis-server 7.0.15's CONFIG SET / CONFIG GET.
        for (given, printed) in [
            ("KEA", "AKE"),
            ("Kg$", "g$K"),
            ("Elsmn", "lsnEm"),
            ("KEAmn", "AKEm"),
            ("Eg$lshzxetd", "AE"),
        ] {
            let flags = Flags::parse(given).unwrap().unwrap();
            assert_eq!(flags.redis_string(), printed, "{given}");
        }
        assert_eq!(Flags::parse("").unwrap(), None);
        assert!(Flags::parse("K").is_err(), "no class");
        assert!(Flags::parse("x").is_err(), "neither K nor E");
        assert!(Flags::parse("Kq").is_err());
        let backend = Flags::parse("Kg$").unwrap().unwrap().backend();
        assert_eq!(backend.redis_string(), "g$E");
    }

    #[tokio::test]
    async fn another_tenants_subscriptions_cost_nothing_per_event() {
        let hub = Arc::new(Hub::new(Flags::parse("KEA").unwrap_or_default()));
        let (a, b) = (
            crate::namespace::Namespace::new("a"),
            crate::namespace::Namespace::new("b"),
        );
        // The attacker, B, listens to everything many times over.
        let (_tx_b, rx_b) = crate::backend::message_queue(1 << 30);
        let listeners: Vec<Listener> = (0..1000)
            .filter_map(|_| hub.listener(b.prefix(), rx_b.weak_sender()))
            .collect();
        for l in &listeners {
            l.subscribe(b"*", true, Duration::ZERO).await;
            l.subscribe(b"__keyevent@0__:set", false, Duration::ZERO)
                .await;
        }
        let (_tx_a, mut rx_a) = crate::backend::message_queue(1 << 20);
        let Some(listener_a) = hub.listener(a.prefix(), rx_a.weak_sender()) else {
            panic!("notifications are on");
        };
        listener_a
            .subscribe(b"__keyspace@0__:k", false, Duration::ZERO)
            .await;
        // A's event: A's one subscription is looked at, none of B's.
        assert_eq!(hub.dispatch(b"set", &a.wrap(b"k")), 1);
        let got = rx_a.recv().await.map(|m| (m.channel, m.payload));
        assert_eq!(
            got,
            Some((a.wrap(b"__keyspace@0__:k"), Bytes::from_static(b"set")))
        );
        // B's 2000 subscriptions are looked at for B's events only.
        assert_eq!(hub.dispatch(b"set", &b.wrap(b"k")), 2000);
        assert_eq!(hub.dispatch(b"set", b"pkv:ledger:x"), 0);
        drop(listeners);
        assert_eq!(
            hub.dispatch(b"set", &b.wrap(b"k")),
            0,
            "dropped listeners leave"
        );
    }

    #[test]
    fn a_key_names_its_tenant() {
        assert_eq!(tenant_prefix(b"pkv:t:abc:k:1"), Some(&b"pkv:t:abc:"[..]));
        assert_eq!(tenant_prefix(b"pkv:ledger:x"), None);
        assert_eq!(tenant_prefix(b"pkv:t:abc"), None);
    }
}
