//! Prepaid storage: the byte-seconds a write buys, following the command's storage rule in
//! the table.
//!
//! Every key written through pkv has a TTL. What a write stores and for how long is found
//! without an extra round trip: [`plan`] looks at the arguments (refusing expiries above the
//! maximum, adding the default TTL to `SET`), and adds small bookkeeping commands to the
//! same pipeline (`PEXPIRE key <default> NX` gives a key created without a TTL the default
//! one and says whether it did; `PTTL` and `MEMORY USAGE` say how long and how large).
//! [`byte_seconds`] reads their replies once the pipeline returns.

use bytes::Bytes;
use redis::Value;

use crate::commands::{parse_redis_int, ArgRole, CommandSpec, Dest, Element, Storage, TtlUnit};
use crate::namespace::Namespace;

/// TTL limits and the clock, for planning.
#[derive(Debug, Clone, Copy)]
pub struct TtlPolicy {
    pub default_secs: u64,
    pub max_secs: u64,
    /// Milliseconds since the epoch.
    pub now_ms: i64,
}

/// What a write needs for its storage to be paid.
#[derive(Debug, Default)]
pub struct Plan {
    /// `EX <default TTL>` is appended to the command (`SET` without an expiry).
    pub append_default_ttl: bool,
    /// Bookkeeping commands sent right before the command.
    pub before: Vec<redis::Cmd>,
    /// Bookkeeping commands sent right after the command.
    pub after: Vec<redis::Cmd>,
    /// The most byte-seconds the write can be charged, for admission; 0 when only the
    /// upstream knows the size (stores, expiry changes).
    pub bound: u64,
    pub rule: After,
}

/// How the byte-seconds are read from the replies.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Nothing stored.
    #[default]
    None,
    /// A known amount, paid when the write happened (not for `SET NX` that did not set).
    Fixed {
        byte_seconds: u64,
        returns_old_value: bool,
    },
    /// Replies after: `[PEXPIRE NX, PTTL]`. A new key pays name + data for the default TTL,
    /// an existing one pays data for what is left of its TTL.
    Grow { key_len: u64, data_len: u64 },
    /// Like `Grow`, with the element taken from the command's reply when `element` is None.
    Move { key_len: u64, element: Option<u64> },
    /// Replies after: `[PEXPIRE NX, PTTL, MEMORY USAGE]`.
    Store,
    /// Replies before: `[PTTL]`; after: `[PTTL, MEMORY USAGE]`.
    Expire,
}

/// Why a write is refused before it runs.
pub fn ttl_too_long(max: u64) -> String {
    format!("ERR expiry above the maximum TTL of {max} seconds that storage can be bought for")
}

fn cmd(name: &str, key: &[u8]) -> redis::Cmd {
    let mut c = redis::cmd(name);
    c.arg(key);
    c
}

fn pexpire_nx(key: &[u8], policy: &TtlPolicy) -> redis::Cmd {
    let mut c = cmd("PEXPIRE", key);
    c.arg(policy.default_secs.saturating_mul(1000)).arg("NX");
    c
}

fn memory_usage(key: &[u8]) -> redis::Cmd {
    let mut c = cmd("MEMORY", b"USAGE");
    c.arg(key);
    c
}

/// Seconds until an expiry given as `value` in `unit`, rounded up; `Err` when unparsable.
fn ttl_secs(unit: TtlUnit, raw: &[u8], now_ms: i64) -> Result<i64, String> {
    let n = parse_redis_int(raw).ok_or("ERR value is not an integer or out of range")?;
    let ms = match unit {
        TtlUnit::Seconds => n.saturating_mul(1000),
        TtlUnit::Millis => n,
        TtlUnit::UnixSeconds => n.saturating_mul(1000).saturating_sub(now_ms),
        TtlUnit::UnixMillis => n.saturating_sub(now_ms),
    };
    Ok(if ms <= 0 {
        0
    } else {
        ms / 1000 + i64::from(ms % 1000 != 0)
    })
}

