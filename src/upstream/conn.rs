//! One connection to the upstream Redis, owned by pkv.
//!
//! Commands are written to the socket by the task that sends them, under a lock that keeps
//! each batch whole and in order; nothing else stands between a session and the socket. One
//! reader task per connection decodes replies into [`Frame`]s and hands each batch its
//! replies, in the order the batches were written (Redis answers in order). A connection
//! may be shared by many sessions (the pool) or owned by one (a dedicated connection).
//!
//! A connection that fails in any way (the socket closes, a reply does not parse, a batch
//! is only partly written, a reply does not come in time) is broken for good: every batch
//! waiting on it fails with [`BackendError::Lost`], since it may have run, and later sends
//! fail with [`BackendError::Unavailable`], since nothing is sent. The pool then makes a new
//! one. When the last handle is dropped the socket is closed, which also ends any blocking
//! command still waiting upstream.
//!
//! The response timeout of a shared connection is kept by its reader, not by each request:
//! one timer, re-armed only when it fires, checks how long the oldest batch has waited. A
//! timer per request would cost more than the rest of a request's work on the proxy side.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use redis::{ConnectionAddr, ConnectionInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, Notify};

use crate::backend::BackendError;
use crate::commands::Call;
use crate::protocol::frame::{Decoder, Frame};
use crate::protocol::Proto;

/// How much a read asks for at least; the buffer grows for larger replies.
const READ_CHUNK: usize = 16 * 1024;

type Reader = Box<dyn AsyncRead + Send + Unpin>;

type TlsWriter = tokio::io::WriteHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// The write half of the socket. Concrete, so that a write can be tried without waiting.
enum Writer {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    #[cfg(unix)]
    Unix(tokio::net::unix::OwnedWriteHalf),
    /// A `rediss://` upstream.
    Tls(TlsWriter),
}

impl Writer {
    /// Writes what the socket takes now, without waiting. Over TLS, bytes taken may wait
    /// in the TLS buffer until [`Writer::write_all`] flushes them.
    fn try_write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self {
            Writer::Tcp(w) => w.try_write(bytes),
            #[cfg(unix)]
            Writer::Unix(w) => w.try_write(bytes),
            Writer::Tls(w) => {
                use std::pin::Pin;
                use std::task::{Context, Poll, Waker};
                use tokio::io::AsyncWrite;
                let mut cx = Context::from_waker(Waker::noop());
                match Pin::new(w).poll_write(&mut cx, bytes) {
                    Poll::Ready(written) => written,
                    Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }

    /// True when a write taken whole may still wait in a buffer (TLS) for `write_all`.
    fn buffers(&self) -> bool {
        matches!(self, Writer::Tls(_))
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Writer::Tcp(w) => w.write_all(bytes).await,
            #[cfg(unix)]
            Writer::Unix(w) => w.write_all(bytes).await,
            Writer::Tls(w) => {
                w.write_all(bytes).await?;
                w.flush().await
            }
        }
    }
}

/// A handle to one upstream connection; clones share it.
#[derive(Clone)]
pub struct Conn {
    inner: Arc<Inner>,
}

struct Inner {
    out: tokio::sync::Mutex<Out>,
    queue: Arc<Queue>,
}

struct Out {
    writer: Writer,
    buf: BytesMut,
}

/// Batches written and not yet answered, in order.
#[derive(Default)]
struct Queue {
    waiting: Mutex<VecDeque<Waiter>>,
    broken: AtomicBool,
    /// Wakes the reader to stop.
    stop: Notify,
    /// Wakes a writer waiting for the socket, when the connection breaks.
    broke: Notify,
}

struct Waiter {
    count: usize,
    frames: Vec<Frame>,
    reply: oneshot::Sender<Result<Vec<Frame>, String>>,
    /// When the batch was queued, for the response timeout.
    since: Instant,
}

impl Queue {
    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Breaks the connection: every waiting batch fails with `why`, the reader stops.
    fn break_with(&self, why: &str) {
        self.broken.store(true, Ordering::Release);
        self.stop.notify_one();
        self.broke.notify_waiters();
        let waiting = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()));
        for waiter in waiting {
            let _ = waiter.reply.send(Err(why.to_owned()));
        }
    }

    /// Gives a reply to the oldest batch; false when no batch waits for one.
    fn answer(&self, frame: Frame) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let Some(front) = waiting.front_mut() else {
            return false;
        };
        front.frames.push(frame);
        if front.frames.len() == front.count {
            if let Some(done) = waiting.pop_front() {
                drop(waiting);
                let _ = done.reply.send(Ok(done.frames));
            }
        }
        true
    }

    /// When the oldest batch waiting started waiting.
    fn oldest(&self) -> Option<Instant> {
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        waiting.front().map(|w| w.since)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: the reader drops its half and the socket closes.
        self.queue.break_with("connection closed");
    }
}

