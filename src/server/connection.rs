//! One client connection: read requests, run them through the session, write replies.
//!
//! Requests are parsed one at a time with the limits of the moment (smaller before AUTH),
//! so a pipelined `AUTH` followed by commands gets the right limits for each. Replies to
//! everything read in one go are written together, in order, in one write.
//!
//! The bounds of SPEC 10 that belong to one connection are kept here: the time to
//! authenticate (`PKV_AUTH_TIMEOUT`) and the slot of a connection not yet authenticated
//! (`PKV_MAX_UNAUTHENTICATED`), the time a started request may take (`PKV_REQUEST_TIMEOUT`)
//! and the bytes of it buffered (counted against the account, `PKV_MAX_BUFFERED_PER_ACCOUNT`),
//! and the replies held unsent (`PKV_MAX_OUTPUT_BYTES`). Replies are written as soon as
//! 1 MiB is ready, and pkv reads nothing more from a client while a write to it waits: a
//! client that does not read stops being read, instead of having its replies buffered.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::client_io::ClientIo;
use super::session::Session;
use super::stream::{ClientStream, ClientWrite};
use super::Shared;
use crate::error::ClientError;
use crate::metrics::Metrics;
use crate::protocol::reply::ReplyWriter;
use crate::protocol::Proto;

/// A timer that never fires in practice, for a connection without an idle timeout.
const IDLE_NEVER: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

/// Replies are written to the client as soon as this many bytes are ready.
const OUT_HIGH_WATER: usize = 1 << 20;

/// Writes a last line to a client that is being closed, without waiting: a client that does
/// not read must not hold its connection open by not reading its goodbye.
fn goodbye(wr: &mut ClientWrite, proto: Proto, out: &mut BytesMut, err: impl Into<ClientError>) {
    ReplyWriter::new(out, proto).error(&err.into().line());
    let _ = wr.try_write(out);
}

