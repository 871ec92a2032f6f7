//! Lua scripting (SPEC 5): `EVAL`, `EVALSHA`, their `_RO` forms and `SCRIPT`, the parts
//! every backend shares.
//!
//! - [`parse_eval`] reads `script|sha numkeys key... arg...` with Redis's errors;
//! - [`Registry`] keeps each account's scripts by SHA1, bounded per account, so that
//!   `SCRIPT EXISTS`, `SCRIPT FLUSH` and `EVALSHA` see only the caller's scripts;
//! - [`check_call`] decides whether a `redis.call` from a script may run at all (pkv's
//!   command table, refused and local commands, read-only scripts);
//! - [`lua`] is the interpreter (Lua 5.1, as Redis has) with Redis's conversions and
//!   libraries, sandboxed, and limited in memory and time. What a `redis.call` does is the
//!   backend's ([`lua::Host`]): the embedded store runs it through the request path's own
//!   key location, namespacing and storage metering (`embedded::script`).
//! - [`fair`] bounds how much of the embedded store's time one account's scripts hold
//!   it exclusively, so that other tenants are served between them;
//! - `pattern` is Lua 5.1's pattern matching (`string.find`/`match`/`gmatch`/`gsub`) in
//!   Rust, so that the script's time limit stops a backtracking pattern as it stops a loop.

pub mod error;
pub mod fair;
mod libs;
mod lstruct;
pub mod lua;
mod pattern;
pub mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::commands::{self, flags, CommandSpec, Exec, LookupError};
use crate::redis_num::parse_int;
pub use error::ScriptError;

/// The most bytes of script text one account's registry holds (`SCRIPT LOAD`, and the
/// scripts `EVAL` caches); past it `SCRIPT LOAD` is refused and `EVAL` runs without
/// caching. Each script counts its text plus [`ENTRY_OVERHEAD`].
pub const MAX_SCRIPT_BYTES_PER_ACCOUNT: usize = 4 * 1024 * 1024;

/// What one registry entry costs beyond its text (its SHA1 key and the map's slot).
pub const ENTRY_OVERHEAD: usize = 96;

/// The most memory one script run's Lua state may allocate.
pub const MEMORY_LIMIT: usize = 64 * 1024 * 1024;

/// The lowercase hex SHA1 of `body`, as Redis names scripts.
pub fn sha1hex(body: &[u8]) -> String {
    sha1_smol::Sha1::from(body).digest().to_string()
}

/// An `EVAL`/`EVALSHA` request: the script text or its SHA1, then keys and arguments.
#[derive(Debug, Clone)]
pub struct EvalArgs {
    pub script: Bytes,
    pub keys: Vec<Bytes>,
    pub argv: Vec<Bytes>,
}

/// Reads `EVAL script numkeys key... arg...` (and EVALSHA's, which has the same shape), as
/// Redis's `evalGenericCommand` does.
pub fn parse_eval(args: &[Bytes]) -> Result<EvalArgs, ScriptError> {
    let (Some(script), Some(numkeys)) = (args.get(1), args.get(2)) else {
        return Err(ScriptError::NumKeysTooMany);
    };
    let n = parse_int(numkeys).ok_or(ScriptError::NumKeysNotInteger)?;
    if n < 0 {
        return Err(ScriptError::NumKeysNegative);
    }
    let rest = &args[3..];
    if n as u64 > rest.len() as u64 {
        return Err(ScriptError::NumKeysTooMany);
    }
    let (keys, argv) = rest.split_at(n as usize);
    Ok(EvalArgs {
        script: script.clone(),
        keys: keys.to_vec(),
        argv: argv.to_vec(),
    })
}

/// Whether a script may run `args` (its `redis.call` arguments), found in pkv's own
/// table: the row, or the error the script gets (raised by `redis.call`, returned by
/// `redis.pcall`). Refused commands stay refused, commands pkv answers itself (transactions,
/// Pub/Sub, `EVAL` in `EVAL`, `SCAN` and the other namespace walks) are not allowed from a
/// script, and a read-only script may not write.
pub fn check_call(args: &[Bytes], read_only: bool) -> Result<&'static CommandSpec, ScriptError> {
    if args.is_empty() {
        return Err(ScriptError::NoArguments);
    }
    let spec = match commands::lookup(args) {
        Ok(spec) => spec,
        Err(LookupError::Arity) => return Err(ScriptError::WrongArity),
        Err(LookupError::Unknown | LookupError::UnknownSubcommand) => {
            return Err(ScriptError::UnknownCommand)
        }
        Err(LookupError::Denied(name)) => return Err(ScriptError::Denied(name)),
    };
    // Blocking commands are refused as Redis 7.0 refuses them (a script never waits).
    if !matches!(spec.exec, Exec::Forward) || spec.has(flags::BLOCKING) {
        return Err(ScriptError::NotFromScript);
    }
    if spec.has(flags::MAY_BLOCK) && commands::locate(spec, args).is_ok_and(|l| l.blocks) {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        return Err(ScriptError::BlockOption(name));
    }
    if read_only && spec.has(flags::WRITE) {
        return Err(ScriptError::WriteInReadOnly);
    }
    Ok(spec)
}

/// Each account's scripts, by SHA1. Shared by every connection of the process; an
/// account sees only its own.
#[derive(Default)]
pub struct Registry {
    accounts: Mutex<HashMap<Arc<str>, AccountScripts>>,
    /// Each account's scripts running now, for `SCRIPT KILL`.
    running: Mutex<HashMap<Arc<str>, Vec<Arc<lua::Running>>>>,
    /// Each account's exclusive time (`PKV_SCRIPT_BUDGET_MS`).
    pub budgets: fair::Budgets,
}

