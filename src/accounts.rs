//! `pkv accounts top`: the accounts that spent the most, read from the ledger.
//!
//! Per-account figures have no place in `/metrics` (a label per account would grow with the
//! customers), so an operator asks the ledger. The walk is bounded: account records are
//! read a page at a time (SCAN in a Redis ledger, a shard at a time in the embedded store)
//! and only the `limit` biggest spenders are kept, in a heap; a million accounts cost a
//! page and the heap, never a million records at once.
//!
//! A Redis ledger (`PKV_LEDGER_URL`, else `PKV_UPSTREAM_URL`) is read directly, pkv running
//! or not. The embedded store's ledger lives in the pkv process (its data file is only as
//! fresh as the last snapshot and holds every tenant's data besides), so it is asked of the
//! running pkv, on its metrics endpoint (`/accounts/top`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use crate::backend::Backend;
use crate::commands::Call;
use crate::meter::ledger::{format_nanos, LedgerError};
use crate::protocol::frame::Frame;
use crate::protocol::Proto;
use crate::upstream::book::Layout;
use crate::upstream::Upstream;

/// The key prefix of account records in the ledger (see [`crate::meter::ledger`]).
pub const ACCOUNT_PREFIX: &str = "pkv:ledger:acct:";

/// Accounts listed when no `--limit` is given.
pub const DEFAULT_LIMIT: usize = 10;

/// The most accounts one listing holds.
pub const MAX_LIMIT: usize = 100_000;

/// `pkv accounts top --limit N`: prints the biggest spenders of the ledger `settings`
/// name; returns the exit code.
pub fn run_top(settings: &crate::config::Settings, limit: usize) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pkv: cannot start the runtime: {e}");
            return 1;
        }
    };
    let limit = limit.min(MAX_LIMIT);
    let ledger = settings
        .ledger_url
        .as_ref()
        .or(settings.upstream_url.as_ref());
    let listed = runtime.block_on(async {
        match (ledger, settings.metrics_listen) {
            (Some(url), _) => top_in_redis(url, limit, settings.upstream_timeout)
                .await
                .map(|top| table(&top)),
            (None, Some(addr)) => top_from_endpoint(addr, limit).await,
            (None, None) => Err("the embedded store's ledger is read from the running pkv: \
                set PKV_METRICS_LISTEN to its metrics address (or PKV_LEDGER_URL / \
                PKV_UPSTREAM_URL for a Redis ledger)"
                .into()),
        }
    });
    match listed {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(why) => {
            eprintln!("pkv: accounts top: {why}");
            1
        }
    }
}

/// Records asked for per SCAN step.
const PAGE: usize = 1000;

/// One account's totals, in nano-units.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Spender {
    pub spent: i64,
    pub account: String,
    /// What is left: credited less debited (leases held by running pkv processes count as
    /// debited until they are settled or given back).
    pub balance: i64,
}

/// The `limit` biggest spenders seen so far.
pub struct Top {
    limit: usize,
    heap: BinaryHeap<Reverse<Spender>>,
}

impl Top {
    pub fn new(limit: usize) -> Self {
        Top {
            limit,
            heap: BinaryHeap::with_capacity(limit.min(1 << 16) + 1),
        }
    }

    pub fn offer(&mut self, spender: Spender) {
        if self.limit == 0 {
            return;
        }
        if self.heap.len() < self.limit {
            self.heap.push(Reverse(spender));
        } else if self
            .heap
            .peek()
            .is_some_and(|Reverse(least)| spender > *least)
        {
            self.heap.pop();
            self.heap.push(Reverse(spender));
        }
    }

    /// Biggest spender first (ties by account id).
    pub fn into_sorted(self) -> Vec<Spender> {
        let mut all: Vec<Spender> = self.heap.into_iter().map(|Reverse(s)| s).collect();
        all.sort_by(|a, b| {
            b.spent
                .cmp(&a.spent)
                .then_with(|| a.account.cmp(&b.account))
        });
        all
    }
}

