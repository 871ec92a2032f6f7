//! Scripts on an upstream Redis: the script runs inside Redis (so it is atomic, as
//! redis-py's `Lock.release` and every framework's script expect), wrapped so that every
//! key it names lands in the caller's namespace.
//!
//! Two layers, so that the boundary does not rest on the wrapper alone:
//!
//! - [`wrap`] puts a preamble on the script's first line. It declares, as locals of the
//!   script's chunk, `redis`, `KEYS`, `ARGV`, `_G`, `rawget`, `rawset`, `getmetatable`,
//!   `setmetatable`, `loadstring`, `load` and `__redis__err__handler`: Lua resolves a name
//!   to the innermost local first, so the script's every use of these names reaches the
//!   preamble's versions, and no expression of the script can reach the real globals
//!   (Redis 7's Lua has no `getfenv`/`setfenv`/`debug`; `_G` is a read-only proxy whose
//!   `redis` is the wrapper's; `loadstring`/`load`, which compile a chunk seeing the real
//!   globals, are refused). The wrapper's `redis.call`/`redis.pcall` look the command up in
//!   a table made from pkv's command table ([`lua_table`]), prefix every key argument with
//!   the account's prefix (sent by pkv as trailing `ARGV` entries the script never sees),
//!   give every key a write touched the account's default TTL if it has none and cap it at
//!   `PKV_MAX_TTL`, and record each written key's size (a string's name and length, as
//!   pkv charges a `SET`; any other type's `MEMORY USAGE`, as pkv charges a store) and TTL
//!   before its first write in a
//!   hash only this run can name (its name ends with a random nonce pkv sends), so pkv
//!   charges the storage whatever the script returns or raises.
//! - The script runs on a connection authenticated as the account's own ACL user
//!   ([`acl_setuser`]), whose key pattern is the account's prefix: a script that defeated
//!   the wrapper (a Lua sandbox escape in Redis) gets `NOPERM` outside its namespace.
//!
//! Line numbers are the script's own (the preamble shares line 1); error lines are
//! rewritten to name the caller's SHA1 rather than the wrapped script's ([`fix_error`]).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

use crate::backend::Dedicated;
use crate::commands::{self, flags, Call, CommandSpec, Exec, KeyRule, ReplyRewrite};

/// How many arguments pkv appends to the script's `ARGV`: the prefix, the default TTL and
/// the most TTL (ms; `0` with `PKV_METERING=off`: writes get no TTL and buy nothing, as
/// outside scripts), whether the script is read-only, and the name of the run's record.
pub const RESERVED_ARGS: usize = 5;

/// How long the record of a run's writes lives if pkv never reads it (ms).
const RECORD_TTL_MS: &str = "60000";

/// Idle connections kept per account, already authenticated as its ACL user.
const IDLE_PER_ACCOUNT: usize = 4;

/// Idle script connections kept in all, so that many accounts' scripts do not hold many
/// of the upstream's connections between runs (a run past it opens one and closes it).
const IDLE_TOTAL: usize = 64;

