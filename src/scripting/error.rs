//! The errors of scripting, each with the line the client sees (Redis 7.0's text where
//! Redis has one).

use std::borrow::Cow;

/// Why a script command, or a `redis.call` inside a script, failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptError {
    /// `numkeys` is not an integer.
    NumKeysNotInteger,
    /// `numkeys` is negative.
    NumKeysNegative,
    /// `numkeys` is more than the arguments that follow it.
    NumKeysTooMany,
    /// `EVALSHA` of a script this account has not loaded.
    NoScript,
    /// The script does not compile; Lua's message.
    Compile(String),
    /// The script raised an error, or a `redis.call` in it failed: the full line (code
    /// first), without the `script: ...` suffix.
    Runtime {
        line: String,
        sha: String,
        at: Option<usize>,
    },
    /// The script ran past `PKV_SCRIPT_TIME_LIMIT`.
    TimedOut { limit_ms: u64 },
    /// The script allocated past the Lua memory limit.
    OutOfMemory { limit: usize },
    /// `PKV_SCRIPTING=off`.
    Disabled,
    /// The account's script registry is full.
    RegistryFull { max: usize },
    /// `SCRIPT KILL` with no script of the account running.
    NotBusy,
    /// `SCRIPT KILL` of a script that has written.
    Unkillable,
    /// The script was stopped by `SCRIPT KILL`.
    Killed,
    /// `SCRIPT FLUSH` with an option other than ASYNC or SYNC.
    FlushOption,
    // --- errors a `redis.call` raises inside the script ---
    /// `redis.call()` with no arguments.
    NoArguments,
    /// A command neither Redis nor pkv knows.
    UnknownCommand,
    /// A command with the wrong number of arguments.
    WrongArity,
    /// A command pkv refuses to everyone (`CONFIG`, ...).
    Denied(String),
    /// A command scripts may not run (`EVAL`, `MULTI`, `SUBSCRIBE`, pkv's own commands).
    NotFromScript,
    /// A write from `EVAL_RO`/`EVALSHA_RO`.
    WriteInReadOnly,
    /// An argument that is not a string or a number.
    BadArgument,
    /// `XREAD ... BLOCK` and the like from a script.
    BlockOption(String),
    /// `redis.setresp` with a protocol other than 2 or 3.
    Resp,
    /// The upstream refused to make or use the account's ACL user, without which scripts
    /// do not run there (`crate::scripting::upstream`); Redis's reply.
    NoAcl(String),
}

impl From<ScriptError> for crate::error::ClientError {
    fn from(err: ScriptError) -> Self {
        crate::error::ClientError::Script(err)
    }
}

impl ScriptError {
    /// The RESP error line, code first.
    pub fn line(&self) -> Cow<'static, str> {
        use ScriptError as E;
        let fixed: &'static str = match self {
            E::NumKeysNotInteger => "ERR value is not an integer or out of range",
            E::NumKeysNegative => "ERR Number of keys can't be negative",
            E::NumKeysTooMany => "ERR Number of keys can't be greater than number of args",
            E::NoScript => "NOSCRIPT No matching script. Please use EVAL.",
            E::Compile(msg) => {
                return format!("ERR Error compiling script (new function): {msg}").into()
            }
            E::Runtime { line, sha, at } => {
                return match at {
                    Some(at) => format!("{line} script: {sha}, on @user_script:{at}."),
                    None => format!("{line} script: {sha}"),
                }
                .into()
            }
            E::TimedOut { limit_ms } => {
                return format!(
                    "ERR script stopped: it ran past PKV_SCRIPT_TIME_LIMIT ({limit_ms} ms)"
                )
                .into()
            }
            E::OutOfMemory { limit } => {
                return format!("ERR script stopped: it used more than {limit} bytes of memory")
                    .into()
            }
            E::Disabled => "ERR scripting is turned off on this pkv (PKV_SCRIPTING=off)",
            E::RegistryFull { max } => {
                return format!(
                    "ERR this account's scripts would pass {max} bytes; SCRIPT FLUSH makes room"
                )
                .into()
            }
            E::NotBusy => "NOTBUSY No scripts in execution right now.",
            E::Unkillable => "UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.",
            E::Killed => "ERR Script killed by user with SCRIPT KILL...",
            E::FlushOption => "ERR SCRIPT FLUSH only support SYNC|ASYNC option",
            E::NoArguments => "ERR Please specify at least one argument for this redis lib call",
            E::UnknownCommand => "ERR Unknown Redis command called from script",
            E::WrongArity => "ERR Wrong number of args calling Redis command from script",
            E::Denied(name) => {
                return format!("ERR command '{name}' is not allowed through pkv").into()
            }
            E::NotFromScript => "ERR This Redis command is not allowed from script",
            E::WriteInReadOnly => "ERR Write commands are not allowed from read-only scripts.",
            E::BadArgument => "ERR Lua redis lib command arguments must be strings or integers",
            E::BlockOption(name) => {
                return format!("ERR {name} command is not allowed with BLOCK option from scripts")
                    .into()
            }
            E::Resp => "ERR RESP version must be 2 or 3.",
            E::NoAcl(why) => {
                return format!(
                    "ERR scripts run on this upstream only as an ACL user of the account's own, and the upstream refused it: {why}"
                )
                .into()
            }
        };
        fixed.into()
    }
}
