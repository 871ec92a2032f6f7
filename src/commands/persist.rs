//! `PERSIST` and `GETEX ... PERSIST` with metering on: storage must have an end (SPEC 7), so
//! "no expiry" buys the longest one, `PKV_MAX_TTL` from now, paid as any TTL extension.
//!
//! Both are served as the expiry command that has that effect: `PERSIST key` as
//! `PEXPIRE key <max>` and `GETEX key PERSIST` as `GETEX key PX <max>`, before anything else
//! reads the request, so the meter, the rewrite and both backends see an ordinary expiry.
//! The replies agree with Redis's: PERSIST answers 1 when the key exists (every key pkv
//! stores has a TTL, which PERSIST takes off) and 0 when it does not, as PEXPIRE does; GETEX
//! answers the value either way. TTL then reports the time bought.

use bytes::Bytes;

use super::set_options::{self, Expiry, OptionsOf};
use super::{row, CommandSpec};
use crate::redis_num::c_str;

/// The request to run instead of `args`, when it asks for no expiry; `None` leaves it as it
/// is. `max_ttl_secs` is `PKV_MAX_TTL`.
pub fn as_longest_expiry(
    spec: &'static CommandSpec,
    args: &[Bytes],
    max_ttl_secs: u64,
) -> Option<(&'static CommandSpec, Vec<Bytes>)> {
    let longest = || Bytes::from(max_ttl_secs.saturating_mul(1000).to_string());
    match spec.name {
        "PERSIST" => {
            let pexpire = row("PEXPIRE")?;
            let key = args.get(1)?.clone();
            Some((
                pexpire,
                vec![Bytes::from_static(b"PEXPIRE"), key, longest()],
            ))
        }
        "GETEX" => {
            let options = set_options::parse(args, OptionsOf::GetEx).ok()?;
            if options.expiry != Some(Expiry::Persist) {
                return None;
            }
            // The option parsed, so exactly one word after the key is PERSIST.
            let mut out = Vec::with_capacity(args.len() + 1);
            for arg in args {
                if out.len() >= 2 && c_str(arg).eq_ignore_ascii_case(b"PERSIST") {
                    out.push(Bytes::from_static(b"PX"));
                    out.push(longest());
                } else {
                    out.push(arg.clone());
                }
            }
            Some((spec, out))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::lookup;

    fn run(words: &[&str]) -> Option<Vec<String>> {
        let args: Vec<Bytes> = words.iter().map(|w| Bytes::from(w.to_string())).collect();
        let spec = lookup(&args).ok()?;
        as_longest_expiry(spec, &args, 100).map(|(spec, args)| {
            assert_eq!(
                spec.name.as_bytes(),
                args[0].to_ascii_uppercase().as_slice()
            );
            args.iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
    }

    #[test]
    fn persist_becomes_the_longest_expiry() {
        assert_eq!(run(&["persist", "k"]).unwrap(), ["PEXPIRE", "k", "100000"]);
        assert_eq!(
            run(&["GETEX", "k", "persist"]).unwrap(),
            ["GETEX", "k", "PX", "100000"]
        );
        // A key named like the option is a key.
        assert_eq!(
            run(&["GETEX", "persist", "PERSIST"]).unwrap(),
            ["GETEX", "persist", "PX", "100000"]
        );
    }

    #[test]
    fn other_requests_are_left_alone() {
        assert_eq!(run(&["GETEX", "k"]), None);
        assert_eq!(run(&["GETEX", "persist", "EX", "10"]), None);
        assert_eq!(run(&["EXPIRE", "k", "10"]), None);
        // Refused options stay refused, by the command itself.
        assert_eq!(run(&["GETEX", "k", "PERSIST", "EX", "1"]), None);
    }
}
