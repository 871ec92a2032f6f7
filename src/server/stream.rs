//! A client's socket, plain TCP or TLS, as the two halves a connection reads and writes.
//!
//! Enums rather than generics or boxes: the request path stays one compiled copy, and the
//! plain path pays one predictable branch per read or write. TLS is split with
//! `tokio::io::split` (a lock taken per call, never contended: one task uses both halves).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A client's socket before it is split.
pub enum ClientStream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl ClientStream {
    pub fn split(self) -> (ClientRead, ClientWrite) {
        match self {
            ClientStream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ClientRead::Tcp(r), ClientWrite::Tcp(w))
            }
            ClientStream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (ClientRead::Tls(r), ClientWrite::Tls(w))
            }
        }
    }
}

/// The read half of a client's socket.
pub enum ClientRead {
    Tcp(OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

impl AsyncRead for ClientRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientRead::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            ClientRead::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

/// The write half of a client's socket.
pub enum ClientWrite {
    Tcp(OwnedWriteHalf),
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

impl ClientWrite {
    /// Writes what the socket takes now, without waiting; `WouldBlock` when it takes
    /// nothing. Over TLS, bytes taken may still sit in the TLS buffer: see
    /// [`ClientWrite::buffers`].
    pub fn try_write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            ClientWrite::Tcp(w) => w.try_write(bytes),
            ClientWrite::Tls(w) => {
                let mut cx = Context::from_waker(Waker::noop());
                let n = match Pin::new(&mut *w).poll_write(&mut cx, bytes) {
                    Poll::Ready(result) => result?,
                    Poll::Pending => return Err(io::ErrorKind::WouldBlock.into()),
                };
                // Sends what the socket takes of the records; the rest waits for a flush.
                let _ = Pin::new(w).poll_flush(&mut cx);
                Ok(n)
            }
        }
    }

    /// True when written bytes may wait in a buffer of pkv's until [`ClientWrite::write_all`]
    /// flushes them (TLS), so a write that was taken whole must still be finished.
    pub fn buffers(&self) -> bool {
        matches!(self, ClientWrite::Tls(_))
    }

    /// Writes all of `bytes` and, over TLS, flushes them to the socket.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            ClientWrite::Tcp(w) => w.write_all(bytes).await,
            ClientWrite::Tls(w) => {
                w.write_all(bytes).await?;
                w.flush().await
            }
        }
    }
}