/// The account id a record key was made from (`%XX` escapes undone).
pub fn account_of(key: &[u8]) -> Option<String> {
    let escaped = match key.strip_prefix(ACCOUNT_PREFIX.as_bytes()) {
        Some(escaped) => escaped,
        // A cluster's account record: `pkv:ledger:{<account>}:acct`, the account escaped
        // (no `}` nor `:`), which a credit mark whose token id ends in `}:acct` is not.
        None => key
            .strip_prefix(b"pkv:ledger:{")?
            .strip_suffix(b"}:acct")
            .filter(|escaped| !escaped.iter().any(|b| matches!(b, b'}' | b':')))?,
    };
    let mut out = Vec::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        if escaped[i] == b'%' {
            let hex = escaped.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(escaped[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A spender from an account record's `credited`, `debited` and `spent` fields.
pub fn spender(account: String, credited: i64, debited: i64, spent: i64) -> Spender {
    Spender {
        spent,
        account,
        balance: credited.saturating_sub(debited),
    }
}

fn number(value: Option<&Frame>) -> i64 {
    match value {
        Some(Frame::Bulk(b)) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        Some(Frame::Integer(n)) => *n,
        _ => 0,
    }
}

fn bad(e: LedgerError) -> String {
    match e {
        LedgerError::Backend(e) => crate::metrics::health::why(&e),
        LedgerError::Bad(line) => line,
        LedgerError::Overflow => "overflow".to_owned(),
    }
}

/// The biggest spenders of the ledger in the Redis at `url`: SCAN over account records a
/// page at a time, each page's totals read in one pipeline.
pub async fn top_in_redis(
    url: &str,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<Spender>, String> {
    if crate::upstream::cluster::is_cluster_url(url) {
        // The ledger in the cluster upstream, each account record in its own slot.
        let cluster = crate::upstream::cluster::Cluster::new(url, 1, timeout)?;
        cluster.refresh().await?;
        return top_in(&cluster, Layout::Cluster, limit).await;
    }
    let redis = Upstream::new(url, 1, timeout).map_err(|e| e.to_string())?;
    top_in(&redis, Layout::Plain, limit).await
}

/// [`top_in_redis`] over connections already made.
pub async fn top_in(
    redis: &dyn Backend,
    layout: Layout,
    limit: usize,
) -> Result<Vec<Spender>, String> {
    let send = |calls: Vec<Call>| async move {
        redis
            .pipeline(Proto::Resp2, &calls)
            .await
            .map_err(|e| bad(e.into()))
    };
    let mut top = Top::new(limit);
    let mut cursor = b"0".to_vec();
    loop {
        let scan = Call::named("SCAN")
            .arg(cursor.clone())
            .arg("MATCH")
            .arg(layout.accounts_pattern())
            .arg("COUNT")
            .arg(PAGE.to_string());
        let reply = send(vec![scan]).await?;
        let (next, keys) = match reply.into_iter().next() {
            Some(Frame::Array(mut parts)) if parts.len() == 2 => {
                let keys = parts.pop();
                let next = parts.pop();
                match (next, keys) {
                    (Some(Frame::Bulk(next)), Some(Frame::Array(keys))) => (next, keys),
                    _ => return Err("unexpected SCAN reply".into()),
                }
            }
            Some(Frame::Error(line)) => return Err(String::from_utf8_lossy(&line).into_owned()),
            _ => return Err("unexpected SCAN reply".into()),
        };
        let keys: Vec<bytes::Bytes> = keys
            .into_iter()
            .filter_map(|k| match k {
                Frame::Bulk(k) => Some(k),
                _ => None,
            })
            .collect();
        if !keys.is_empty() {
            let reads = keys
                .iter()
                .map(|k| {
                    Call::named("HMGET")
                        .arg(k.clone())
                        .arg("credited")
                        .arg("debited")
                        .arg("spent")
                })
                .collect();
            let totals = send(reads).await?;
            for (key, record) in keys.iter().zip(totals) {
                let (Some(account), Frame::Array(f)) = (account_of(key), record) else {
                    continue;
                };
                top.offer(spender(
                    account,
                    number(f.first()),
                    number(f.get(1)),
                    number(f.get(2)),
                ));
            }
        }
        if &next[..] == b"0" {
            break;
        }
        cursor = next.to_vec();
    }
    Ok(top.into_sorted())
}

/// The biggest spenders of the embedded store's ledger, a shard at a time (each shard's
/// lock is held while it is read).
pub fn top_in_store(store: &crate::embedded::Store, limit: usize) -> Vec<Spender> {
    use crate::embedded::data::Data;
    let now = crate::embedded::now_ms();
    let mut top = Top::new(limit);
    for i in 0..crate::embedded::keyspace::SHARDS {
        let shard = store.keys.read_shard(i);
        for (key, entry) in shard.iter() {
            let (Some(account), false) = (account_of(key), entry.expired(now)) else {
                continue;
            };
            let Data::Hash(fields) = &entry.data else {
                continue;
            };
            let field = |name: &str| -> i64 {
                fields
                    .get(name.as_bytes())
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                    .unwrap_or(0)
            };
            top.offer(spender(
                account,
                field("credited"),
                field("debited"),
                field("spent"),
            ));
        }
    }
    top.into_sorted()
}

/// The table `pkv accounts top` prints: a header, then one tab-separated line per account.
pub fn table(spenders: &[Spender]) -> String {
    let mut out = String::from("account\tspent\tbalance\n");
    for s in spenders {
        out.push_str(&format!(
            "{}\t{}\t{}\n",
            s.account,
            format_nanos(s.spent),
            format_nanos(s.balance)
        ));
    }
    out
}

/// Asks the running pkv whose metrics endpoint is at `addr` (`/accounts/top`), for the
/// embedded store's ledger.
pub async fn top_from_endpoint(addr: std::net::SocketAddr, limit: usize) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let talk = async {
        let mut socket = tokio::net::TcpStream::connect(addr).await?;
        let request = format!(
            "GET /accounts/top?limit={limit} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
        );
        socket.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        socket.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(30), talk)
        .await
        .map_err(|_| format!("no answer from {addr} in time"))?
        .map_err(|e| format!("cannot ask {addr}: {e}"))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("a malformed answer from {addr}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "{addr} answered {}",
            head.lines().next().unwrap_or("")
        ));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(account: &str, spent: i64) -> Spender {
        spender(account.into(), 100, 0, spent)
    }

    #[test]
    fn the_heap_keeps_the_biggest_spenders_in_order() {
        let mut top = Top::new(2);
        for (a, n) in [("a", 5), ("b", 9), ("c", 1), ("d", 7), ("e", 9)] {
            top.offer(s(a, n));
        }
        let names: Vec<_> = top.into_sorted().into_iter().map(|s| s.account).collect();
        assert_eq!(names, ["b", "e"]);
    }

    #[test]
    fn record_keys_give_back_the_account() {
        assert_eq!(
            account_of(b"pkv:ledger:acct:alice").as_deref(),
            Some("alice")
        );
        assert_eq!(
            account_of(b"pkv:ledger:acct:did%3Akey%3Az6M").as_deref(),
            Some("did:key:z6M")
        );
        let escaped = crate::namespace::escape_account("a b/é");
        let key = format!("{ACCOUNT_PREFIX}{escaped}");
        assert_eq!(account_of(key.as_bytes()).as_deref(), Some("a b/é"));
        assert_eq!(account_of(b"pkv:ledger:jti:x"), None);
        // The cluster layout's records of an account (see `upstream::book::Layout`).
        let key = crate::upstream::book::Layout::Cluster.account_key("a b/é");
        assert_eq!(account_of(key.as_bytes()).as_deref(), Some("a b/é"));
        assert_eq!(account_of(b"pkv:ledger:{alice}:upd:w1"), None);
        assert_eq!(account_of(b"pkv:ledger:{alice}:jti:x"), None);
        assert_eq!(account_of(b"pkv:ledger:jti:{x}"), None);
        assert_eq!(account_of(b"pkv:ledger:{alice}:jti:x}:acct"), None);
    }
}
