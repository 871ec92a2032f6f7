//! The ledger in a Redis: the upstream, or a Redis of its own (`PKV_LEDGER_URL`).
//! Redemption, leases and settlements are Lua scripts, each one atomic step.

use std::sync::Arc;

use super::Upstream;
use crate::backend::BoxFuture;
use crate::commands::Call;
use crate::meter::ledger::{
    account_key, token_key, AccountRecord, Book, Grant, LeaseRequest, LedgerError, RedeemedBy,
    Redemption, Settlement, ACCOUNT_FIELDS, DEFAULT_TTL_FIELD, MAX_LEASE, UPDATES_KEPT_SECS,
};
use crate::namespace::escape_account;
use crate::protocol::frame::Frame;
use crate::protocol::Proto;

/// Credits an account and claims a token id, or returns the record of the first claim.
/// KEYS[1] = token record, KEYS[2] = account record; ARGV = token record value (see
/// [`RedeemedBy::record`]), nanos, expire-at.
/// The credit comes first: if it fails (the balance would overflow), the script stops
/// before anything is written, and the token stays unredeemed.
const REDEEM_SCRIPT: &str = r#"
local owner = redis.call('GET', KEYS[1])
if owner then
  return owner
end
redis.call('HINCRBY', KEYS[2], 'credited', ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[3])
return 1
"#;

/// Takes a lease of up to `want`, once per update number.
/// KEYS[1] = account record, KEYS[2] = this process's updates record for the account;
/// ARGV = seq, want, seconds to keep the updates record.
/// Returns {granted, available after the grant}; a repeated seq returns what it was granted
/// the first time and an empty available amount (not known then).
/// Amounts are decimal strings split into two exact halves (above and below 10^9), so the
/// comparison is exact for any int64 balance; `want` is below 2^53 ([`MAX_LEASE`]).
const LEASE_SCRIPT: &str = r#"
local last = redis.call('HGET', KEYS[2], 'lease')
if last and tonumber(last) >= tonumber(ARGV[1]) then
  if tonumber(last) == tonumber(ARGV[1]) then
    return {redis.call('HGET', KEYS[2], 'granted') or '0', ''}
  end
  return {'0', ''}
end
local function split(s)
  s = s or '0'
  local sign = 1
  if string.sub(s, 1, 1) == '-' then
    sign = -1
    s = string.sub(s, 2)
  end
  return sign * (tonumber(string.sub(s, 1, -10)) or 0), sign * (tonumber(string.sub(s, -9)) or 0)
end
local ch, cl = split(redis.call('HGET', KEYS[1], 'credited'))
local dh, dl = split(redis.call('HGET', KEYS[1], 'debited'))
local available = (ch - dh) * 1000000000 + (cl - dl)
local want = tonumber(ARGV[2])
local granted = '0'
if available >= want then
  granted = ARGV[2]
elseif available > 0 then
  granted = string.format('%d', available)
end
if granted ~= '0' then
  redis.call('HINCRBY', KEYS[1], 'debited', granted)
end
redis.call('HSET', KEYS[2], 'lease', ARGV[1], 'granted', granted)
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {granted, string.format('%.0f', available - tonumber(granted))}
"#;

/// Applies a settlement's deltas, once per update number.
/// KEYS[1] = account record, KEYS[2] = this process's updates record for the account;
/// ARGV = seq, seconds to keep the updates record, then field, delta pairs.
/// Returns 1 when applied now, 0 when that number (or a later one) was applied before.
const SETTLE_SCRIPT: &str = r#"
local last = redis.call('HGET', KEYS[2], 'settle')
if last and tonumber(last) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[2], 'settle', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
"#;

/// The ledger in a Redis (the upstream, or the ledger's own): redemption, leases and
/// settlements are Lua scripts.
///
/// Leases and settlements record their update number in `pkv:ledger:upd:<writer>:<account>`,
/// where `writer` is a random id of this process: one small hash per process and account,
/// kept [`UPDATES_KEPT_SECS`] after its last update.
pub struct RedisBook {
    upstream: Arc<Upstream>,
    /// This process among all that share the upstream.
    writer: String,
}

