//! Keyspace commands Redis would answer for the whole database, confined to the account's
//! namespace: SCAN, RANDOMKEY, DBSIZE, FLUSHDB/FLUSHALL.

use bytes::{Bytes, BytesMut};

use crate::commands::{Call, Local, ReplyRewrite};
use crate::error::ClientError;
use crate::protocol::frame::Frame;
use crate::server::session::Session;

/// Keys asked for per SCAN step when pkv walks a namespace.
const SCAN_STEP: usize = 1000;

impl Session {
    /// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`, confined to the namespace: the
    /// pattern (or `*`) is put behind the prefix, and the prefix is taken off the keys.
    pub(super) async fn scan(&mut self, args: &[Bytes], out: &mut BytesMut) {
        let Some(ns) = self.ns().cloned() else { return };
        let mut pattern: &[u8] = b"*";
        let mut rest = Vec::new();
        let mut i = 2;
        while i < args.len() {
            if i + 1 >= args.len() {
                return self.reject(ClientError::Syntax, out);
            }
            if args[i].eq_ignore_ascii_case(b"MATCH") {
                pattern = &args[i + 1];
            } else if args[i].eq_ignore_ascii_case(b"COUNT")
                || args[i].eq_ignore_ascii_case(b"TYPE")
            {
                rest.push(args[i].clone());
                rest.push(args[i + 1].clone());
            } else {
                return self.reject(ClientError::Syntax, out);
            }
            i += 2;
        }
        let mut call = Call::named("SCAN")
            .arg(args[1].clone())
            .arg("MATCH")
            .arg(ns.wrap_glob(pattern));
        for arg in rest {
            call = call.arg(arg);
        }
        self.enqueue_plain(call, ReplyRewrite::Scan, out).await;
    }

    /// RANDOMKEY, DBSIZE and FLUSHDB/FLUSHALL, emulated by walking the namespace with SCAN:
    /// Redis's own versions would see every tenant's keys.
    pub(super) async fn walk_namespace(&mut self, local: Local, out: &mut BytesMut) {
        let Some(ns) = self.ns().cloned() else { return };
        let glob = ns.wrap_glob(b"*");
        let mut cursor = Bytes::from_static(b"0");
        let mut count: i64 = 0;
        loop {
            let scan = [Call::named("SCAN")
                .arg(cursor.clone())
                .arg("MATCH")
                .arg(glob.clone())
                .arg("COUNT")
                .arg(SCAN_STEP.to_string())];
            let page = match self.shared.backend.pipeline(self.proto, &scan).await {
                Ok(mut v) => v.pop(),
                Err(e) => return self.error_reply(e, out),
            };
            if let Some(error @ Frame::Error(_)) = page {
                // Refused by the backend (a Redis Cluster upstream, this release).
                return self.write_upstream(out, ReplyRewrite::Plain, error);
            }
            let Some(Frame::Array(mut parts)) = page else {
                return self.error_reply(ClientError::BadScanReply, out);
            };
            let keys = match parts.pop() {
                Some(Frame::Array(keys)) => keys,
                _ => Vec::new(),
            };
            cursor = match parts.pop() {
                Some(Frame::Bulk(c)) => c,
                _ => Bytes::from_static(b"0"),
            };
            match local {
                Local::RandomKey if !keys.is_empty() => {
                    let mut pick = [0u8; 8];
                    let _ = getrandom::fill(&mut pick);
                    let key = &keys[(u64::from_le_bytes(pick) % keys.len() as u64) as usize];
                    let value =
                        ns.rewrite_reply(ReplyRewrite::Keys, Frame::Array(vec![key.clone()]));
                    let name = match value {
                        Frame::Array(mut v) => v.pop().unwrap_or_default(),
                        _ => Frame::Null,
                    };
                    return self.write_upstream(out, ReplyRewrite::Plain, name);
                }
                Local::FlushDb if !keys.is_empty() => {
                    // One UNLINK per key: on a Redis Cluster upstream a page's keys are in
                    // many slots, and one command may name keys of one slot only.
                    let unlink: Vec<Call> = keys
                        .iter()
                        .filter_map(|key| match key {
                            Frame::Bulk(k) => Some(Call::named("UNLINK").arg(k.clone())),
                            _ => None,
                        })
                        .collect();
                    if let Err(e) = self.shared.backend.pipeline(self.proto, &unlink).await {
                        return self.error_reply(e, out);
                    }
                }
                _ => {}
            }
            count += keys.len() as i64;
            if cursor[..] == b"0"[..] {
                break;
            }
        }
        match local {
            Local::DbSize => self.reply(out, |w| w.int(count)),
            Local::FlushDb => self.reply(out, |w| w.ok()),
            _ => self.reply(out, |w| w.null()),
        }
    }
}
