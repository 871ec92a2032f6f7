//! One client connection: read requests, run them through the session, write replies.
//!
//! Requests are parsed one at a time with the limits of the moment (smaller before AUTH),
//! so a pipelined `AUTH` followed by commands gets the right limits for each. Replies to
//! everything read in one go are written together, in order, in one write.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

use super::session::Session;
use super::Shared;
use crate::metrics::Metrics;
use crate::protocol::reply::ReplyWriter;
use crate::protocol::request;

/// Bytes asked for per read.
const READ_CHUNK: usize = 4096;

/// Replies are written to the client as soon as this many bytes are ready.
const OUT_HIGH_WATER: usize = 1 << 20;

/// The read side of a client, with what has been read but not parsed yet.
pub struct ClientIo {
    rd: OwnedReadHalf,
    pub inbuf: BytesMut,
}

impl ClientIo {
    /// Reads more bytes; `Ok(0)` means the client closed.
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        // Small reads for idle and chatty clients; a large request grows the buffer as it
        // arrives (a read never asks for less than what is free).
        if self.inbuf.capacity() - self.inbuf.len() < READ_CHUNK / 2 {
            self.inbuf.reserve(READ_CHUNK);
        }
        self.rd.read_buf(&mut self.inbuf).await
    }

    /// Resolves when the client goes away. Used while a command waits upstream (a blocking
    /// pop): what the client sends meanwhile is kept for later, up to `cap` bytes.
    pub async fn closed(&mut self, cap: usize) {
        loop {
            if self.inbuf.len() >= cap {
                std::future::pending::<()>().await;
            }
            match self.fill().await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// Serves one client until it leaves, breaks the protocol, or pkv shuts down.
pub async fn serve(shared: Arc<Shared>, socket: TcpStream, peer: SocketAddr) {
    Metrics::inc(&shared.metrics.connections);
    Metrics::inc(&shared.metrics.connections_total);
    let idle = shared.settings.idle_timeout;
    let (rd, mut wr) = socket.into_split();
    let mut io = ClientIo {
        rd,
        inbuf: BytesMut::new(),
    };
    let mut session = Session::new(shared.clone(), peer);
    let mut out = BytesMut::new();
    'conn: loop {
        session.tick();
        loop {
            match request::parse(&mut io.inbuf, session.limits()) {
                Ok(Some(req)) => {
                    session.submit(req, &mut out, &mut io).await;
                    if session.closing {
                        break;
                    }
                    // Long pipelines with big replies: send what is ready rather than hold it.
                    if out.len() >= OUT_HIGH_WATER {
                        if wr.write_all(&out).await.is_err() {
                            break 'conn;
                        }
                        out.clear();
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    session.flush(&mut out).await;
                    ReplyWriter::new(&mut out, session.proto).error(&err.to_string());
                    let _ = wr.write_all(&out).await;
                    tracing::debug!(%peer, error = %err, "protocol error; closing");
                    break 'conn;
                }
            }
        }
        session.flush(&mut out).await;
        session.apply_charges();
        if !out.is_empty() {
            if wr.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
            if out.capacity() > 1 << 20 {
                out = BytesMut::new();
            }
        }
        if session.closing {
            break;
        }
        let subscribed = session.is_waiting_for_messages();
        let idle_wait = async {
            match idle {
                Some(d) if !subscribed => tokio::time::sleep(d).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shared.stopping() => break,
            read = io.fill() => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            message = session.next_message() => match message {
                Some(message) => session.deliver(message, &mut out),
                None => {
                    ReplyWriter::new(&mut out, session.proto).error("ERR upstream unavailable: Pub/Sub connection lost");
                    let _ = wr.write_all(&out).await;
                    break;
                }
            },
            _ = idle_wait => break,
        }
    }
    session.end().await;
    shared.metrics.connections.fetch_sub(1, Ordering::Relaxed);
}