/// A script counted as running for its account until this drops.
pub struct RunGuard<'a> {
    registry: &'a Registry,
    account: Arc<str>,
    pub control: Arc<lua::Running>,
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        let mut running = self
            .registry
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(list) = running.get_mut(&self.account) {
            list.retain(|r| !Arc::ptr_eq(r, &self.control));
            if list.is_empty() {
                running.remove(&self.account);
            }
        }
    }
}

#[derive(Default)]
struct AccountScripts {
    bytes: usize,
    scripts: HashMap<String, Bytes>,
}

impl Registry {
    /// Keeps `body` for `account`; returns its SHA1, or [`ScriptError::RegistryFull`]
    /// when the account's scripts would pass [`MAX_SCRIPT_BYTES_PER_ACCOUNT`].
    pub fn load(&self, account: &Arc<str>, body: &Bytes) -> Result<String, ScriptError> {
        let sha = sha1hex(body);
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        let mine = accounts.entry(account.clone()).or_default();
        if mine.scripts.contains_key(&sha) {
            return Ok(sha);
        }
        let size = body.len() + ENTRY_OVERHEAD;
        if mine.bytes + size > MAX_SCRIPT_BYTES_PER_ACCOUNT {
            return Err(ScriptError::RegistryFull {
                max: MAX_SCRIPT_BYTES_PER_ACCOUNT,
            });
        }
        mine.bytes += size;
        mine.scripts.insert(sha.clone(), body.clone());
        Ok(sha)
    }

    /// The script `sha` (any case) of `account`, if it loaded it.
    pub fn get(&self, account: &str, sha: &[u8]) -> Option<Bytes> {
        let sha = std::str::from_utf8(sha).ok()?.to_ascii_lowercase();
        let accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        accounts.get(account)?.scripts.get(&sha).cloned()
    }

    /// Forgets every script of `account`.
    pub fn flush(&self, account: &str) {
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        accounts.remove(account);
    }

    /// Counts a script of `account` as running, until the guard drops.
    pub fn start(&self, account: &Arc<str>) -> RunGuard<'_> {
        let control = Arc::new(lua::Running::default());
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .entry(account.clone())
            .or_default()
            .push(control.clone());
        RunGuard {
            registry: self,
            account: account.clone(),
            control,
        }
    }

    /// `SCRIPT KILL` for `account`: stops its running scripts, unless one has written
    /// (then nothing is stopped, as Redis refuses).
    pub fn kill(&self, account: &str) -> Result<(), ScriptError> {
        use std::sync::atomic::Ordering;
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let Some(list) = running.get(account).filter(|l| !l.is_empty()) else {
            return Err(ScriptError::NotBusy);
        };
        if list.iter().any(|r| r.wrote.load(Ordering::Acquire)) {
            return Err(ScriptError::Unkillable);
        }
        for r in list {
            r.kill.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// The bytes `account`'s scripts count for.
    pub fn bytes(&self, account: &str) -> usize {
        let accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        accounts.get(account).map_or(0, |a| a.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn numkeys_is_read_as_redis_reads_it() {
        assert_eq!(
            parse_eval(&args(&["EVAL", "s", "x"])).unwrap_err(),
            ScriptError::NumKeysNotInteger
        );
        assert_eq!(
            parse_eval(&args(&["EVAL", "s", "-1"])).unwrap_err(),
            ScriptError::NumKeysNegative
        );
        assert_eq!(
            parse_eval(&args(&["EVAL", "s", "2", "a"])).unwrap_err(),
            ScriptError::NumKeysTooMany
        );
        let ok = parse_eval(&args(&["EVAL", "s", "1", "a", "b"])).unwrap();
        assert_eq!((ok.keys.len(), ok.argv.len()), (1, 1));
    }

    #[test]
    fn the_registry_is_per_account_and_bounded() {
        let reg = Registry::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let sha = reg.load(&a, &Bytes::from_static(b"return 1")).unwrap();
        assert_eq!(sha, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
        assert!(reg.get("a", sha.to_uppercase().as_bytes()).is_some());
        assert!(reg.get("b", sha.as_bytes()).is_none());
        let big = Bytes::from(vec![b' '; MAX_SCRIPT_BYTES_PER_ACCOUNT]);
        assert!(matches!(
            reg.load(&b, &big),
            Err(ScriptError::RegistryFull { .. })
        ));
        reg.flush("a");
        assert!(reg.get("a", sha.as_bytes()).is_none());
        assert_eq!(reg.bytes("a"), 0);
    }

    #[test]
    fn scripts_reach_only_what_clients_reach() {
        assert!(check_call(&args(&["get", "k"]), false).is_ok());
        assert_eq!(
            check_call(&args(&["eval", "return 1", "0"]), false).unwrap_err(),
            ScriptError::NotFromScript
        );
        // CONFIG GET is pkv's own (Redis flags it noscript); CONFIG SET is refused.
        assert_eq!(
            check_call(&args(&["config", "get", "x"]), false).unwrap_err(),
            ScriptError::NotFromScript
        );
        assert!(matches!(
            check_call(&args(&["config", "set", "x", "y"]), false),
            Err(ScriptError::Denied(_))
        ));
        assert_eq!(
            check_call(&args(&["set", "k", "v"]), true).unwrap_err(),
            ScriptError::WriteInReadOnly
        );
        assert_eq!(
            check_call(&args(&["nosuch"]), false).unwrap_err(),
            ScriptError::UnknownCommand
        );
    }
}
