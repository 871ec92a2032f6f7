//! The upstream Redis: pooled multiplexed connections for plain commands, dedicated
//! connections for clients that need one (MULTI/WATCH, blocking commands), and Pub/Sub
//! connections for subscribers.
//!
//! Pooled and dedicated connections speak the client's protocol version, so Redis itself
//! shapes RESP2 and RESP3 replies; pkv relays them. When the upstream is down, requests fail
//! with [`UpstreamError::Unavailable`] and the pool reconnects on later use.

mod pool;

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Pipeline, ProtocolVersion, RedisError, Value};

use crate::protocol::Proto;
use pool::Pool;

/// How long a new upstream connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Upstream failures that are not Redis error replies.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("ERR upstream unavailable: {0}")]
    Unavailable(String),
}

impl UpstreamError {
    fn from_redis(err: &RedisError) -> Self {
        UpstreamError::Unavailable(err.to_string().replace(['\r', '\n'], " "))
    }
}

/// Connections to one upstream Redis.
pub struct Upstream {
    resp2: Client,
    resp3: Client,
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
        let resp2 = Client::open(url)?;
        let info = resp2.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let resp3 = Client::open(info.set_redis_settings(settings))?;
        Ok(Upstream {
            resp2,
            resp3,
            pools: [Pool::new(pool_size), Pool::new(pool_size)],
            response_timeout,
        })
    }

    fn client(&self, proto: Proto) -> &Client {
        match proto {
            Proto::Resp2 => &self.resp2,
            Proto::Resp3 => &self.resp3,
        }
    }

    fn config(timeout: Option<Duration>) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(timeout)
    }

    /// Sends a batch of commands on a pooled connection in one write; one reply per
    /// command, in order. Redis error replies come back as [`Value::ServerError`].
    pub async fn pipeline(
        &self,
        proto: Proto,
        pipe: &Pipeline,
        count: usize,
    ) -> Result<Vec<Value>, UpstreamError> {
        let pool = &self.pools[proto as usize];
        let (slot, mut conn) = pool
            .get(|| async {
                self.client(proto)
                    .get_multiplexed_async_connection_with_config(&Self::config(Some(
                        self.response_timeout,
                    )))
                    .await
            })
            .await?;
        match conn.send_packed_commands(pipe, 0, count).await {
            Ok(values) => Ok(values),
            Err(err) => {
                if err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error()
                {
                    pool.invalidate(slot);
                }
                Err(UpstreamError::from_redis(&err))
            }
        }
    }

    /// A connection for one client alone, without a response timeout (blocking commands
    /// may wait as long as they asked to). Dropping it closes it, which also ends any
    /// blocking command still waiting upstream.
    pub async fn dedicated(&self, proto: Proto) -> Result<Dedicated, UpstreamError> {
        let conn = self
            .client(proto)
            .get_multiplexed_async_connection_with_config(&Self::config(None))
            .await
            .map_err(|e| UpstreamError::from_redis(&e))?;
        Ok(Dedicated { conn })
    }

    /// A fresh Pub/Sub connection.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, UpstreamError> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.resp2.get_async_pubsub())
            .await
            .map_err(|_| UpstreamError::Unavailable("connect timed out".into()))?
            .map_err(|e| UpstreamError::from_redis(&e))
    }
}

/// An upstream connection owned by one client.
pub struct Dedicated {
    conn: MultiplexedConnection,
}

impl Dedicated {
    /// Like [`Upstream::pipeline`], on this connection.
    pub async fn pipeline(
        &mut self,
        pipe: &Pipeline,
        count: usize,
    ) -> Result<Vec<Value>, UpstreamError> {
        self.conn
            .send_packed_commands(pipe, 0, count)
            .await
            .map_err(|e| UpstreamError::from_redis(&e))
    }
}
