//! The ledger in the embedded store: the same records as in Redis (a hash per account, a
//! string per redeemed token id, under `pkv:ledger:`), changed under the store's ledger lock,
//! so each step is atomic. No tenant command, script or keyspace walk can reach
//! `pkv:ledger:` keys (no namespace prefix does), so only other steps need keeping out,
//! which the ledger lock does. A step still holds the gate stripes of the keys it changes
//! shared ([`super::gate`]), as a single-key write does: a stripe held exclusively means a
//! multi-key command may hold a lock of its keys' shards, which the step would wait for
//! (in place, a runtime worker thread would); with the stripes taken first, it waits for
//! them on the blocking pool without holding the ledger lock, so other steps go on. It
//! holds no other stripe: a lease waits for another tenant's long multi-key command only
//! when a key of the step shares a stripe with one of its keys. A snapshot walking the
//! shards meanwhile may see a step half done; the step's log record comes after the
//! position the snapshot cuts the log at, so replay completes it.
//!
//! Each step runs whole or not at all and its answer cannot be lost on the way back (there
//! is no way back: it runs in this process), so the update numbers that make leases and
//! settlements in Redis exactly-once have nothing to guard against here and are not kept.
//! That holds only if a step that was applied is never answered as lost, even when the
//! append-only log fails under it (see [`Store::alone`]).

use std::collections::HashMap;
use std::sync::TryLockError;

use super::data::{Data, Entry};
use super::gate::{Mode, Stripes};
use super::{now_ms, off_thread, Store};
use crate::backend::{BackendError, BoxFuture};
use crate::meter::ledger::{
    account_key, token_key, AccountRecord, Book, Grant, LeaseRequest, LedgerError, RedeemedBy,
    Redemption, Settlement, ACCOUNT_FIELDS, DEFAULT_TTL_FIELD,
};
use crate::meter::price::Usage;

impl Store {
    /// Runs `f`, which changes only keys of `stripes` ([`Store::ledger_stripes`]), with no
    /// other ledger step running. A ledger step is short, so it runs in place when the
    /// locks are free; when they are not, the step waits on the blocking pool, never on a
    /// runtime worker thread.
    async fn alone<R: Send + 'static>(
        &self,
        stripes: Stripes,
        f: impl FnOnce(&Store) -> Result<R, LedgerError> + Send + 'static,
    ) -> Result<R, LedgerError> {
        if let Some(why) = self.aof().and_then(super::aof::Aof::failure) {
            return Err(LedgerError::Backend(BackendError::Unavailable(format!(
                "the append-only log cannot be written: {why}"
            ))));
        }
        let done = match self.try_alone(stripes, f) {
            Ok(done) => done,
            Err(f) => {
                let store = self.clone();
                off_thread(move || {
                    let _shared = store.gate.hold(stripes, Mode::Shared);
                    let _alone = store.ledger.lock().unwrap_or_else(|p| p.into_inner());
                    f(&store)
                })
                .await?
            }
        }?;
        // Whatever the fsync policy, a ledger step is on disk before it is answered.
        // When the log fails just now, the step is applied all the same: it is in memory
        // and its record waits in the log's buffer, written once the disk has room. So it is
        // answered as done: an answer of "lost" would have the meter send it again, and a
        // second settlement would count the same spending twice. Until the log is written,
        // a crash loses the step with everything after it, as kill -9 loses a lease.
        if let Some(aof) = self.aof() {
            if let Err(why) = aof.wait_synced().await {
                tracing::warn!(
                    "a ledger step is applied but not yet on disk: the append-only log cannot be written: {why}"
                );
            }
        }
        Ok(done)
    }

    /// The gate stripes of the ledger keys a step changes.
    fn ledger_stripes(&self, keys: &[&str]) -> Stripes {
        keys.iter().fold(Stripes::NONE, |set, key| {
            set.with(self.stripe_of(key.as_bytes()))
        })
    }

    /// Runs `f` in place if the locks are free; gives `f` back if they are not.
    fn try_alone<R, F: FnOnce(&Store) -> R>(&self, stripes: Stripes, f: F) -> Result<R, F> {
        let Some(_shared) = self.gate.try_shared(stripes) else {
            return Err(f);
        };
        let _alone = match self.ledger.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(f),
        };
        Ok(f(self))
    }

    /// The integer fields of an account record.
    fn fields(&self, key: &str) -> Result<HashMap<String, i64>, LedgerError> {
        self.keys.read(key.as_bytes(), now_ms(), |entry| {
            match entry.map(|e| &e.data) {
                None => Ok(HashMap::new()),
                Some(Data::Hash(h)) => Ok(h
                    .iter()
                    .filter_map(|(f, v)| {
                        let field = String::from_utf8(f.clone()).ok()?;
                        let value = std::str::from_utf8(v).ok()?.parse().ok()?;
                        Some((field, value))
                    })
                    .collect()),
                Some(_) => Err(LedgerError::Bad(format!("{key} is not a hash"))),
            }
        })
    }

    /// Adds each delta to its field of the account record, all or none.
    fn add(&self, key: &str, deltas: &[(&str, i64)]) -> Result<(), LedgerError> {
        let current = self.fields(key)?;
        let mut updated = Vec::with_capacity(deltas.len());
        for (field, delta) in deltas {
            let value = current
                .get(*field)
                .copied()
                .unwrap_or(0)
                .checked_add(*delta)
                .ok_or(LedgerError::Overflow)?;
            updated.push((field.as_bytes().to_vec(), value.to_string().into_bytes()));
        }
        self.keys.write(key.as_bytes(), now_ms(), |entry| {
            let entry = entry.get_or_insert_with(|| Entry::new(Data::Hash(HashMap::new())));
            if let Data::Hash(h) = &mut entry.data {
                h.extend(updated);
            }
        });
        Ok(())
    }
}

