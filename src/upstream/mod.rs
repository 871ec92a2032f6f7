//! The upstream Redis: pooled multiplexed connections for plain commands, dedicated
//! connections for clients that need one (MULTI/WATCH, blocking commands), and Pub/Sub
//! connections for subscribers.
//!
//! Pooled and dedicated connections speak the client's protocol version, so Redis itself
//! shapes RESP2 and RESP3 replies; pkv relays them. When the upstream is down, requests fail
//! with [`BackendError::Unavailable`] and the pool reconnects on later use.
//!
//! [`eviction`] checks, at start-up, that the Redis holding the ledger cannot evict it.

pub mod book;
pub mod cluster;
mod conn;
pub mod eviction;
pub mod notify;
mod pool;

use std::time::Duration;

use futures_util::StreamExt;
use redis::{Client, ConnectionInfo, RedisError};

use crate::backend::{self, Backend, BackendError, BoxFuture, Message, Subscription};
use crate::commands::Call;
use crate::protocol::frame::Frame;
use crate::protocol::Proto;
use conn::Conn;
use pool::Pool;

/// How long a new upstream connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends one command to the Redis at `url` on a connection opened for it alone (pkv's
/// connect timeout, `timeout` for the reply), outside the pools: for the checks pkv makes
/// of a Redis at start-up and now and then. `Err` when the Redis could not be asked (a bad
/// URL, down, refused, timed out); a refusal by Redis is the `Ok` reply's error value.
pub async fn ask_alone(
    url: &str,
    ca: Option<&std::path::Path>,
    timeout: Duration,
    command: &redis::Cmd,
) -> Result<Option<redis::Value>, String> {
    let client = crate::tls::redis_client(url, ca).map_err(|e| e.to_string())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(timeout));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())?;
    let mut pipe = redis::pipe();
    pipe.add_command(command.clone());
    let mut values = conn
        .send_packed_commands(&pipe, 0, 1)
        .await
        .map_err(|e| e.to_string())?;
    Ok(values.pop())
}

fn unavailable(err: &RedisError) -> BackendError {
    BackendError::Unavailable(err.to_string().replace(['\r', '\n'], " "))
}

/// Checks that `url` names an upstream pkv can connect to (`redis://`, `rediss://`, a
/// Unix socket, or a Redis Cluster's `redis+cluster://`).
pub fn check_url(url: &str) -> Result<(), String> {
    if cluster::is_cluster_url(url) {
        return cluster::parse_url(url).map(|_| ());
    }
    let client = Client::open(url).map_err(|e| format!("not a Redis URL ({e})"))?;
    match client.get_connection_info().addr() {
        redis::ConnectionAddr::TcpTls { insecure: true, .. } => Err(
            "rediss:// without certificate checks (#insecure) is refused; trust its CA with PKV_UPSTREAM_TLS_CA"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// Why an upstream cannot be set up.
#[derive(Debug)]
pub enum UpstreamError {
    Redis(RedisError),
    Tls(String),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Redis(e) => e.fmt(f),
            UpstreamError::Tls(e) => f.write_str(e),
        }
    }
}

/// Connections to one upstream Redis.
pub struct Upstream {
    /// Where the upstream is, and the handshake its URL asks for.
    info: ConnectionInfo,
    /// For Pub/Sub connections, which the `redis` crate still makes.
    client: Client,
    /// For a `rediss://` upstream.
    tls: Option<tokio_rustls::TlsConnector>,
    pools: [Pool; 2],
    response_timeout: Duration,
}

impl Upstream {
    /// Prepares connections to `url`; nothing connects until first use, so pkv starts even
    /// while the upstream is down.
    pub fn new(
        url: &str,
        pool_size: usize,
        response_timeout: Duration,
    ) -> Result<Self, RedisError> {
        Upstream::with_tls(url, None, pool_size, response_timeout).map_err(|e| match e {
            UpstreamError::Redis(e) => e,
            UpstreamError::Tls(e) => RedisError::from(std::io::Error::other(e)),
        })
    }

    /// [`Upstream::new`]; a `rediss://` upstream is verified against `ca`, else against
    /// the system's roots.
    pub fn with_tls(
        url: &str,
        ca: Option<&std::path::Path>,
        pool_size: usize,
        response_timeout: Duration,
    ) -> Result<Self, UpstreamError> {
        let client = crate::tls::redis_client(url, ca).map_err(UpstreamError::Redis)?;
        let info = client.get_connection_info().clone();
        let tls = match info.addr() {
            redis::ConnectionAddr::TcpTls { .. } => {
                Some(crate::tls::upstream_connector(ca).map_err(UpstreamError::Tls)?)
            }
            _ => None,
        };
        Ok(Upstream {
            info,
            client,
            tls,
            pools: [Pool::new(pool_size), Pool::new(pool_size)],
            response_timeout,
        })
    }

    /// Sends a batch of commands on a pooled connection in one write; one reply per
    /// command, in order. Redis error replies come back as [`Frame::Error`].
    pub async fn send(&self, proto: Proto, calls: &[Call]) -> Result<Vec<Frame>, BackendError> {
        let pool = &self.pools[proto as usize];
        let (slot, conn) = pool
            .get(|| {
                Conn::connect_with(
                    &self.info,
                    self.tls.as_ref(),
                    proto,
                    CONNECT_TIMEOUT,
                    Some(self.response_timeout),
                )
            })
            .await?;
        let result = conn.send(calls).await;
        if conn.is_broken() {
            // Timed out or lost: every later reply on this connection would queue behind
            // the one that never came.
            pool.invalidate(slot);
        }
        result
    }

    /// A PING on a pooled connection (`/readyz`): `Err` says why the upstream cannot serve.
    pub async fn ping(&self) -> Result<(), String> {
        ping_outcome(self.send(Proto::Resp2, &[Call::named("PING")]).await)
    }

    /// The pools' connection slots by state.
    pub fn pool_figures(&self) -> crate::metrics::PoolFigures {
        let mut figures = crate::metrics::PoolFigures::default();
        for pool in &self.pools {
            figures.add(pool.figures());
        }
        figures
    }

    /// A connection for one client alone, without a response timeout (blocking commands
    /// may wait as long as they asked to). Dropping it closes it, which also ends any
    /// blocking command still waiting upstream.
    pub async fn connect_dedicated(&self, proto: Proto) -> Result<Dedicated, BackendError> {
        let conn =
            Conn::connect_with(&self.info, self.tls.as_ref(), proto, CONNECT_TIMEOUT, None).await?;
        Ok(Dedicated { conn })
    }

    /// A fresh Pub/Sub connection; its messages are relayed by a task that ends with the
    /// subscription.
    ///
    /// The redis crate reads a Pub/Sub connection into a queue of its own, without bound,
    /// whether or not anyone takes the messages. So the relay takes every message as it
    /// arrives and puts it in the subscriber's queue, which is bounded in bytes
    /// (`max_queued`): when the subscriber does not read and its queue passes the bound,
    /// the relay stops and drops the connection, Redis sees it close and stops sending,
    /// and the subscriber is disconnected.
    pub async fn pubsub(&self, max_queued: usize) -> Result<Subscription, BackendError> {
        let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| BackendError::Unavailable("connect timed out".into()))?
            .map_err(|e| unavailable(&e))?;
        let (sink, mut stream) = pubsub.split();
        let (tx, messages) = backend::message_queue(max_queued);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    msg = stream.next() => match msg {
                        Some(msg) => {
                            let message = Message {
                                channel: msg.get_channel::<Vec<u8>>().unwrap_or_default().into(),
                                pattern: msg.get_pattern::<Option<Vec<u8>>>().ok().flatten().map(Into::into),
                                payload: bytes::Bytes::copy_from_slice(msg.get_payload_bytes()),
                            };
                            if !tx.send(message) {
                                break;
                            }
                        }
                        None => break,
                    },
                    () = tx.closed() => break,
                }
            }
            // Dropping the stream stops the connection's reader task, which closes the
            // upstream connection.
            drop(stream);
        });
        Ok(Subscription {
            sink: Box::new(Sink(sink)),
            messages,
        })
    }
}