/// Resolves at `deadline`, or never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Serves one client until it leaves, breaks the protocol, hits one of its bounds, or pkv
/// shuts down. `arrived` is when the client connected: a TLS handshake's time counts
/// against `PKV_AUTH_TIMEOUT`.
pub async fn serve(shared: Arc<Shared>, socket: ClientStream, peer: SocketAddr, arrived: Instant) {
    Metrics::inc(&shared.metrics.connections);
    Metrics::inc(&shared.metrics.connections_total);
    // This connection's timeouts are those in force when it connected.
    let settings = shared.current_full();
    let (idle, max_output) = (settings.idle_timeout, settings.max_output_bytes);
    let (rd, mut wr) = socket.split();
    let mut io = ClientIo::new(rd);
    let mut session = Session::new(shared.clone(), peer);
    let mut out = BytesMut::new();
    // The connection's place among the unauthenticated ones, until it authenticates.
    let mut stranger = Some(shared.strangers.arrive(session.id));
    // Since when the connection has been without an account, and since when the request at
    // the front of `inbuf` has been arriving.
    let mut unauthenticated_since = Some(arrived);
    let mut request_since: Option<Instant> = None;
    // Made once for the connection: a timer or a watch made on every pass of the loop
    // would cost more than serving a small request.
    let stopping = shared.stopping();
    tokio::pin!(stopping);
    // The idle timer is re-armed only when it fires, from the last time the client was
    // active.
    let mut active_at = Instant::now();
    let idle_timer = tokio::time::sleep(idle.unwrap_or(IDLE_NEVER));
    tokio::pin!(idle_timer);
    'conn: loop {
        session.tick();
        let (taken_at, mut answered) = (Instant::now(), false);
        loop {
            match io.parse(session.limits()) {
                Ok(Some(req)) => {
                    request_since = None;
                    answered = true;
                    session.submit(req, &mut out, &mut io).await;
                    if session.closing {
                        break;
                    }
                    if out.len() > max_output {
                        over_output_limit(&peer, out.len(), max_output);
                        break 'conn;
                    }
                    // Long pipelines with big replies: send what is ready rather than hold
                    // it. While the client does not read, this waits, and nothing more is
                    // read from it.
                    if out.len() >= OUT_HIGH_WATER {
                        if !write_replies(&mut wr, &out, &mut session, &peer).await {
                            break 'conn;
                        }
                        out.clear();
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    session.flush(&mut out).await;
                    ReplyWriter::new(&mut out, session.proto)
                        .error(&ClientError::from(err.clone()).line());
                    let _ = wr.write_all(&out).await;
                    tracing::debug!(%peer, error = %err, "protocol error; closing");
                    break 'conn;
                }
            }
        }
        session.flush(&mut out).await;
        session.apply_charges();
        if out.len() > max_output {
            over_output_limit(&peer, out.len(), max_output);
            break;
        }
        if !out.is_empty() {
            if !write_replies(&mut wr, &out, &mut session, &peer).await {
                break;
            }
            crate::metrics::served(answered, taken_at);
            out.clear();
            if out.capacity() > 1 << 20 {
                out = BytesMut::new();
            }
        }
        if session.closing {
            break;
        }
        // A connection counts among the strangers until it authenticates (and again after
        // RESET), and must authenticate in time.
        if session.is_authenticated() {
            stranger = None;
            unauthenticated_since = None;
        } else {
            unauthenticated_since.get_or_insert_with(Instant::now);
            if stranger.is_none() {
                stranger = Some(shared.strangers.arrive(session.id));
            }
        }
        // What is left in `inbuf` is one unfinished request: it must finish in time, and
        // its bytes count against the account.
        if io.inbuf.is_empty() {
            request_since = None;
        } else {
            request_since.get_or_insert_with(Instant::now);
        }
        if let Err(err) = session.hold_unfinished(io.inbuf.len()) {
            session.pay_unfinished(io.inbuf.len());
            goodbye(&mut wr, session.proto, &mut out, err);
            break;
        }
        let subscribed = session.is_waiting_for_messages();
        let expires_in = session.subscription_expires_in();
        let token_expiry = async {
            match expires_in {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let auth_deadline = unauthenticated_since.map(|t| t + settings.auth_timeout);
        let evicted = stranger.as_ref().map(|s| s.evicted());
        let evicted = async move {
            match evicted {
                Some(evicted) => evicted.await,
                None => std::future::pending().await,
            }
        };
        let request_deadline = request_since
            .zip(settings.request_timeout)
            .map(|(t, d)| t + d);
        // Biased, in this order: what a busy connection waits for most is polled first,
        // and the rest only while it is not ready; so shutdown is also checked here, for a
        // client that never stops sending.
        if shared.is_stopping() {
            session.pay_unfinished(io.inbuf.len());
            break;
        }
        tokio::select! {
            biased;
            read = io.fill() => match read {
                Ok(0) | Err(_) => {
                    session.pay_unfinished(io.inbuf.len());
                    break;
                }
                Ok(_) => active_at = Instant::now(),
            },
            () = &mut stopping => {
                session.pay_unfinished(io.inbuf.len());
                break;
            }
            // A subscriber whose token expired is told and closed, as Redis closes clients
            // whose permissions are revoked: nothing more reaches it, and its client library
            // reconnects and authenticates again.
            () = token_expiry => {
                goodbye(&mut wr, session.proto, &mut out, ClientError::TokenExpired);
                break;
            }
            message = session.next_message() => match message {
                Some(_) if session.subscription_expires_in().is_some_and(|d| d.is_zero()) => {
                    goodbye(&mut wr, session.proto, &mut out, ClientError::TokenExpired);
                    break;
                }
                Some(message) => {
                    active_at = Instant::now();
                    session.deliver(message, &mut out);
                }
                None if session.subscriber_cut_off() => {
                    tracing::info!(%peer, "subscriber not reading past PKV_MAX_SUBSCRIBER_BYTES; disconnected");
                    break;
                }
                None => {
                    goodbye(&mut wr, session.proto, &mut out, ClientError::PubSubLost);
                    break;
                }
            },
            () = &mut idle_timer, if idle.is_some() && !subscribed => {
                let limit = idle.unwrap_or(IDLE_NEVER);
                if active_at.elapsed() >= limit {
                    session.pay_unfinished(io.inbuf.len());
                    break;
                }
                idle_timer.as_mut().reset((active_at + limit).into());
            }
            () = evicted => {
                goodbye(&mut wr, session.proto, &mut out, ClientError::TooManyStrangers);
                break;
            }
            () = until(auth_deadline) => {
                goodbye(&mut wr, session.proto, &mut out, ClientError::AuthTimeout);
                break;
            }
            () = until(request_deadline) => {
                session.pay_unfinished(io.inbuf.len());
                let secs = settings.request_timeout.map_or(0, |d| d.as_secs());
                goodbye(&mut wr, session.proto, &mut out, ClientError::RequestTimeout { secs });
                break;
            }
        }
    }
    drop(stranger);
    session.end().await;
    shared.metrics.connections.fetch_sub(1, Ordering::Relaxed);
}

/// Writes replies to the client; `false` when the connection must end. Most writes complete
/// at once; when the client is not reading, what is left waits, counted against the
/// account's `PKV_MAX_OUTPUT_PER_ACCOUNT`, and a subscriber is cut off meanwhile if its
/// messages pass `PKV_MAX_SUBSCRIBER_BYTES`.
async fn write_replies(
    wr: &mut ClientWrite,
    out: &[u8],
    session: &mut Session,
    peer: &SocketAddr,
) -> bool {
    let done = match wr.try_write(out) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(_) => return false,
    };
    let rest = &out[done..];
    if rest.is_empty() && !wr.buffers() {
        return true;
    }
    if let Err(err) = session.hold_output(rest.len()) {
        tracing::info!(%peer, error = %err, "client disconnected");
        return false;
    }
    let cut_off = session.until_cut_off();
    let written = tokio::select! {
        written = wr.write_all(rest) => written.is_ok(),
        () = cut_off => false,
    };
    let _ = session.hold_output(0);
    written
}

/// Logs why a client is being disconnected for the replies it holds. Like Redis past its
/// `client-output-buffer-limit`, pkv closes the connection without a reply: the replies
/// held are dropped (their commands ran and are paid).
fn over_output_limit(peer: &SocketAddr, held: usize, limit: usize) {
    tracing::info!(%peer, held, limit, "replies held past PKV_MAX_OUTPUT_BYTES; client disconnected");
}
