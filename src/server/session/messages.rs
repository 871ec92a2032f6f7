//! Pub/Sub messages on their way to a subscribed client, with the channel names the client
//! used, paid as reply bytes.

use bytes::BytesMut;

use super::Session;
use crate::backend::Message;
use crate::meter::{Admitted, Usage};
use crate::protocol::reply::ReplyWriter;

impl Session {
    /// How long the connection's token stays valid, while it is subscribed: a subscriber
    /// sends no commands, so the expiry check on each command would never stop it.
    pub fn subscription_expires_in(&self) -> Option<std::time::Duration> {
        let auth = self
            .auth
            .as_ref()
            .filter(|_| self.is_waiting_for_messages())?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let left = auth.valid_until.saturating_mul(1000).saturating_sub(now_ms);
        Some(std::time::Duration::from_millis(left.max(0) as u64))
    }

    /// The next Pub/Sub message; never resolves while not subscribed.
    pub async fn next_message(&mut self) -> Option<Message> {
        match &mut self.pubsub {
            Some(sub) => sub.messages.recv().await,
            None => std::future::pending().await,
        }
    }

    /// True when the subscription was cut off because its messages waited past
    /// `PKV_MAX_SUBSCRIBER_BYTES`.
    pub fn subscriber_cut_off(&self) -> bool {
        self.pubsub
            .as_ref()
            .is_some_and(|sub| sub.messages.is_cut_off())
    }

    /// Resolves when the subscription is cut off; never while not subscribed.
    pub fn until_cut_off(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let signal = self.pubsub.as_ref().map(|s| s.messages.cut_off_signal());
        async move {
            match signal {
                Some(signal) => signal.wait().await,
                None => std::future::pending().await,
            }
        }
    }

    /// Delivers a Pub/Sub message; the subscriber pays its bytes (bytes_out), as for any
    /// reply.
    pub fn deliver(&mut self, msg: Message, out: &mut BytesMut) {
        let start = out.len();
        self.write_message(msg, out);
        let bytes_out = (out.len() - start) as u64;
        if bytes_out > 0 && self.shared.meter.enabled() {
            let usage = Usage {
                bytes_out,
                ..Usage::default()
            };
            self.shared
                .meter
                .charge(&mut self.charges, Admitted::default(), &usage);
        }
    }

    /// Writes a Pub/Sub message with the channel (and pattern) as the client named them.
    pub(super) fn write_message(&self, msg: Message, out: &mut BytesMut) {
        let Some(ns) = self.ns() else { return };
        let Some(channel) = ns.strip(&msg.channel) else {
            return;
        };
        let mut w = ReplyWriter::new(out, self.proto);
        match &msg.pattern {
            Some(pattern) => {
                let Some(pattern) = ns.strip(pattern) else {
                    return;
                };
                w.push(4);
                w.bulk(b"pmessage");
                w.bulk(pattern);
            }
            None => {
                w.push(3);
                w.bulk(b"message");
            }
        }
        w.bulk(channel);
        w.bulk(&msg.payload);
    }
}
