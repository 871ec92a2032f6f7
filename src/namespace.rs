//! Each account's private namespace: key and channel prefixes, and taking them off again.
//!
//! Every key a tenant names is stored upstream as `pkv:t:<account>:<key>`. The account id
//! is percent-encoded so that it never contains `:` or glob characters, which makes the
//! prefix unambiguous (no account's prefix is the start of another's) and safe to put in
//! front of a glob pattern. pkv's own records live under `pkv:ledger:`, which no prefix
//! starts with.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::frame::Frame;

use crate::commands::{ArgRole, Call, CommandSpec, KeyRule, ReplyRewrite};

/// The key prefix of every tenant namespace.
pub const TENANT_ROOT: &str = "pkv:t:";

/// An account id made safe to embed in a key: letters, digits, `-`, `_` and `.` stay,
/// every other byte becomes `%XX`.
pub fn escape_account(account: &str) -> String {
    let mut out = String::with_capacity(account.len());
    for &b in account.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One account's namespace.
#[derive(Debug, Clone)]
pub struct Namespace {
    prefix: Bytes,
}

impl Namespace {
    pub fn new(account: &str) -> Self {
        let mut prefix = BytesMut::from(TENANT_ROOT);
        prefix.put_slice(escape_account(account).as_bytes());
        prefix.put_u8(b':');
        Namespace {
            prefix: prefix.freeze(),
        }
    }

    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// `prefix + name`.
    pub fn wrap(&self, name: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(self.prefix.len() + name.len());
        out.put_slice(&self.prefix);
        out.put_slice(name);
        out.freeze()
    }

    /// A glob pattern confined to the namespace. The prefix has no glob characters by
    /// construction, so it matches itself literally.
    pub fn wrap_glob(&self, pattern: &[u8]) -> Bytes {
        self.wrap(pattern)
    }

    /// Rewrites one argument according to what it names.
    pub fn rewrite(&self, arg: &[u8], role: ArgRole) -> Bytes {
        match role {
            ArgRole::Key | ArgRole::Channel => self.wrap(arg),
            ArgRole::KeyGlob | ArgRole::ChannelGlob => self.wrap_glob(arg),
            ArgRole::SortPattern if arg == b"#" => Bytes::copy_from_slice(arg),
            ArgRole::SortPattern => self.wrap(arg),
        }
    }

    /// A request as the backend runs it: every located key, pattern and channel
    /// (`keys`, from [`crate::commands::locate`]) rewritten into the namespace, every other
    /// argument as given. Client commands and the commands scripts call both go through
    /// here.
    pub fn rewrite_call(
        &self,
        spec: &'static CommandSpec,
        args: &[Bytes],
        mut keys: Vec<(usize, ArgRole)>,
    ) -> Call {
        keys.sort_unstable_by_key(|(i, _)| *i);
        let mut keys = keys.into_iter().peekable();
        let mut out = Vec::with_capacity(args.len() + 2);
        for (i, arg) in args.iter().enumerate() {
            let mut role = None;
            while let Some(&(k, r)) = keys.peek() {
                if k > i {
                    break;
                }
                if k == i {
                    role = Some(r);
                }
                keys.next();
            }
            out.push(match role {
                Some(role) => self.rewrite(arg, role),
                None => arg.clone(),
            });
        }
        for rule in spec.keys {
            if let KeyRule::OptionalChannelPattern { at } = rule {
                if args.len() <= usize::from(*at) {
                    out.push(self.wrap_glob(b"*"));
                }
            }
        }
        Call::new(spec, out)
    }

    /// `text` with every occurrence of the prefix removed, for error messages that quote
    /// upstream names.
    pub fn strip_all(&self, text: &str) -> String {
        match std::str::from_utf8(&self.prefix) {
            Ok(prefix) => text.replace(prefix, ""),
            Err(_) => text.to_owned(),
        }
    }

    /// The client's name for an upstream key or channel, or `None` when it lies outside
    /// this namespace.
    pub fn strip<'a>(&self, name: &'a [u8]) -> Option<&'a [u8]> {
        name.strip_prefix(&self.prefix[..])
    }
}

