//! pkv's own commands: PKV.SESSION, PKV.TOPUP, PKV.BALANCE, PKV.PRICES, PKV.DEFAULTTTL.

use bytes::{Bytes, BytesMut};

use crate::auth::{now_secs, TokenKind};
use crate::error::ClientError;
use crate::meter::ledger::{format_nanos, RedeemedBy, Redemption};
use crate::redis_num::parse_int;
use crate::server::session::Session;

impl Session {
    /// `PKV.SESSION [lifetime]`: a session token for the account.
    pub(super) fn pkv_session(&mut self, args: &[Bytes], out: &mut BytesMut) {
        let max = self.shared.current().max_ttl as i64;
        let lifetime = match args.get(1) {
            None => max,
            Some(raw) => match parse_int(raw) {
                Some(n) if n > 0 && n <= max => n,
                _ => return self.reject(ClientError::Lifetime { max: max as u64 }, out),
            },
        };
        let Some(auth) = &self.auth else { return };
        let token = self
            .shared
            .current()
            .auth
            .session_token(&auth.account, lifetime, now_secs());
        self.reply(out, |w| w.bulk(token.as_bytes()));
    }

    /// `PKV.DEFAULTTTL [seconds]`: reads the TTL the account's writes get when they give
    /// none, or sets the account's own (1 to `PKV_MAX_TTL`; 0 returns to `PKV_DEFAULT_TTL`).
    /// It is kept in the ledger with the account, so every process sharing the ledger uses
    /// it from the account's next first connection there, and this one at once.
    pub(super) async fn pkv_default_ttl(&mut self, args: &[Bytes], out: &mut BytesMut) {
        self.flush(out).await;
        let Some(auth) = &self.auth else { return };
        let secs = match args {
            [_] => {
                let secs = self.default_ttl();
                return self.reply(out, |w| w.int(secs as i64));
            }
            [_, raw] => match parse_int(raw) {
                Some(n) if (0..=self.current.max_ttl as i64).contains(&n) => n as u64,
                _ => {
                    let max = self.current.max_ttl;
                    return self.reject(ClientError::DefaultTtl { max }, out);
                }
            },
            _ => return self.reject(ClientError::Syntax, out),
        };
        let (account, meter) = (auth.account.clone(), auth.meter.clone());
        match self.shared.ledger.set_default_ttl(&account, secs).await {
            Ok(()) => {
                meter.set_default_ttl(secs);
                self.reply(out, |w| w.simple("OK"));
            }
            Err(err) => self.reject(ClientError::Ledger(err), out),
        }
    }

    /// `PKV.TOPUP token`
    pub(super) async fn pkv_topup(&mut self, args: &[Bytes], out: &mut BytesMut) {
        self.flush(out).await;
        match self.topup(&args[1]).await {
            Ok(quantity) => self.reply(out, |w| w.int(quantity)),
            Err(err) => self.reject(err, out),
        }
    }

    /// Redeems a quota token into the current account; returns the units credited.
    async fn topup(&mut self, token: &[u8]) -> Result<i64, ClientError> {
        let Some(account) = self.auth.as_ref().map(|a| a.account.clone()) else {
            return Err(ClientError::NoAuth);
        };
        let wrong = |e: &dyn std::fmt::Display| ClientError::WrongPass(e.to_string());
        let token = crate::auth::token_text(token).map_err(|e| wrong(&e))?;
        let verified = self
            .shared
            .current()
            .auth
            .verify(token, now_secs())
            .map_err(|e| wrong(&e))?;
        let TokenKind::Quota { jti, quantity, exp } = verified.kind else {
            return Err(ClientError::TopupNeedsQuota);
        };
        let keep_until = exp
            .saturating_add(self.shared.current().token_leeway as i64)
            .saturating_add(60);
        match self
            .shared
            .ledger
            .redeem(&jti, &account, quantity, keep_until, RedeemedBy::Topup)
            .await
        {
            Ok(Redemption::Credited) => {
                tracing::info!(account = %account, quantity, "quota token topped up");
                Ok(quantity)
            }
            // The same answer however the token was used, naming no one.
            Ok(Redemption::AlreadyRedeemed { .. }) => Err(ClientError::AlreadyRedeemed),
            Err(e) => Err(e.into()),
        }
    }

    /// `PKV.BALANCE`: settles this process's lease for the account first, so the figures
    /// include everything this connection did.
    ///
    /// It is free but costs the ledger a settlement and a read, so a connection reads at
    /// most once per `PKV_BALANCE_INTERVAL_MS`: a call sooner waits out the rest of the
    /// interval, and every answer is still exact (as a client expects right after a write).
    pub(super) async fn balance(&mut self, out: &mut BytesMut) {
        let Some((account, meter)) = self
            .auth
            .as_ref()
            .map(|a| (a.account.clone(), a.meter.clone()))
        else {
            return;
        };
        if let Some(last) = self.balance_read_at {
            let interval = self.shared.current().balance_interval;
            tokio::time::sleep_until(last + interval).await;
        }
        self.balance_read_at = Some(tokio::time::Instant::now());
        self.apply_charges();
        if let Err(e) = self.shared.meter.release(&meter).await {
            return self.error_reply(e, out);
        }
        match self.shared.ledger.account(&account).await {
            Ok(record) => self.reply(out, |w| {
                let u = record.usage;
                w.map(8);
                w.bulk(b"account");
                w.bulk(account.as_bytes());
                w.bulk(b"balance");
                w.bulk(format_nanos(record.credited - record.debited).as_bytes());
                w.bulk(b"spent");
                w.bulk(format_nanos(record.spent).as_bytes());
                for (name, n) in [
                    ("ops", u.ops),
                    ("bytes_in", u.bytes_in),
                    ("bytes_out", u.bytes_out),
                    ("byte_seconds", u.byte_seconds),
                ] {
                    w.bulk(name.as_bytes());
                    w.int(i64::try_from(n).unwrap_or(i64::MAX));
                }
                w.bulk(b"time_ms");
                w.bulk(format!("{}.{:03}", u.time_us / 1000, u.time_us % 1000).as_bytes());
            }),
            Err(e) => self.error_reply(e, out),
        }
    }

    /// `PKV.PRICES`
    pub(super) fn prices(&mut self, out: &mut BytesMut) {
        let p = self.shared.meter.prices();
        let enabled = self.shared.meter.enabled();
        self.reply(out, |w| {
            w.map(6);
            for (name, price) in [
                ("op", p.op),
                ("byte_in", p.byte_in),
                ("byte_out", p.byte_out),
                ("byte_second", p.byte_second),
                ("time_ms", p.time_ms),
            ] {
                w.bulk(name.as_bytes());
                w.bulk(price.to_string().as_bytes());
            }
            w.bulk(b"metering");
            w.bulk(if enabled { b"on" } else { b"off" });
        });
    }
}
