//! `WAIT` in a cluster: the ledger's writes are followed by `WAIT` in the same batch
//! ([`crate::upstream::book`]), and `WAIT` only means something on the connection that made
//! the write, so a `WAIT` goes with the command before it, never to a master of its own.
//!
//! Redis counts, for `WAIT`, the replicas that acknowledged the last write of the client
//! (connection) that asks: a batch is sent whole on one pooled connection of its master
//! ([`super::Node::send`]), so a `WAIT` routed with the write before it covers that write.
//! A write that was redirected (`MOVED`, `ASK`) did not run where its `WAIT` did: the two
//! are sent again together to the node named ([`Inner::follow_waiting`]), and the `WAIT`'s
//! first reply is dropped.
//!
//! Whether a write can wait for a replica is read from `CLUSTER SLOTS` at each slot-map
//! read: whether every master has one ([`fewest_replicas`]). Redis leaves a replica it
//! marked failed out of `CLUSTER SLOTS`, so a master whose replica died counts none.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use super::{redirect, Cluster, Inner, MAX_REDIRECTS};
use crate::commands::Call;
use crate::error::ClientError;
use crate::protocol::frame::Frame;
use crate::protocol::Proto;

/// True when `call` is a `WAIT`.
pub(super) fn is_wait(call: &Call) -> bool {
    super::is(call, "WAIT")
}

impl Inner {
    /// Follows the redirections of `calls[0]` (as `from` answered it with `reply`) with the
    /// `WAIT` after it (`calls[1]`) sent right behind it each time; the replies of both.
    /// `reply` is a redirection.
    pub(super) async fn follow_waiting(
        &self,
        proto: Proto,
        calls: [&Call; 2],
        mut reply: Frame,
        from: &str,
    ) -> (Frame, Frame) {
        let failed = |line: &str| (Frame::error(line), Frame::error(line));
        let mut from = from.to_owned();
        for _ in 0..MAX_REDIRECTS {
            let Some(to) = redirect(&reply, &from) else {
                break;
            };
            if !to.ask {
                let _ = self.refresh().await;
            }
            let node = match self.node(&to.addr) {
                Ok(node) => node,
                Err(e) => return failed(&ClientError::Backend(e).line()),
            };
            let mut batch = Vec::with_capacity(3);
            if to.ask {
                batch.push(Call::named("ASKING"));
            }
            batch.extend(calls.iter().map(|&c| c.clone()));
            let mut replies = match node.send(proto, &batch, self.response_timeout).await {
                Ok(replies) => replies,
                Err(e) => return failed(&ClientError::Backend(e).line()),
            };
            let waited = replies.pop().unwrap_or_default();
            reply = replies.pop().unwrap_or_default();
            from = to.addr;
            if redirect(&reply, &from).is_none() {
                return (reply, waited);
            }
        }
        // Still redirected after MAX_REDIRECTS hops (`reply` is always a redirection here:
        // each answer that is not one returned above).
        failed(&ClientError::TooManyRedirects.line())
    }
}

/// The fewest replicas any slot range's master has in a `CLUSTER SLOTS` reply (each entry
/// is start, end, master, then one entry per replica); 0 for a reply without ranges.
pub(super) fn fewest_replicas(frame: &Frame) -> usize {
    let Frame::Array(entries) = frame else {
        return 0;
    };
    entries
        .iter()
        .map(|entry| match entry {
            Frame::Array(parts) => parts.len().saturating_sub(3),
            _ => 0,
        })
        .min()
        .unwrap_or(0)
}

impl Cluster {
    /// 1 while every master has a replica, else 0, as the slot map last read says; kept
    /// up to date at each read.
    pub fn replicated(&self) -> Arc<AtomicUsize> {
        self.inner.replicated.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(replicas: usize) -> Frame {
        let node = || Frame::Array(vec![Frame::Bulk("127.0.0.1".into()), Frame::Integer(7000)]);
        let mut parts = vec![Frame::Integer(0), Frame::Integer(5), node()];
        parts.extend((0..replicas).map(|_| node()));
        Frame::Array(parts)
    }

    #[test]
    fn the_fewest_replicas_of_any_master_are_counted() {
        assert_eq!(fewest_replicas(&Frame::Array(vec![entry(1), entry(2)])), 1);
        assert_eq!(fewest_replicas(&Frame::Array(vec![entry(2), entry(0)])), 0);
        assert_eq!(fewest_replicas(&Frame::Array(Vec::new())), 0);
        assert_eq!(fewest_replicas(&Frame::Null), 0);
    }

    #[test]
    fn a_wait_is_known() {
        assert!(is_wait(&Call::named("wait").arg("1").arg("100")));
        assert!(!is_wait(&Call::named("GET").arg("k")));
    }
}