impl Backend for Upstream {
    fn pipeline<'a>(
        &'a self,
        proto: Proto,
        calls: &'a [Call],
    ) -> BoxFuture<'a, Result<Vec<Frame>, BackendError>> {
        Box::pin(self.send(proto, calls))
    }

    fn dedicated(
        &self,
        proto: Proto,
    ) -> BoxFuture<'_, Result<Box<dyn backend::Dedicated>, BackendError>> {
        Box::pin(async move {
            let conn = self.connect_dedicated(proto).await?;
            Ok(Box::new(conn) as Box<dyn backend::Dedicated>)
        })
    }

    fn subscription(&self, max_queued: usize) -> BoxFuture<'_, Result<Subscription, BackendError>> {
        Box::pin(self.pubsub(max_queued))
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(self.ping())
    }

    fn figures(&self) -> crate::metrics::BackendFigures {
        crate::metrics::BackendFigures {
            pool: Some(self.pool_figures()),
            ..Default::default()
        }
    }
}

/// The subscribing half of an upstream Pub/Sub connection.
struct Sink(redis::aio::PubSubSink);

impl backend::SubscriptionSink for Sink {
    fn subscribe<'a>(
        &'a mut self,
        name: &'a [u8],
        pattern: bool,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let result = if pattern {
                self.0.psubscribe(name).await
            } else {
                self.0.subscribe(name).await
            };
            result.map_err(|e| unavailable(&e))
        })
    }

    fn unsubscribe<'a>(
        &'a mut self,
        name: &'a [u8],
        pattern: bool,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let result = if pattern {
                self.0.punsubscribe(name).await
            } else {
                self.0.unsubscribe(name).await
            };
            result.map_err(|e| unavailable(&e))
        })
    }
}

/// An upstream connection owned by one client.
pub struct Dedicated {
    conn: Conn,
}

impl backend::Dedicated for Dedicated {
    fn pipeline<'a>(
        &'a mut self,
        calls: &'a [Call],
    ) -> BoxFuture<'a, Result<Vec<Frame>, BackendError>> {
        Box::pin(self.conn.send(calls))
    }
}

/// What a `PING`'s replies say about the upstream, for `/readyz`.
pub(crate) fn ping_outcome(replies: Result<Vec<Frame>, BackendError>) -> Result<(), String> {
    match replies {
        Ok(replies) => match replies.first() {
            Some(Frame::Error(line)) => Err(format!(
                "upstream: PING answered {}",
                String::from_utf8_lossy(line)
            )),
            _ => Ok(()),
        },
        Err(e) => Err(format!("upstream: {}", crate::metrics::health::why(&e))),
    }
}