fn check_max(secs: i64, policy: &TtlPolicy) -> Result<u64, String> {
    let secs = secs.max(0) as u64;
    if secs > policy.max_secs {
        Err(ttl_too_long(policy.max_secs))
    } else {
        Ok(secs)
    }
}

fn len(arg: Option<&Bytes>) -> u64 {
    arg.map_or(0, |a| a.len() as u64)
}

/// Plans the storage of one command. `keys` are its located keys (as `key_args` gives
/// them); upstream names are made with `ns`.
pub fn plan(
    spec: &CommandSpec,
    args: &[Bytes],
    keys: &[(usize, ArgRole)],
    ns: &Namespace,
    policy: &TtlPolicy,
) -> Result<Plan, String> {
    if spec.storage == Storage::None {
        // Reads, deletions: nothing to plan, and nothing to allocate on their way.
        return Ok(Plan::default());
    }
    let key_indices: Vec<usize> = keys
        .iter()
        .filter(|(_, r)| *r == ArgRole::Key)
        .map(|(i, _)| *i)
        .collect();
    let upstream = |i: usize| ns.wrap(&args[i]);
    let mut plan = Plan::default();
    match spec.storage {
        Storage::None => {}
        Storage::Set => {
            let mut ttl = None;
            let (mut keepttl, mut get) = (false, false);
            let mut i = 3;
            while i < args.len() {
                let word = &args[i];
                if let (Some(unit), Some(value)) = (TtlUnit::option(word), args.get(i + 1)) {
                    ttl = Some(check_max(ttl_secs(unit, value, policy.now_ms)?, policy)?);
                    i += 2;
                    continue;
                }
                keepttl |= word.eq_ignore_ascii_case(b"KEEPTTL");
                get |= word.eq_ignore_ascii_case(b"GET");
                i += 1;
            }
            let (key_len, value_len) = (len(args.get(1)), len(args.get(2)));
            if keepttl {
                plan.after = vec![pexpire_nx(&upstream(1), policy), cmd("PTTL", &upstream(1))];
                plan.bound = (key_len + value_len).saturating_mul(policy.max_secs);
                plan.rule = After::Grow {
                    key_len,
                    data_len: value_len,
                };
            } else {
                let secs = match ttl {
                    Some(secs) => secs,
                    None => {
                        plan.append_default_ttl = true;
                        policy.default_secs
                    }
                };
                let byte_seconds = (key_len + value_len).saturating_mul(secs);
                plan.bound = byte_seconds;
                plan.rule = After::Fixed {
                    byte_seconds,
                    returns_old_value: get,
                };
            }
        }
        Storage::SetEx { millis } => {
            let unit = if millis {
                TtlUnit::Millis
            } else {
                TtlUnit::Seconds
            };
            let secs = check_max(ttl_secs(unit, &args[2], policy.now_ms)?, policy)?;
            let byte_seconds = (len(args.get(1)) + len(args.get(3))).saturating_mul(secs);
            plan.bound = byte_seconds;
            plan.rule = After::Fixed {
                byte_seconds,
                returns_old_value: false,
            };
        }
        Storage::Pairs => {
            let bytes: u64 = args[1..].iter().map(|a| a.len() as u64).sum();
            plan.after = key_indices
                .iter()
                .map(|&i| pexpire_nx(&upstream(i), policy))
                .collect();
            let byte_seconds = bytes.saturating_mul(policy.default_secs);
            plan.bound = byte_seconds;
            plan.rule = After::Fixed {
                byte_seconds,
                returns_old_value: false,
            };
        }
        Storage::Grow { data_from } => {
            let Some(&key) = key_indices.first() else {
                return Ok(plan);
            };
            let data_len: u64 = args
                .iter()
                .skip(usize::from(data_from))
                .map(|a| a.len() as u64)
                .sum();
            let key_len = len(args.get(key));
            plan.after = vec![
                pexpire_nx(&upstream(key), policy),
                cmd("PTTL", &upstream(key)),
            ];
            plan.bound = (key_len + data_len).saturating_mul(policy.max_secs);
            plan.rule = After::Grow { key_len, data_len };
        }
        Storage::Store { dest } => {
            let dest = match dest {
                Dest::First => key_indices.first(),
                Dest::Second => key_indices.get(1),
                Dest::LastStoreOption if key_indices.len() > 1 => key_indices.last(),
                Dest::LastStoreOption => None,
            };
            let Some(&dest) = dest else { return Ok(plan) };
            let d = upstream(dest);
            plan.after = vec![pexpire_nx(&d, policy), cmd("PTTL", &d), memory_usage(&d)];
            plan.rule = After::Store;
        }
        Storage::Move { element } => {
            let Some(&dest) = key_indices.get(1) else {
                return Ok(plan);
            };
            let d = upstream(dest);
            let element = match element {
                Element::Arg3 => Some(len(args.get(3))),
                Element::Reply => None,
            };
            plan.after = vec![pexpire_nx(&d, policy), cmd("PTTL", &d)];
            let key_len = len(args.get(dest));
            plan.bound = element.map_or(0, |e| (key_len + e).saturating_mul(policy.max_secs));
            plan.rule = After::Move { key_len, element };
        }
        Storage::Expire { unit } => {
            check_max(ttl_secs(unit, &args[2], policy.now_ms)?, policy)?;
            expire_plan(&mut plan, &upstream(1));
        }
        Storage::GetEx => {
            let mut i = 2;
            while i < args.len() {
                let word = &args[i];
                if word.eq_ignore_ascii_case(b"PERSIST") {
                    return Err("ERR command 'GETEX PERSIST' is not allowed through pkv: storage must have an end".into());
                }
                if let (Some(unit), Some(value)) = (TtlUnit::option(word), args.get(i + 1)) {
                    check_max(ttl_secs(unit, value, policy.now_ms)?, policy)?;
                    expire_plan(&mut plan, &upstream(1));
                    i += 1;
                }
                i += 1;
            }
        }
    }
    Ok(plan)
}