impl Book for Store {
    fn redeem<'a>(
        &'a self,
        jti: &'a str,
        account: &'a str,
        nanos: i64,
        expire_at: i64,
        by: RedeemedBy,
    ) -> BoxFuture<'a, Result<Redemption, LedgerError>> {
        let (jti, account) = (jti.to_owned(), account.to_owned());
        let stripes = self.ledger_stripes(&[&token_key(&jti), &account_key(&account)]);
        Box::pin(self.alone(stripes, move |store| {
            let token = token_key(&jti);
            let first = store.keys.read(token.as_bytes(), now_ms(), |e| match e {
                Some(Entry {
                    data: Data::Str(record),
                    ..
                }) => Some(RedeemedBy::of_record(record)),
                _ => None,
            });
            if let Some(first) = first {
                return Ok(Redemption::AlreadyRedeemed { by: first });
            }
            // Credit first: if it fails, the token stays unredeemed.
            let key = account_key(&account);
            store.add(&key, &[("credited", nanos)])?;
            let mut record = Entry::new(Data::Str(by.record(&account).into_bytes()));
            record.expires_at = Some(expire_at.saturating_mul(1000));
            store.keys.insert(token.as_bytes(), record);
            // One record: a crash keeps both or neither, never a credit whose token id
            // could be redeemed again.
            store.log_keys_together(&[key.as_bytes(), token.as_bytes()]);
            Ok(Redemption::Credited)
        }))
    }

    fn account<'a>(
        &'a self,
        account: &'a str,
    ) -> BoxFuture<'a, Result<AccountRecord, LedgerError>> {
        let record = self.fields(&account_key(account)).map(|f| {
            let get = |name: &str| f.get(name).copied().unwrap_or(0);
            let count = |name: &str| get(name).max(0) as u64;
            debug_assert_eq!(ACCOUNT_FIELDS.len(), 9);
            AccountRecord {
                credited: get("credited"),
                debited: get("debited"),
                spent: get("spent"),
                usage: Usage {
                    ops: count("ops"),
                    bytes_in: count("bytes_in"),
                    bytes_out: count("bytes_out"),
                    byte_seconds: count("byte_seconds"),
                    time_us: count("time_us"),
                },
                default_ttl: count(DEFAULT_TTL_FIELD),
            }
        });
        Box::pin(std::future::ready(record))
    }

    fn lease<'a>(
        &'a self,
        account: &'a str,
        req: &'a LeaseRequest,
    ) -> BoxFuture<'a, Result<Grant, LedgerError>> {
        let key = account_key(account);
        let want = req.want;
        Box::pin(self.alone(self.ledger_stripes(&[&key]), move |store| {
            let f = store.fields(&key)?;
            let available = f
                .get("credited")
                .copied()
                .unwrap_or(0)
                .saturating_sub(f.get("debited").copied().unwrap_or(0));
            let grant = want.clamp(0, available.max(0));
            if grant > 0 {
                store.add(&key, &[("debited", grant)])?;
                store.log_key(key.as_bytes());
            }
            Ok(Grant {
                granted: grant,
                available: Some(available - grant),
            })
        }))
    }

    fn settle<'a>(
        &'a self,
        account: &'a str,
        s: &'a Settlement,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        let deltas: Vec<(&'static str, i64)> = s.deltas().collect();
        let key = account_key(account);
        Box::pin(self.alone(self.ledger_stripes(&[&key]), move |store| {
            store.add(&key, &deltas)?;
            store.log_key(key.as_bytes());
            Ok(())
        }))
    }

    fn set_default_ttl<'a>(
        &'a self,
        account: &'a str,
        secs: u64,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        let key = account_key(account);
        Box::pin(self.alone(self.ledger_stripes(&[&key]), move |store| {
            // Checked like any other field: the record must be a hash.
            store.fields(&key)?;
            store.keys.write(key.as_bytes(), now_ms(), |entry| {
                let entry = entry.get_or_insert_with(|| Entry::new(Data::Hash(HashMap::new())));
                if let Data::Hash(h) = &mut entry.data {
                    let field = DEFAULT_TTL_FIELD.as_bytes().to_vec();
                    if secs == 0 {
                        h.remove(&field);
                    } else {
                        h.insert(field, secs.to_string().into_bytes());
                    }
                }
            });
            store.log_key(key.as_bytes());
            Ok(())
        }))
    }

    fn top(&self, limit: usize) -> BoxFuture<'_, Result<Vec<crate::accounts::Spender>, String>> {
        let store = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || crate::accounts::top_in_store(&store, limit))
                .await
                .map_err(|e| format!("the walk failed: {e}"))
        })
    }
}