impl RedisBook {
    pub fn new(upstream: Arc<Upstream>) -> Self {
        RedisBook {
            upstream,
            writer: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// Where this process's last update numbers for `account` are kept.
    fn updates_key(&self, account: &str) -> String {
        format!("pkv:ledger:upd:{}:{}", self.writer, escape_account(account))
    }

    async fn one(&self, cmd: Call) -> Result<Frame, LedgerError> {
        let mut values = self.upstream.send(Proto::Resp2, &[cmd]).await?;
        match values.pop() {
            Some(Frame::Error(line)) => Err(LedgerError::Bad(
                String::from_utf8_lossy(&line).into_owned(),
            )),
            Some(v) => Ok(v),
            None => Err(LedgerError::Bad("no reply".into())),
        }
    }

    async fn redeem_script(
        &self,
        jti: &str,
        account: &str,
        nanos: i64,
        expire_at: i64,
        by: RedeemedBy,
    ) -> Result<Redemption, LedgerError> {
        let cmd = Call::named("EVAL")
            .arg(REDEEM_SCRIPT)
            .arg("2")
            .arg(token_key(jti))
            .arg(account_key(account))
            .arg(by.record(account))
            .arg(nanos.to_string())
            .arg(expire_at.to_string());
        match self.one(cmd).await? {
            Frame::Integer(1) => Ok(Redemption::Credited),
            Frame::Bulk(record) => Ok(Redemption::AlreadyRedeemed {
                by: RedeemedBy::of_record(&record),
            }),
            other => Err(LedgerError::Bad(format!(
                "unexpected redeem reply {other:?}"
            ))),
        }
    }

    async fn read_account(&self, account: &str) -> Result<AccountRecord, LedgerError> {
        let mut cmd = Call::named("HMGET").arg(account_key(account));
        for field in ACCOUNT_FIELDS {
            cmd = cmd.arg(field);
        }
        let field = |v: Option<&Frame>| -> i64 {
            match v {
                Some(Frame::Bulk(b)) => std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                _ => 0,
            }
        };
        match self.one(cmd).await? {
            Frame::Array(items) => {
                let f = |i: usize| field(items.get(i));
                let u = |i: usize| f(i).max(0) as u64;
                Ok(AccountRecord {
                    credited: f(0),
                    debited: f(1),
                    spent: f(2),
                    usage: crate::meter::price::Usage {
                        ops: u(3),
                        bytes_in: u(4),
                        bytes_out: u(5),
                        byte_seconds: u(6),
                        time_us: u(7),
                    },
                    default_ttl: u(8),
                })
            }
            other => Err(LedgerError::Bad(format!(
                "unexpected account reply {other:?}"
            ))),
        }
    }

    async fn lease_script(&self, account: &str, req: &LeaseRequest) -> Result<Grant, LedgerError> {
        let cmd = Call::named("EVAL")
            .arg(LEASE_SCRIPT)
            .arg("2")
            .arg(account_key(account))
            .arg(self.updates_key(account))
            .arg(req.seq.to_string())
            .arg(req.want.clamp(0, MAX_LEASE).to_string())
            .arg(UPDATES_KEPT_SECS.to_string());
        match self.one(cmd).await? {
            Frame::Array(items) => {
                let available = match items.get(1) {
                    Some(Frame::Bulk(b)) => {
                        std::str::from_utf8(b).ok().and_then(|s| s.parse().ok())
                    }
                    _ => None,
                };
                Ok(Grant {
                    granted: int_of(items.first()),
                    available,
                })
            }
            other => Err(LedgerError::Bad(format!(
                "unexpected lease reply {other:?}"
            ))),
        }
    }

    async fn settle_script(&self, account: &str, s: &Settlement) -> Result<(), LedgerError> {
        if s.is_empty() {
            return Ok(());
        }
        let mut cmd = Call::named("EVAL")
            .arg(SETTLE_SCRIPT)
            .arg("2")
            .arg(account_key(account))
            .arg(self.updates_key(account))
            .arg(s.seq.to_string())
            .arg(UPDATES_KEPT_SECS.to_string());
        for (field, delta) in s.deltas() {
            cmd = cmd.arg(field).arg(delta.to_string());
        }
        // 1: applied now; 0: applied by an earlier attempt whose answer was lost.
        match self.one(cmd).await? {
            Frame::Integer(0 | 1) => Ok(()),
            other => Err(LedgerError::Bad(format!(
                "unexpected settlement reply {other:?}"
            ))),
        }
    }
}

impl Book for RedisBook {
    fn redeem<'a>(
        &'a self,
        jti: &'a str,
        account: &'a str,
        nanos: i64,
        expire_at: i64,
        by: RedeemedBy,
    ) -> BoxFuture<'a, Result<Redemption, LedgerError>> {
        Box::pin(self.redeem_script(jti, account, nanos, expire_at, by))
    }

    fn account<'a>(
        &'a self,
        account: &'a str,
    ) -> BoxFuture<'a, Result<AccountRecord, LedgerError>> {
        Box::pin(self.read_account(account))
    }

    fn lease<'a>(
        &'a self,
        account: &'a str,
        req: &'a LeaseRequest,
    ) -> BoxFuture<'a, Result<Grant, LedgerError>> {
        Box::pin(self.lease_script(account, req))
    }

    fn settle<'a>(
        &'a self,
        account: &'a str,
        s: &'a Settlement,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(self.settle_script(account, s))
    }

    fn set_default_ttl<'a>(
        &'a self,
        account: &'a str,
        secs: u64,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        let key = account_key(account);
        let cmd = if secs == 0 {
            Call::named("HDEL").arg(key).arg(DEFAULT_TTL_FIELD)
        } else {
            Call::named("HSET")
                .arg(key)
                .arg(DEFAULT_TTL_FIELD)
                .arg(secs.to_string())
        };
        Box::pin(async move { self.one(cmd).await.map(drop) })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), LedgerError>> {
        Box::pin(async move {
            // A key of the ledger's own, under its prefix, that expires by itself.
            let cmd = Call::named("SET")
                .arg(HEALTH_KEY)
                .arg(crate::auth::now_secs().to_string())
                .arg("EX")
                .arg("60");
            self.one(cmd).await.map(|_| ())
        })
    }

    fn top(&self, limit: usize) -> BoxFuture<'_, Result<Vec<crate::accounts::Spender>, String>> {
        Box::pin(crate::accounts::top_in(&self.upstream, limit))
    }
}

/// The key `/readyz` writes to check that the ledger takes writes.
pub const HEALTH_KEY: &str = "pkv:ledger:health";

/// An integer reply (or a bulk string holding one); 0 for nil.
fn int_of(value: Option<&Frame>) -> i64 {
    match value {
        Some(Frame::Integer(n)) => *n,
        Some(Frame::Bulk(b)) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}
