//! Pub/Sub on a Redis Cluster upstream, kept up when the node it runs on dies.
//!
//! Redis Cluster carries a `PUBLISH` over its bus to every node, so a subscriber may listen
//! on any node. Each subscribing client gets a connection of its own to the first node that
//! answers (the masters of the slot map, then the seeds). When that node goes away, a task
//! that remembers the client's channels and patterns reads the slot map again, connects to
//! another live node and subscribes to them all there; the client stays connected and keeps
//! receiving. Messages published between the loss and the new subscription are not
//! delivered (Pub/Sub is at most once, as for any client of Redis that reconnects). Only
//! when no node answers for [`RESUBSCRIBE_FOR`] does the client get
//! `ClientError::PubSubLost` and lose its connection, as with a single upstream.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::Inner;
use crate::backend::{self, BackendError, BoxFuture, Message, MessageSender, Subscription};
use crate::upstream::CONNECT_TIMEOUT;

/// How long pkv tries to subscribe again on another node before it gives the client up.
pub const RESUBSCRIBE_FOR: Duration = Duration::from_secs(30);

/// How long between rounds of trying every node.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// A channel (`false`) or a pattern (`true`).
type Name = (Bytes, bool);

/// One subscribing connection to one node.
struct Live {
    addr: String,
    sink: redis::aio::PubSubSink,
    stream: redis::aio::PubSubStream,
}

impl Live {
    async fn connect(inner: &Inner, addr: &str) -> Result<Live, String> {
        let client = redis::Client::open(inner.url.node_url(addr)).map_err(|e| e.to_string())?;
        let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let (sink, stream) = pubsub.split();
        Ok(Live {
            addr: addr.to_owned(),
            sink,
            stream,
        })
    }

    async fn apply(&mut self, name: &[u8], pattern: bool, on: bool) -> redis::RedisResult<()> {
        match (pattern, on) {
            (false, true) => self.sink.subscribe(name).await,
            (true, true) => self.sink.psubscribe(name).await,
            (false, false) => self.sink.unsubscribe(name).await,
            (true, false) => self.sink.punsubscribe(name).await,
        }
    }

    /// A connection to the first node of the map or the seeds that answers, but `avoid`
    /// (the node just lost) last, subscribed to every one of `names`.
    async fn first_answering(
        inner: &Inner,
        names: &HashSet<Name>,
        avoid: Option<&str>,
    ) -> Result<Live, String> {
        let mut candidates: Vec<String> =
            inner.map().masters.iter().map(|n| n.addr.clone()).collect();
        for seed in &inner.url.seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        if let Some(avoid) = avoid {
            candidates.retain(|a| a != avoid);
            candidates.push(avoid.to_owned());
        }
        let mut why = String::from("no node to ask");
        for addr in candidates {
            let mut live = match Live::connect(inner, &addr).await {
                Ok(live) => live,
                Err(e) => {
                    why = format!("{addr}: {e}");
                    continue;
                }
            };
            let mut ok = true;
            for (name, pattern) in names {
                if let Err(e) = live.apply(name, *pattern, true).await {
                    why = format!("{addr}: {e}");
                    ok = false;
                    break;
                }
            }
            if ok {
                return Ok(live);
            }
        }
        Err(why)
    }

    /// [`Live::first_answering`], tried again until [`RESUBSCRIBE_FOR`] passes, the map
    /// read again each round.
    async fn replace(inner: &Inner, names: &HashSet<Name>, lost: &str) -> Option<Live> {
        let deadline = Instant::now() + RESUBSCRIBE_FOR;
        loop {
            let _ = inner.refresh().await;
            match Live::first_answering(inner, names, Some(lost)).await {
                Ok(live) => {
                    tracing::info!(lost = %lost, now = %live.addr, channels = names.len(), "cluster Pub/Sub moved to another node");
                    return Some(live);
                }
                Err(why) if Instant::now() >= deadline => {
                    tracing::warn!(lost = %lost, why = %why, "cluster Pub/Sub: no node to subscribe on");
                    return None;
                }
                Err(_) => tokio::time::sleep(RETRY_EVERY).await,
            }
        }
    }
}