/// Breaks the connection when a write is abandoned half done (its future dropped or
/// failed): the rest of the stream would no longer line up with the replies.
struct WriteGuard<'a>(Option<&'a Queue>);

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if let Some(queue) = self.0 {
            queue.break_with("write interrupted");
        }
    }
}

impl Conn {
    /// Connects to the upstream in `info`, speaking `proto`, and runs the handshake its URL
    /// asks for (`HELLO 3`, `AUTH`, `SELECT`), all within `connect_timeout`. With a
    /// `response_timeout`, a batch whose replies take longer breaks the connection.
    #[cfg(test)]
    pub async fn connect(
        info: &ConnectionInfo,
        proto: Proto,
        connect_timeout: Duration,
        response_timeout: Option<Duration>,
    ) -> Result<Conn, BackendError> {
        Conn::connect_with(info, None, proto, connect_timeout, response_timeout).await
    }

    /// [`Conn::connect`], with the connector a `rediss://` upstream needs.
    pub async fn connect_with(
        info: &ConnectionInfo,
        tls: Option<&tokio_rustls::TlsConnector>,
        proto: Proto,
        connect_timeout: Duration,
        response_timeout: Option<Duration>,
    ) -> Result<Conn, BackendError> {
        let (reader, writer) = tokio::time::timeout(connect_timeout, open(info.addr(), tls))
            .await
            .map_err(|_| BackendError::Unavailable("connect timed out".into()))?
            .map_err(|e| BackendError::Unavailable(e.to_string()))?;
        let queue = Arc::new(Queue::default());
        tokio::spawn(read_replies(reader, queue.clone(), response_timeout));
        let conn = Conn {
            inner: Arc::new(Inner {
                out: tokio::sync::Mutex::new(Out {
                    writer,
                    buf: BytesMut::with_capacity(READ_CHUNK),
                }),
                queue,
            }),
        };
        let handshake = handshake(info, proto);
        if !handshake.is_empty() {
            let replies = tokio::time::timeout(connect_timeout, conn.send(&handshake))
                .await
                .map_err(|_| BackendError::Unavailable("handshake timed out".into()))??;
            if let Some(Frame::Error(line)) = replies.iter().find(|f| f.is_error()) {
                return Err(BackendError::Unavailable(format!(
                    "handshake refused: {}",
                    String::from_utf8_lossy(line)
                )));
            }
        }
        Ok(conn)
    }

    /// True once the connection has failed; it never works again.
    pub fn is_broken(&self) -> bool {
        self.inner.queue.is_broken()
    }