fn expire_plan(plan: &mut Plan, key: &[u8]) {
    plan.before = vec![cmd("PTTL", key)];
    plan.after = vec![cmd("PTTL", key), memory_usage(key)];
    plan.rule = After::Expire;
}

fn int(value: Option<&Value>) -> i64 {
    match value {
        Some(Value::Int(n)) => *n,
        _ => 0,
    }
}

/// Whole seconds left of a `PTTL` reply, rounded up; 0 for no key or no TTL.
fn secs_left(pttl: Option<&Value>) -> u64 {
    let ms = int(pttl);
    if ms <= 0 {
        0
    } else {
        (ms as u64).div_ceil(1000)
    }
}

/// The byte-seconds a write bought, from its reply and its bookkeeping replies.
pub fn byte_seconds(
    rule: After,
    reply: &Value,
    before: &[Value],
    after: &[Value],
    default_secs: u64,
) -> u64 {
    if matches!(reply, Value::ServerError(_)) {
        return 0;
    }
    // `PEXPIRE NX` answers 1 when it gave the key its first TTL: the write created it.
    let created = int(after.first()) == 1;
    match rule {
        After::None => 0,
        After::Fixed {
            byte_seconds,
            returns_old_value,
        } => {
            let written = match reply {
                Value::Nil => returns_old_value,
                Value::Int(0) => false,
                _ => true,
            };
            if written {
                byte_seconds
            } else {
                0
            }
        }
        After::Grow { key_len, data_len } => {
            grown(created, key_len, data_len, after.get(1), default_secs)
        }
        After::Move { key_len, element } => {
            let element = match (element, reply) {
                (Some(e), Value::Int(1)) => e,
                (Some(_), _) => 0,
                (None, Value::BulkString(b)) => b.len() as u64,
                (None, _) => 0,
            };
            if element == 0 {
                0
            } else {
                grown(created, key_len, element, after.get(1), default_secs)
            }
        }
        After::Store => {
            let size = int(after.get(2)).max(0) as u64;
            let secs = if created {
                default_secs
            } else {
                secs_left(after.get(1))
            };
            size.saturating_mul(secs)
        }
        After::Expire => {
            let before_ms = int(before.first()).max(0);
            let after_ms = int(after.first()).max(0);
            let added = (after_ms - before_ms).max(0) as u64;
            let size = int(after.get(1)).max(0) as u64;
            size.saturating_mul(added.div_ceil(1000))
        }
    }
}