/// A subscribe or unsubscribe the client asked for, and where its outcome goes.
struct Request {
    name: Bytes,
    pattern: bool,
    on: bool,
    done: oneshot::Sender<Result<(), BackendError>>,
}

/// A subscription on the first node that answers, moved when that node goes away.
pub(super) async fn subscription(
    inner: Arc<Inner>,
    max_queued: usize,
) -> Result<Subscription, BackendError> {
    if inner.map().masters.is_empty() {
        let _ = inner.refresh().await;
    }
    let live = Live::first_answering(&inner, &HashSet::new(), None)
        .await
        .map_err(BackendError::Unavailable)?;
    let (requests, received) = mpsc::unbounded_channel();
    let (tx, messages) = backend::message_queue(max_queued);
    tokio::spawn(run(inner, live, received, tx));
    Ok(Subscription {
        sink: Box::new(Sink(requests)),
        messages,
    })
}

/// Carries messages to the client and its requests to the node, and moves to another node
/// when this one goes away. Ends when the client goes (its sink dropped, its queue closed
/// or cut off) or when no node can be found; the end of the queue tells the session.
async fn run(
    inner: Arc<Inner>,
    mut live: Live,
    mut requests: mpsc::UnboundedReceiver<Request>,
    tx: MessageSender,
) {
    let mut names: HashSet<Name> = HashSet::new();
    loop {
        tokio::select! {
            request = requests.recv() => {
                let Some(request) = request else { break };
                let mut result = live.apply(&request.name, request.pattern, request.on).await;
                if result.is_err() {
                    // The node went away under the request: move, and ask the new one.
                    let Some(moved) = Live::replace(&inner, &names, &live.addr.clone()).await else {
                        let _ = request.done.send(Err(BackendError::Unavailable(
                            "no Redis Cluster node to subscribe on".into(),
                        )));
                        break;
                    };
                    live = moved;
                    result = live.apply(&request.name, request.pattern, request.on).await;
                }
                let name = (request.name, request.pattern);
                let outcome = match result {
                    Ok(()) => {
                        if request.on {
                            names.insert(name);
                        } else {
                            names.remove(&name);
                        }
                        Ok(())
                    }
                    Err(e) => Err(crate::upstream::unavailable(&e)),
                };
                let _ = request.done.send(outcome);
            }
            message = live.stream.next() => match message {
                Some(msg) => {
                    let message = Message {
                        channel: msg.get_channel::<Vec<u8>>().unwrap_or_default().into(),
                        pattern: msg.get_pattern::<Option<Vec<u8>>>().ok().flatten().map(Into::into),
                        payload: Bytes::copy_from_slice(msg.get_payload_bytes()),
                    };
                    if !tx.send(message) {
                        break;
                    }
                }
                None => {
                    let lost = live.addr.clone();
                    tracing::warn!(node = %lost, "cluster Pub/Sub connection lost; subscribing on another node");
                    match Live::replace(&inner, &names, &lost).await {
                        Some(moved) => live = moved,
                        None => break,
                    }
                }
            },
            () = tx.closed() => break,
        }
    }
}

/// The client's end: each request goes to the task, which answers it.
struct Sink(mpsc::UnboundedSender<Request>);

impl Sink {
    async fn ask(&self, name: &[u8], pattern: bool, on: bool) -> Result<(), BackendError> {
        let (done, outcome) = oneshot::channel();
        let request = Request {
            name: Bytes::copy_from_slice(name),
            pattern,
            on,
            done,
        };
        let lost = || BackendError::Unavailable("Pub/Sub connection lost".into());
        self.0.send(request).map_err(|_| lost())?;
        outcome.await.map_err(|_| lost())?
    }
}

impl backend::SubscriptionSink for Sink {
    fn subscribe<'a>(
        &'a mut self,
        name: &'a [u8],
        pattern: bool,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(self.ask(name, pattern, true))
    }

    fn unsubscribe<'a>(
        &'a mut self,
        name: &'a [u8],
        pattern: bool,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(self.ask(name, pattern, false))
    }
}