    /// Sends a batch in one write and waits for its replies, one per call, in order.
    pub async fn send(&self, calls: &[Call]) -> Result<Vec<Frame>, BackendError> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        self.exchange(calls).await
    }

    async fn exchange(&self, calls: &[Call]) -> Result<Vec<Frame>, BackendError> {
        let queue = &self.inner.queue;
        let (tx, rx) = oneshot::channel();
        {
            let mut out = self.inner.out.lock().await;
            if queue.is_broken() {
                return Err(BackendError::Unavailable("connection lost".into()));
            }
            let out = &mut *out;
            out.buf.clear();
            for call in calls {
                call.encode(&mut out.buf);
            }
            queue
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(Waiter {
                    count: calls.len(),
                    frames: Vec::with_capacity(calls.len()),
                    reply: tx,
                    since: Instant::now(),
                });
            let mut guard = WriteGuard(Some(queue));
            let written = match out.writer.try_write(&out.buf) {
                Ok(n) => Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
                Err(e) => Err(e),
            };
            let rest = match written {
                Ok(n) => &out.buf[n..],
                Err(e) => {
                    drop(guard);
                    return Err(BackendError::Lost(e.to_string()));
                }
            };
            if !rest.is_empty() || out.writer.buffers() {
                // The upstream is not reading: wait for it, unless the connection breaks
                // meanwhile (the reader's timeout).
                let broke = queue.broke.notified();
                tokio::pin!(broke);
                broke.as_mut().enable();
                if queue.is_broken() {
                    drop(guard);
                    return Err(BackendError::Lost("connection lost".into()));
                }
                let result = tokio::select! {
                    written = out.writer.write_all(rest) => written.map_err(|e| e.to_string()),
                    () = broke => Err("timed out".to_owned()),
                };
                if let Err(why) = result {
                    drop(guard);
                    return Err(BackendError::Lost(why));
                }
            }
            guard.0 = None;
            // Large batches leave a large buffer behind; keep an ordinary one.
            if out.buf.capacity() > 4 * READ_CHUNK {
                out.buf = BytesMut::with_capacity(READ_CHUNK);
            }
        }
        match rx.await {
            Ok(Ok(frames)) => Ok(frames),
            Ok(Err(why)) => Err(BackendError::Lost(why)),
            Err(_) => Err(BackendError::Lost("connection closed".into())),
        }
    }
}

/// The commands that set a new connection up as the URL and protocol ask.
fn handshake(info: &ConnectionInfo, proto: Proto) -> Vec<Call> {
    let settings = info.redis_settings();
    let mut calls = Vec::new();
    let password = settings.password().map(|p| p.to_owned());
    let username = settings.username().unwrap_or("default").to_owned();
    match proto {
        Proto::Resp3 => {
            let mut hello = Call::named("HELLO").arg("3");
            if let Some(password) = password {
                hello = hello.arg("AUTH").arg(username).arg(password);
            }
            calls.push(hello);
        }
        Proto::Resp2 => {
            if let Some(password) = password {
                calls.push(Call::named("AUTH").arg(username).arg(password));
            }
        }
    }
    if settings.db() != 0 {
        calls.push(Call::named("SELECT").arg(settings.db().to_string()));
    }
    calls
}

async fn open(
    addr: &ConnectionAddr,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> std::io::Result<(Reader, Writer)> {
    match addr {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            ..
        } => {
            let Some(tls) = tls else {
                return Err(std::io::Error::other(
                    "no TLS settings for a rediss:// upstream",
                ));
            };
            // Boxed: a TLS handshake's state is large, and the future that connects is part
            // of every pooled send's future (boxed per request), TLS or not.
            Box::pin(open_tls(host, *port, tls)).await
        }
        ConnectionAddr::Tcp(host, port) => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            stream.set_nodelay(true)?;
            let (r, w) = stream.into_split();
            Ok((Box::new(r), Writer::Tcp(w)))
        }
        #[cfg(unix)]
        ConnectionAddr::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path).await?;
            let (r, w) = stream.into_split();
            Ok((Box::new(r), Writer::Unix(w)))
        }
        other => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("upstream address not supported: {other}"),
        )),
    }
}

async fn open_tls(
    host: &str,
    port: u16,
    tls: &tokio_rustls::TlsConnector,
) -> std::io::Result<(Reader, Writer)> {
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    let stream = tls.connect(name, stream).await?;
    let (r, w) = tokio::io::split(stream);
    Ok((Box::new(r), Writer::Tls(w)))
}

