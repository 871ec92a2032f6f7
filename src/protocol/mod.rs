//! The client-facing wire protocol: requests in, replies out.
//!
//! [`request`] turns bytes from a client into argument lists, enforcing size limits at the
//! header, before anything is allocated. [`frame`] is pkv's own RESP value and the decoder
//! of upstream replies; [`reply`] writes frames and pkv's own replies in RESP2 or RESP3.

pub mod frame;
pub mod reply;
pub mod request;

/// The RESP version a client speaks; `HELLO 3` switches to RESP3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Resp2,
    Resp3,
}
