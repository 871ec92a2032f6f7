//! The TLS listener's side of accepting: the handshake, under the bounds of a connection
//! that has not authenticated.
//!
//! A handshake holds a connection slot (`PKV_MAX_CONNECTIONS`) and a place among the
//! strangers (`PKV_MAX_UNAUTHENTICATED`, which evicts the oldest), and must finish within
//! `PKV_AUTH_TIMEOUT` (or `PKV_REQUEST_TIMEOUT` when shorter); the time it takes counts
//! against the time to authenticate. A client that opens TCP and says nothing is dropped
//! when that time is up. A client speaking plain RESP to the TLS port is told so in one
//! line, in clear, and closed.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::stream::ClientStream;
use super::Shared;
use crate::error::ClientError;
use crate::protocol::reply::ReplyWriter;
use crate::protocol::Proto;
use crate::tls::CertStore;

/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A bound TLS listener, its acceptor, and the certificate it serves (reloaded while pkv
/// runs).
pub struct TlsListener {
    pub listener: TcpListener,
    pub acceptor: TlsAcceptor,
    pub certs: Arc<CertStore>,
}

/// Accepts from `listener`, or waits forever without one.
pub async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Runs the TLS handshake with a new client; `None` when it fails or does not finish in
/// time (logged in one line), or when pkv shuts down meanwhile.
pub async fn handshake(
    shared: &Arc<Shared>,
    acceptor: &TlsAcceptor,
    socket: TcpStream,
    peer: SocketAddr,
) -> Option<ClientStream> {
    let settings = &shared.settings;
    let limit = match settings.request_timeout {
        Some(request) => request.min(settings.auth_timeout),
        None => settings.auth_timeout,
    };
    let stranger = shared.strangers.arrive(shared.client_id());
    let evicted = stranger.evicted();
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(limit, shake(acceptor, socket)) => outcome,
        () = evicted => {
            tracing::info!(%peer, "TLS handshake unfinished; closed to make room (PKV_MAX_UNAUTHENTICATED)");
            return None;
        }
        () = shared.stopping() => return None,
    };
    match outcome {
        Ok(Ok(stream)) => Some(ClientStream::Tls(Box::new(stream))),
        Ok(Err(Some(why))) => {
            tracing::info!(%peer, "TLS handshake failed: {why}");
            None
        }
        // Connected and left without a word: a port probe.
        Ok(Err(None)) => None,
        Err(_) => {
            tracing::info!(%peer, secs = limit.as_secs(), "TLS handshake not finished in time; closed");
            None
        }
    }
}

/// The handshake itself; `Err(None)` when the client left before sending anything.
async fn shake(
    acceptor: &TlsAcceptor,
    socket: TcpStream,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, Option<String>> {
    let mut first = [0u8; 1];
    match socket.peek(&mut first).await {
        Ok(0) | Err(_) => return Err(None),
        Ok(_) => {}
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        refuse_plain_text(&socket);
        return Err(Some("plain text on the TLS port".into()));
    }
    acceptor
        .accept(socket)
        .await
        .map_err(|e| Some(e.to_string()))
}

/// Tells a client that spoke plain text that this port wants TLS, without waiting. What it
/// sent is read first: closing a socket with unread bytes resets it, and the client could
/// lose the line.
fn refuse_plain_text(socket: &TcpStream) {
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match socket.try_read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    let mut out = BytesMut::new();
    ReplyWriter::new(&mut out, Proto::Resp2).error(&ClientError::TlsRequired.line());
    let _ = socket.try_write(&out);
}