/// The connection's reader: decodes replies and hands them to the waiting batches until
/// the connection breaks or its last handle is dropped. With a `timeout`, it breaks the
/// connection when the oldest batch has waited longer.
async fn read_replies(mut reader: Reader, queue: Arc<Queue>, timeout: Option<Duration>) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut decoder = Decoder::default();
    // Armed for a timeout from now; when it fires it looks at the oldest batch, and is
    // re-armed for when that one would time out.
    let watchdog = tokio::time::sleep(timeout.unwrap_or(Duration::MAX / 4));
    tokio::pin!(watchdog);
    let why = loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            biased;
            read = reader.read_buf(&mut buf) => read,
            () = queue.stop.notified() => break "connection closed".to_owned(),
            () = &mut watchdog, if timeout.is_some() => {
                let limit = timeout.unwrap_or_default();
                let now = Instant::now();
                match queue.oldest() {
                    Some(since) if now.duration_since(since) >= limit => break "timed out".to_owned(),
                    Some(since) => watchdog.as_mut().reset((since + limit).into()),
                    None => watchdog.as_mut().reset((now + limit).into()),
                }
                continue;
            }
        };
        match read {
            Ok(0) => break "connection closed by the upstream".to_owned(),
            Ok(_) => {}
            Err(e) => break e.to_string(),
        }
        let failed = loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Frame::Push(_))) => {
                    // Out-of-band data (RESP3) answers no command.
                }
                Ok(Some(frame)) => {
                    if !queue.answer(frame) {
                        break Some("a reply no command asked for".to_owned());
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(format!("unreadable reply: {e}")),
            }
        };
        if let Some(why) = failed {
            break why;
        }
        if queue.is_broken() {
            break "connection closed".to_owned();
        }
    };
    queue.break_with(&why);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    async fn upstream() -> (TcpListener, ConnectionInfo) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let info = redis::Client::open(url)
            .unwrap()
            .get_connection_info()
            .clone();
        (listener, info)
    }

    fn get(key: &'static str) -> Call {
        Call::named("GET").arg(key)
    }

    #[tokio::test]
    async fn a_silent_upstream_breaks_the_connection_after_the_timeout() {
        let (listener, info) = upstream().await;
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            // Answers the first batch (two commands), then reads and says nothing.
            let _ = socket.read(&mut buf).await.unwrap();
            socket.write_all(b"$1\r\na\r\n$-1\r\n").await.unwrap();
            loop {
                if socket.read(&mut buf).await.unwrap_or(0) == 0 {
                    break;
                }
            }
        });
        let timeout = Duration::from_millis(200);
        let conn = Conn::connect(&info, Proto::Resp2, timeout, Some(timeout))
            .await
            .unwrap();
        let replies = conn.send(&[get("a"), get("b")]).await.unwrap();
        assert_eq!(replies, vec![Frame::bulk("a"), Frame::Null]);
        let started = Instant::now();
        let lost = tokio::time::timeout(Duration::from_secs(5), conn.send(&[get("c")]))
            .await
            .expect("the timeout ends the wait");
        assert!(matches!(lost, Err(BackendError::Lost(_))), "{lost:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(conn.is_broken());
        let later = conn.send(&[get("d")]).await;
        assert!(
            matches!(later, Err(BackendError::Unavailable(_))),
            "{later:?}"
        );
        drop(conn);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_reply_no_command_asked_for_breaks_the_connection() {
        let (listener, info) = upstream().await;
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.write_all(b"+OK\r\n").await.unwrap();
            let mut buf = vec![0u8; 64];
            while socket.read(&mut buf).await.unwrap_or(0) > 0 {}
        });
        let conn = Conn::connect(&info, Proto::Resp2, Duration::from_secs(2), None)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !conn.is_broken() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            conn.is_broken(),
            "an unasked-for reply must break the connection"
        );
    }
}