/// The preamble. Written over several lines for reading; [`wrap`] joins them into one, so
/// it must hold no `--` comment.
const PREAMBLE: &str = r#"
local redis,KEYS,ARGV,_G,rawget,rawset,getmetatable,setmetatable,loadstring,load,__redis__err__handler=(function()
local R,G,n=redis,_G,#ARGV
local P,TD,TM,RO,REC=ARGV[n-4],ARGV[n-3],ARGV[n-2],ARGV[n-1]=='1',ARGV[n]
local PL=#P
local sub,up,ts,tn,tp,sel,unp,rc,rp,pc,er,rg,rs,gm,sm,mt,ip=string.sub,string.upper,tostring,tonumber,type,select,unpack,R.call,R.pcall,pcall,error,rawget,rawset,getmetatable,setmetatable,string.match,ipairs
local K,A={},{}
for i=1,#KEYS do K[i]=sub(KEYS[i],PL+1) end
for i=1,n-5 do A[i]=ARGV[i] end
local T={@TABLE@}
local W,recd={},false
local function str(x) local t=tp(x) if t=='string' then return x elseif t=='number' then return ts(x) end return nil end
local dead=false
local function h(raise,...)
local c=sel('#',...)
local a={...}
local function fail(m)
if raise then er({err=m}) end
return {err=m}
end
if c==0 then return fail('ERR Please specify at least one argument for this redis lib call') end
local nm=str(a[1])
if nm==nil then return fail('ERR Lua redis lib command arguments must be strings or integers') end
nm=up(nm)
local e=T[nm]
if tp(e)=='table' and e.c then local sb=str(a[2]) if sb then e=T[nm..'|'..up(sb)] else e=nil end end
if e==nil then return fail('ERR Unknown Redis command called from script') end
if tp(e)=='string' then return fail(e) end
if e.w and RO then return fail('ERR Write commands are not allowed from read-only scripts.') end
local ks={}
for _,r in ip(e.k) do
if r[1]==2 then
local nk=tn(str(a[r[2]+1]) or '')
if nk and nk>0 then for j=r[2]+2,r[2]+1+nk do if j<=c then ks[#ks+1]=j end end end
else
local l=r[3]
if l<0 then l=c+l elseif l>c-1 then l=c-1 end
for i=r[2],l,r[4] do ks[#ks+1]=i+1 end
end
end
for _,j in ip(ks) do local v=str(a[j]) if v~=nil then a[j]=P..v end end
if e.w and TD~='0' then
for _,j in ip(ks) do local k=a[j]
if tp(k)=='string' and W[k]==nil then
W[k]=true
local ty=rc('TYPE',k)
ty=tp(ty)=='table' and ty.ok or ty
local sz=0
if ty=='string' then sz=#k-PL+rc('STRLEN',k) elseif ty~='none' then sz=rc('MEMORY','USAGE',k,'SAMPLES','0') or 0 end
local tt=rc('PTTL',k)
rc('HSETNX',REC,k,ts(sz)..' '..ts(tt))
if not recd then recd=true rc('PEXPIRE',REC,'@RECTTL@') end
end
end
end
local r=rp(unp(a,1,c))
if e.w and TD~='0' then
for _,j in ip(ks) do local k=a[j] if tp(k)=='string' then rc('PEXPIRE',k,TD,'NX') rc('PEXPIRE',k,TM,'LT') end end
end
if tp(r)=='table' and r.err then if raise then fail(r.err) end return r end
if e.f and tp(r)=='table' and tp(r[1])=='string' and sub(r[1],1,PL)==P then r[1]=sub(r[1],PL+1) end
return r
end
local function pk(...) return {n=sel('#',...),...} end
local function fresh()
return coroutine.wrap(function(...)
local a=pk(...)
while true do
dead=true
local r=h(true,unp(a,1,a.n))
dead=false
a=pk(coroutine.yield(r))
end
end)
end
local cur=fresh()
local px={}
for k,v in pairs(R) do if k~='call' then px[k]=v end end
px.pcall=function(...) return h(false,...) end
sm(px,{__index=function(_,k) if k=='call' then if dead then cur=fresh() dead=false end return cur end end})
local function ro() er('Attempt to modify a readonly table',3) end
local function ls() er('loadstring and load are not available to scripts through pkv',2) end
local sg
local sh={redis=px,KEYS=K,ARGV=A,loadstring=ls,load=ls}
sg=sm({},{__index=function(_,k) local v=sh[k] if v~=nil then return v end return G[k] end,__newindex=ro,__metatable=false})
sh._G=sg
sh.rawget=function(t,k) if t==sg then return sg[k] end return rg(t,k) end
sh.rawset=function(t,k,v) if t==sg then ro() end return rs(t,k,v) end
sh.getmetatable=function(t) if t==sg then return false end return gm(t) end
sh.setmetatable=function(t,m) if t==sg then ro() end return sm(t,m) end
return px,K,A,sg,sh.rawget,sh.rawset,sh.getmetatable,sh.setmetatable,ls,ls,nil
end)();"#;

/// A user's script as pkv sends it upstream.
#[derive(Debug, Clone)]
pub struct Wrapped {
    pub text: Bytes,
    pub sha: String,
}

/// The script `body` with the preamble on its first line, so that its lines keep their
/// numbers. The command table in it holds the rows of the commands the script names
/// (any word of its text, any case); a command built at run time from pieces is not
/// found and is refused as unknown.
pub fn wrap(body: &[u8]) -> Wrapped {
    let preamble: String = PREAMBLE
        .trim()
        .replace('\n', " ")
        .replace("@TABLE@", &lua_table(body))
        .replace("@RECTTL@", RECORD_TTL_MS);
    let mut text = BytesMut::with_capacity(preamble.len() + body.len() + 1);
    // A `#!lua` line must stay first for Redis to read its flags.
    let rest = match body.starts_with(b"#!") {
        true => {
            let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
            text.extend_from_slice(&body[..end]);
            text.extend_from_slice(b"\n");
            body.get(end + 1..).unwrap_or_default()
        }
        false => body,
    };
    text.extend_from_slice(preamble.as_bytes());
    text.extend_from_slice(b" ");
    text.extend_from_slice(rest);
    let text = text.freeze();
    let sha = super::sha1hex(&text);
    Wrapped { text, sha }
}

/// The words of a script's text, upper-cased: the command names it may call.
fn words(body: &[u8]) -> BTreeSet<String> {
    body.split(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-'))
        .filter(|w| !w.is_empty() && w.len() <= 32)
        .map(|w| String::from_utf8_lossy(w).to_ascii_uppercase())
        .collect()
}

/// The Lua table's entries for the commands `body` names: a row the wrapper can run
/// (`{w=write, f=first reply element is a key, k={rules}}`, rules `{1,first,last,step}`
/// or `{2,numkeys_at}`), a container (`{c=true}`), or the error line a script gets.
pub fn lua_table(body: &[u8]) -> String {
    let mut out = String::new();
    for word in words(body) {
        if let Some(spec) = commands::row(&word) {
            entry(&mut out, spec.name, spec);
            if spec.has(flags::CONTAINER) {
                let sub_prefix = format!("{word}|");
                for spec in commands::table::TABLE {
                    if spec.name.starts_with(&sub_prefix) {
                        entry(&mut out, spec.name, spec);
                    }
                }
                for denied in commands::DENIED {
                    if denied.starts_with(&sub_prefix) {
                        denied_entry(&mut out, denied);
                    }
                }
            }
        } else if commands::DENIED.contains(&word.as_str()) {
            denied_entry(&mut out, &word);
        } else if commands::DENIED
            .iter()
            .any(|d| d.starts_with(&format!("{word}|")))
        {
            // A container whose allowed subcommands pkv answers itself.
            let _ = write!(out, "['{word}']={{c=true}},");
            for denied in commands::DENIED {
                if denied.starts_with(&format!("{word}|")) {
                    denied_entry(&mut out, denied);
                }
            }
        }
    }
    out
}

fn denied_entry(out: &mut String, name: &str) {
    let shown = name.replace('|', " ");
    let _ = write!(
        out,
        "['{name}']='ERR command \\'{shown}\\' is not allowed through pkv',"
    );
}

fn entry(out: &mut String, name: &str, spec: &CommandSpec) {
    let _ = write!(out, "['{name}']=");
    if spec.has(flags::CONTAINER) {
        out.push_str("{c=true},");
        return;
    }
    if !matches!(spec.exec, Exec::Forward) || spec.has(flags::BLOCKING) {
        out.push_str("'ERR This Redis command is not allowed from script',");
        return;
    }
    let mut rules = String::new();
    let mut ok = !spec.has(flags::PUBSUB)
        && matches!(spec.reply, ReplyRewrite::Plain | ReplyRewrite::FirstKey);
    for rule in spec.keys {
        match *rule {
            KeyRule::Range { first, last, step } => {
                let _ = write!(rules, "{{1,{first},{last},{}}},", step.max(1));
            }
            KeyRule::NumKeys { at } => {
                let _ = write!(rules, "{{2,{at}}},");
            }
            _ => ok = false,
        }
    }
    if !ok {
        let shown = name.replace('|', " ");
        let _ = write!(
            out,
            "'ERR command \\'{shown}\\' is not available to scripts through pkv on an upstream Redis',"
        );
        return;
    }
    let _ = write!(
        out,
        "{{w={},f={},k={{{rules}}}}},",
        spec.has(flags::WRITE),
        matches!(spec.reply, ReplyRewrite::FirstKey)
    );
}

/// An error line of the wrapped script as the client sees it: the caller's SHA1 in place
/// of the wrapped script's. (The line is the script's own: the wrapper's `redis.call` is a
/// C function, `coroutine.wrap`'s, so Redis reports the line of the script that called it,
/// even from `return redis.call(...)`, as it does for its own.)
pub fn fix_error(line: &str, wrapped_sha: &str, user_sha: &str) -> String {
    line.replace(wrapped_sha, user_sha)
}

/// The name of an account's ACL user on the upstream.
pub fn acl_user(ns_prefix: &[u8]) -> String {
    // The prefix holds the escaped account id (letters, digits, `-_.%`) between
    // `pkv:t:` and `:`.
    let id = String::from_utf8_lossy(ns_prefix);
    let id = id
        .strip_prefix(crate::namespace::TENANT_ROOT)
        .unwrap_or(&id)
        .trim_end_matches(':');
    format!("pkv-{id}")
}

/// `ACL SETUSER` for an account: its keys are its prefix's, no channel, and no command
/// that administers the server, lists other tenants' names (`SCAN`, `RANDOMKEY`,
/// `DBSIZE`, `KEYS`, `PUBSUB`) or leaves database 0. The password is added to the
/// user's (each pkv process adds its own and never removes another's), so processes
/// sharing an upstream do not lock each other out.
pub fn acl_setuser(user: &str, password: &str, prefix: &[u8]) -> Call {
    let mut pattern = Vec::with_capacity(prefix.len() + 2);
    pattern.push(b'~');
    pattern.extend_from_slice(prefix);
    pattern.push(b'*');
    let mut call = Call::named("ACL")
        .arg("SETUSER")
        .arg(user.to_owned())
        .arg("on")
        .arg(format!(">{password}"))
        .arg("resetkeys")
        .arg(Bytes::from(pattern))
        .arg("resetchannels");
    for rule in [
        "-@all",
        "+@read",
        "+@write",
        "+@keyspace",
        "+@string",
        "+@hash",
        "+@list",
        "+@set",
        "+@sortedset",
        "+@stream",
        "+@hyperloglog",
        "+@geo",
        "+@bitmap",
        "-@admin",
        "-@dangerous",
        "-@pubsub",
        "-@blocking",
        "-@transaction",
        "-@connection",
        "-@scripting",
        "+eval",
        "+evalsha",
        "+eval_ro",
        "+evalsha_ro",
        "-scan",
        "-randomkey",
        "-dbsize",
        "-keys",
        "-select",
        "-swapdb",
        "-move",
        "-copy",
        "-migrate",
        "-memory",
        "+memory|usage",
        "-wait",
    ] {
        call = call.arg(rule);
    }
    call
}

/// A random password for an account's ACL user (hex of 32 bytes from the OS).
pub fn new_password() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// A random nonce for one run's record of its writes.
pub fn nonce() -> Result<String, String> {
    new_password().map(|p| p[..32].to_owned())
}

/// Connections kept idle per account.
type Idle = HashMap<Arc<str>, Vec<Box<dyn Dedicated>>>;

/// Per process: each account's ACL user (once made) and idle connections already
/// authenticated as it.
#[derive(Default)]
pub struct Accounts {
    users: Mutex<HashMap<Arc<str>, String>>,
    idle: Mutex<Idle>,
    /// Wrapped scripts by the caller's SHA1, so that `EVALSHA` does not wrap again.
    wrapped: Mutex<HashMap<String, Wrapped>>,
}

/// The most wrapped scripts kept; past it the cache starts again empty.
const WRAPPED_KEPT: usize = 1024;

/// The most bytes of wrapped scripts kept; past it the cache starts again empty. A script
/// bigger than a sixteenth of it is wrapped again each time it runs rather than kept.
const WRAPPED_BYTES: usize = 64 << 20;

impl Accounts {
    /// The password of `account`'s ACL user, when this process has made it.
    pub fn password(&self, account: &str) -> Option<String> {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.get(account).cloned()
    }

    /// Remembers the ACL user's password once `ACL SETUSER` succeeded.
    pub fn set_password(&self, account: &Arc<str>, password: String) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.insert(account.clone(), password);
    }

    /// `body` wrapped ([`wrap`]), from the cache when it was wrapped before.
    pub fn wrapped(&self, sha: &str, body: &[u8]) -> Wrapped {
        let mut cache = self.wrapped.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(done) = cache.get(sha) {
            return done.clone();
        }
        let done = wrap(body);
        if done.text.len() > WRAPPED_BYTES / 16 {
            return done;
        }
        let held: usize = cache.values().map(|w| w.text.len()).sum();
        if cache.len() >= WRAPPED_KEPT || held + done.text.len() > WRAPPED_BYTES {
            cache.clear();
        }
        cache.insert(sha.to_owned(), done.clone());
        done
    }

    /// An idle connection of `account`'s, if one is kept.
    pub fn take(&self, account: &str) -> Option<Box<dyn Dedicated>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(account)?;
        let conn = list.pop();
        if list.is_empty() {
            idle.remove(account);
        }
        conn
    }

    /// Keeps a connection that served `account` well, up to a few per account.
    pub fn put(&self, account: &Arc<str>, conn: Box<dyn Dedicated>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.values().map(Vec::len).sum::<usize>() >= IDLE_TOTAL {
            return;
        }
        let list = idle.entry(account.clone()).or_default();
        if list.len() < IDLE_PER_ACCOUNT {
            list.push(conn);
        }
    }
}

/// Whether `version` (`redis_version`) predates the releases that fixed the Lua sandbox
/// escapes of October 2025 (CVE-2025-49844, CVE-2025-46817, CVE-2025-46818,
/// CVE-2025-46819): 6.2.20, 7.2.11, 7.4.6, 8.0.4 and 8.2.2; the 7.0 line got no fix.
pub fn predates_lua_fixes(version: &str) -> bool {
    let mut parts = version
        .split('.')
        .map(|p| p.trim().parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    let fixed_patch = match (major, minor) {
        (6, 2) => 20,
        (7, 2) => 11,
        (7, 4) => 6,
        (8, 0) => 4,
        (8, 2) => 2,
        (m, _) if m < 7 => return true,
        (7, n) if n < 2 => return true,
        _ => return false,
    };
    patch < fixed_patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scripting::sha1hex;

    /// A tenant sending many big distinct scripts does not grow the cache of wrapped
    /// scripts past its bound in bytes (1024 scripts near the request limit were 16 GiB).
    #[test]
    fn the_wrapped_scripts_kept_are_bounded_in_bytes() {
        let accounts = Accounts::default();
        for i in 0..24 {
            let body = format!("return {i} --{}", "x".repeat(3 << 20));
            accounts.wrapped(&sha1hex(body.as_bytes()), body.as_bytes());
        }
        let cache = accounts.wrapped.lock().unwrap();
        let held: usize = cache.values().map(|w| w.text.len()).sum();
        assert!(
            held <= WRAPPED_BYTES,
            "{held} bytes of wrapped scripts kept"
        );
    }

    #[test]
    fn the_preamble_keeps_the_scripts_lines() {
        let w = wrap(b"return 1\nreturn 2");
        assert_eq!(w.text.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(w.text.ends_with(b" return 1\nreturn 2"));
    }

    #[test]
    fn the_table_holds_the_commands_a_script_names() {
        let t = lua_table(b"redis.call('get', KEYS[1]) redis.call(\"ZUNIONSTORE\", 'd', 2)");
        assert!(
            t.contains("['GET']={w=false,f=false,k={{1,1,1,1},}}"),
            "{t}"
        );
        assert!(t.contains("['ZUNIONSTORE']={w=true"), "{t}");
        assert!(t.contains("{2,2}"), "{t}");
        assert!(!t.contains("['SET']"));
        let t =
            lua_table(b"redis.call('config','set','x','y') redis.call('xread','streams','a','0')");
        assert!(
            t.contains("['CONFIG|SET']='ERR command \\'CONFIG SET\\' is not allowed"),
            "{t}"
        );
        assert!(
            t.contains("['XREAD']='ERR command \\'XREAD\\' is not available"),
            "{t}"
        );
    }

    #[test]
    fn versions_before_the_lua_fixes_are_told_apart() {
        for old in [
            "7.0.15", "7.2.10", "7.4.5", "8.0.3", "8.2.1", "6.2.19", "6.0.20", "5.0.7",
        ] {
            assert!(predates_lua_fixes(old), "{old}");
        }
        for new in [
            "7.2.11", "7.4.6", "8.0.4", "8.2.2", "6.2.20", "8.4.0", "9.0.0",
        ] {
            assert!(!predates_lua_fixes(new), "{new}");
        }
    }
}
