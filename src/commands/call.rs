//! A command ready for a backend: its row of the command table, resolved once, and its
//! arguments (the name first), keys already in the account's namespace.

use bytes::{Bytes, BytesMut};

use super::CommandSpec;

/// One command as the request path hands it to a backend.
#[derive(Debug, Clone)]
pub struct Call {
    spec: Option<&'static CommandSpec>,
    args: Vec<Bytes>,
}

impl Call {
    /// A client's command, with its row as the request path looked it up.
    pub fn new(spec: &'static CommandSpec, args: Vec<Bytes>) -> Call {
        Call {
            spec: Some(spec),
            args,
        }
    }

    /// One of pkv's own commands (metering bookkeeping, transactions, the ledger's
    /// scripts), by its upper-case name; arguments follow with [`Call::arg`]. A name
    /// without a row runs only upstream; so does the ledger's `EVAL`, whose row is the
    /// client's (answered by pkv itself) and is not read upstream.
    pub fn named(name: &'static str) -> Call {
        Call {
            spec: super::row(name),
            args: vec![Bytes::from_static(name.as_bytes())],
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<Bytes>) -> Call {
        self.args.push(arg.into());
        self
    }

    /// Adds an argument copied from `bytes`.
    pub fn arg_copy(self, bytes: &[u8]) -> Call {
        self.arg(Bytes::copy_from_slice(bytes))
    }

    /// The command's row, when it has one.
    pub fn spec(&self) -> Option<&'static CommandSpec> {
        self.spec
    }

    /// The arguments, the command name first.
    pub fn args(&self) -> &[Bytes] {
        &self.args
    }

    /// Appends the command as Redis reads it: an array of bulk strings.
    pub fn encode(&self, out: &mut BytesMut) {
        let size: usize = self.args.iter().map(|a| a.len() + 16).sum();
        out.reserve(size + 16);
        out.extend_from_slice(header(b'*', self.args.len()).as_slice());
        for arg in &self.args {
            out.extend_from_slice(header(b'$', arg.len()).as_slice());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// A header line (`*3\r\n`, `$5\r\n`), made on the stack.
struct Header {
    bytes: [u8; 24],
    start: usize,
}

impl Header {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

fn header(marker: u8, n: usize) -> Header {
    let mut bytes = [0u8; 24];
    bytes[22] = b'\r';
    bytes[23] = b'\n';
    let mut at = 22;
    let mut n = n;
    loop {
        at -= 1;
        bytes[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    at -= 1;
    bytes[at] = marker;
    Header { bytes, start: at }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_encode_as_arrays_of_bulk_strings() {
        let call = Call::named("PEXPIRE")
            .arg_copy(b"k")
            .arg("86400000")
            .arg("NX");
        let mut out = BytesMut::new();
        call.encode(&mut out);
        assert_eq!(
            &out[..],
            b"*4\r\n$7\r\nPEXPIRE\r\n$1\r\nk\r\n$8\r\n86400000\r\n$2\r\nNX\r\n"
        );
        assert_eq!(call.spec().map(|s| s.name), Some("PEXPIRE"));
        assert!(Call::named("FUNCTION").spec().is_none());
    }
}
