//! SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE, PUNSUBSCRIBE: channels and patterns in the
//! account's namespace, on a Pub/Sub connection of the session's own.

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};

use crate::commands::CommandSpec;
use crate::server::limits::CountedSink;
use crate::server::session::{Session, Subscriber};

impl Session {
    pub(super) async fn subscribe(
        &mut self,
        spec: &CommandSpec,
        args: &[Bytes],
        pattern: bool,
        out: &mut BytesMut,
    ) {
        self.flush(out).await;
        let Some(ns) = self.ns().cloned() else { return };
        let Some(account) = self.auth.as_ref().map(|a| a.account.clone()) else {
            return;
        };
        if self.pubsub.is_none() {
            // A subscribed connection holds an upstream connection of its own: it counts
            // against the account's dedicated connections.
            let held = match self.shared.limits.dedicated(&account) {
                Ok(held) => held,
                Err(e) => return self.error_reply(e, out),
            };
            let max_queued = self.shared.current().max_subscriber_bytes;
            match self.shared.backend.subscription(max_queued).await {
                Ok(sub) => {
                    let notify =
                        (self.shared.notify).listener(ns.prefix(), sub.messages.weak_sender());
                    self.pubsub = Some(Subscriber {
                        sink: Box::new(CountedSink {
                            sink: sub.sink,
                            _held: held,
                            _subscribed: crate::metrics::process::Subscribed::new(),
                        }),
                        messages: sub.messages,
                        channels: BTreeSet::new(),
                        patterns: BTreeSet::new(),
                        notify,
                    });
                }
                Err(e) => return self.error_reply(e, out),
            }
        }
        let _ = spec;
        let kind: &[u8] = if pattern { b"psubscribe" } else { b"subscribe" };
        for name in &args[1..] {
            let Some(sub) = self.pubsub.as_mut() else {
                return;
            };
            let upstream_name = ns.wrap(name);
            if let Err(e) = sub.sink.subscribe(upstream_name.as_ref(), pattern).await {
                self.pubsub = None;
                return self.error_reply(e, out);
            }
            if let Some(notify) = &sub.notify {
                let wait = self.shared.settings.upstream_timeout;
                notify.subscribe(name, pattern, wait).await;
            }
            if pattern {
                sub.patterns.insert(name.clone());
            } else {
                sub.channels.insert(name.clone());
            }
            let count = sub.count() as i64;
            self.reply(out, |w| {
                w.push(3);
                w.bulk(kind);
                w.bulk(name);
                w.int(count);
            });
        }
    }

    pub(super) async fn unsubscribe(&mut self, args: &[Bytes], pattern: bool, out: &mut BytesMut) {
        self.flush(out).await;
        let kind: &[u8] = if pattern {
            b"punsubscribe"
        } else {
            b"unsubscribe"
        };
        let Some(ns) = self.ns().cloned() else { return };
        let names: Vec<Bytes> = match (&self.pubsub, args.len()) {
            (_, n) if n > 1 => args[1..].to_vec(),
            (Some(sub), _) => (if pattern {
                &sub.patterns
            } else {
                &sub.channels
            })
            .iter()
            .cloned()
            .collect(),
            (None, _) => Vec::new(),
        };
        if names.is_empty() {
            let count = self.pubsub.as_ref().map_or(0, |s| s.count()) as i64;
            return self.reply(out, |w| {
                w.push(3);
                w.bulk(kind);
                w.null();
                w.int(count);
            });
        }
        for name in names {
            let mut count = 0;
            if let Some(sub) = self.pubsub.as_mut() {
                let upstream_name = ns.wrap(&name);
                let _ = sub.sink.unsubscribe(upstream_name.as_ref(), pattern).await;
                if let Some(notify) = &sub.notify {
                    notify.unsubscribe(&name, pattern);
                }
                if pattern {
                    sub.patterns.remove(&name);
                } else {
                    sub.channels.remove(&name);
                }
                count = sub.count() as i64;
            }
            self.reply(out, |w| {
                w.push(3);
                w.bulk(kind);
                w.bulk(&name);
                w.int(count);
            });
        }
        if self.pubsub.as_ref().is_some_and(|s| s.count() == 0) {
            self.pubsub = None;
        }
    }
}