fn grown(
    created: bool,
    key_len: u64,
    data_len: u64,
    pttl: Option<&Value>,
    default_secs: u64,
) -> u64 {
    if created {
        (key_len + data_len).saturating_mul(default_secs)
    } else {
        data_len.saturating_mul(secs_left(pttl))
    }
}

/// One line per storage rule, for `docs/metering.md`.
pub fn describe(storage: Storage) -> &'static str {
    match storage {
        Storage::None => "stores nothing new",
        Storage::Set => "key + value for the TTL of its EX/PX/EXAT/PXAT option, else the default TTL (added as EX); with KEEPTTL as grow",
        Storage::SetEx { .. } => "key + value for the TTL given",
        Storage::Pairs => "every key + value for the default TTL (given with PEXPIRE NX)",
        Storage::Grow { .. } => "grow: a new key pays key + data for the default TTL; an existing key pays the data for its remaining TTL",
        Storage::Store { .. } => "the stored size (MEMORY USAGE) for the default TTL, or the TTL the destination kept",
        Storage::Move { .. } => "grow of the destination by the moved element",
        Storage::Expire { .. } => "the key's size (MEMORY USAGE) for the seconds added; refused above the maximum TTL",
        Storage::GetEx => "with an expiry option, as EXPIRE; PERSIST refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(ttl_secs(TtlUnit::Millis, b"1", 0), Ok(1));
        assert_eq!(ttl_secs(TtlUnit::Millis, b"1000", 0), Ok(1));
        assert_eq!(ttl_secs(TtlUnit::Millis, b"1001", 0), Ok(2));
        assert_eq!(ttl_secs(TtlUnit::UnixSeconds, b"100", 40_000), Ok(60));
        assert_eq!(ttl_secs(TtlUnit::Seconds, b"-5", 0), Ok(0));
        assert!(ttl_secs(TtlUnit::Seconds, b"x", 0).is_err());
    }

    #[test]
    fn grow_pays_new_keys_in_full_and_old_keys_for_what_is_left() {
        let rule = After::Grow {
            key_len: 3,
            data_len: 10,
        };
        let ok = Value::Int(1);
        assert_eq!(
            byte_seconds(
                rule,
                &ok,
                &[],
                &[Value::Int(1), Value::Int(86_400_000)],
                86_400
            ),
            13 * 86_400
        );
        assert_eq!(
            byte_seconds(rule, &ok, &[], &[Value::Int(0), Value::Int(1_500)], 86_400),
            10 * 2
        );
        assert_eq!(
            byte_seconds(rule, &ok, &[], &[Value::Int(0), Value::Int(-2)], 86_400),
            0
        );
    }

    #[test]
    fn set_nx_that_did_not_set_pays_nothing() {
        let rule = After::Fixed {
            byte_seconds: 100,
            returns_old_value: false,
        };
        assert_eq!(byte_seconds(rule, &Value::Nil, &[], &[], 1), 0);
        assert_eq!(byte_seconds(rule, &Value::Okay, &[], &[], 1), 100);
        let with_get = After::Fixed {
            byte_seconds: 100,
            returns_old_value: true,
        };
        assert_eq!(byte_seconds(with_get, &Value::Nil, &[], &[], 1), 100);
    }

    #[test]
    fn extending_a_ttl_pays_the_added_seconds() {
        let before = [Value::Int(10_000)];
        let after = [Value::Int(70_000), Value::Int(50)];
        assert_eq!(
            byte_seconds(After::Expire, &Value::Int(1), &before, &after, 1),
            50 * 60
        );
        let shorter = [Value::Int(5_000), Value::Int(50)];
        assert_eq!(
            byte_seconds(After::Expire, &Value::Int(1), &before, &shorter, 1),
            0
        );
    }
}