impl Namespace {
    /// Takes the prefix off a name in a reply; a name from outside the namespace (which a
    /// correct rewrite never lets through) becomes nil rather than leak.
    fn strip_value(&self, value: Frame) -> Frame {
        match value {
            Frame::Bulk(name) if name.starts_with(&self.prefix) => {
                Frame::Bulk(name.slice(self.prefix.len()..))
            }
            Frame::Bulk(_) => Frame::Null,
            other => other,
        }
    }

    /// Strips every name of a list, dropping names from outside the namespace.
    fn strip_list(&self, items: Vec<Frame>) -> Vec<Frame> {
        items
            .into_iter()
            .map(|v| self.strip_value(v))
            .filter(|v| !matches!(v, Frame::Null))
            .collect()
    }

    /// Rewrites an upstream reply so that it names keys and channels as the client does.
    pub fn rewrite_reply(&self, kind: ReplyRewrite, value: Frame) -> Frame {
        match (kind, value) {
            (ReplyRewrite::Plain, value) => value,
            (_, Frame::Error(e)) => Frame::Error(e),
            (ReplyRewrite::Keys | ReplyRewrite::Channels, Frame::Array(items)) => {
                Frame::Array(self.strip_list(items))
            }
            (ReplyRewrite::Keys | ReplyRewrite::Channels, Frame::Set(items)) => {
                Frame::Set(self.strip_list(items))
            }
            (ReplyRewrite::FirstKey, Frame::Array(mut items)) => {
                if let Some(first) = items.first_mut() {
                    *first = self.strip_value(std::mem::take(first));
                }
                Frame::Array(items)
            }
            (ReplyRewrite::Streams, Frame::Array(items)) => Frame::Array(
                items
                    .into_iter()
                    .map(|pair| self.rewrite_reply(ReplyRewrite::FirstKey, pair))
                    .collect(),
            ),
            (ReplyRewrite::Streams | ReplyRewrite::ChannelCounts, Frame::Map(pairs)) => Frame::Map(
                pairs
                    .into_iter()
                    .map(|(k, v)| (self.strip_value(k), v))
                    .collect(),
            ),
            (ReplyRewrite::ChannelCounts, Frame::Array(items)) => Frame::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| if i % 2 == 0 { self.strip_value(v) } else { v })
                    .collect(),
            ),
            (ReplyRewrite::Flushed, _) => Frame::OK,
            (ReplyRewrite::Scan, Frame::Array(mut items)) => {
                if let Some(Frame::Array(keys)) = items.get_mut(1) {
                    *keys = self.strip_list(std::mem::take(keys));
                }
                Frame::Array(items)
            }
            (_, other) => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_unambiguous() {
        let a = Namespace::new("a");
        let ab = Namespace::new("a:b");
        assert_eq!(a.wrap(b"b:x"), Bytes::from_static(b"pkv:t:a:b:x"));
        assert_eq!(ab.wrap(b"x"), Bytes::from_static(b"pkv:t:a%3Ab:x"));
        assert_eq!(Namespace::new("*?[").prefix(), b"pkv:t:%2A%3F%5B:");
        assert_eq!(a.strip(b"pkv:t:a:k"), Some(&b"k"[..]));
        assert_eq!(a.strip(b"pkv:t:ab:k"), None);
    }

    /// On a Redis Cluster upstream a key's slot is that of its hash tag (`{...}`): a prefix
    /// without braces leaves the tenant's own tags in charge, so `{user}:a` and `{user}:b`
    /// share a slot, and no account id can choose the slot of another's keys.
    #[test]
    fn prefixes_hold_no_hash_tag() {
        for account in ["a", "{user}", "x}{y", "{", "}", "a{b}c"] {
            let ns = Namespace::new(account);
            assert!(
                !ns.prefix().contains(&b'{') && !ns.prefix().contains(&b'}'),
                "{account}: {:?}",
                String::from_utf8_lossy(ns.prefix())
            );
            use crate::upstream::cluster::slot::key_slot;
            assert_eq!(
                key_slot(&ns.wrap(b"{user}:a")),
                key_slot(&ns.wrap(b"{user}:b"))
            );
            assert_eq!(key_slot(&ns.wrap(b"{user}:a")), key_slot(b"user"));
        }
    }
}
