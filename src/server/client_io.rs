//! The read side of a client connection: the bytes read and not yet parsed, and what has
//! been checked of the request they begin. The connection loop reads and parses with it; a
//! command that waits upstream (a blocking pop) watches it to learn that the client left.

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::stream::ClientRead;

use crate::protocol::request::{self, Limits, Progress, ProtocolError, Request};

/// Bytes asked for per read.
const READ_CHUNK: usize = 4096;

/// The read side of a client, with what has been read but not parsed yet.
pub struct ClientIo {
    rd: ClientRead,
    pub inbuf: BytesMut,
    /// What has been checked of the partial request in `inbuf`.
    progress: Progress,
}

impl ClientIo {
    pub fn new(rd: ClientRead) -> Self {
        ClientIo {
            rd,
            inbuf: BytesMut::new(),
            progress: Progress::default(),
        }
    }

    /// Reads more bytes; `Ok(0)` means the client closed.
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        // Small reads for idle and chatty clients; a large request grows the buffer as it
        // arrives, at least doubling it each time, so that receiving a request costs time
        // linear in its size (the buffer may be shared with slices of earlier requests,
        // where growing by a fixed step would copy it all on every read).
        if self.inbuf.capacity() - self.inbuf.len() < READ_CHUNK / 2 {
            self.inbuf.reserve(READ_CHUNK.max(self.inbuf.len()));
        }
        self.rd.read_buf(&mut self.inbuf).await
    }

    /// The next complete request, resuming where the last call stopped.
    pub fn parse(&mut self, limits: Limits) -> Result<Option<Request>, ProtocolError> {
        request::parse_resuming(&mut self.inbuf, limits, &mut self.progress)
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
