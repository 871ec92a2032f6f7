//! The options of `SET` and `GETEX`, read once the way Redis 7.0 reads them
//! (`parseExtendedStringArgumentsOrReply`), so that the meter prices exactly the write the
//! embedded store (or Redis) makes, and both refuse the same requests.

use super::TtlUnit;
use crate::redis_num::c_str;

/// Which command's options are read: the grammar is shared, the words allowed differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionsOf {
    /// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT ts | PXAT ms-ts | KEEPTTL]`
    Set,
    /// `GETEX key [EX s | PX ms | EXAT ts | PXAT ms-ts | PERSIST]`
    GetEx,
}

/// What a command does with its key's time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry<'a> {
    /// `EX`, `PX`, `EXAT` or `PXAT` with its (unparsed) value; the same option given twice
    /// keeps the last value, as in Redis.
    In(TtlUnit, &'a [u8]),
    /// `SET ... KEEPTTL`: the key keeps the TTL it had.
    Keep,
    /// `GETEX ... PERSIST`: the key loses its TTL.
    Persist,
}

/// The options of one `SET` or `GETEX` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetOptions<'a> {
    /// `NX`: write only when the key does not exist.
    pub nx: bool,
    /// `XX`: write only when the key exists.
    pub xx: bool,
    /// `GET`: reply with the old value.
    pub get: bool,
    /// `None`: no expiry option (a `SET` then clears the TTL; a `GETEX` leaves it).
    pub expiry: Option<Expiry<'a>>,
}

/// Options Redis refuses; it answers them with its syntax error ([`crate::error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntaxError;

/// Reads the options of `args` (the whole request, command name first), as Redis does: one
/// word at a time, each refused when it conflicts with one seen before (`NX` after `XX`,
/// `KEEPTTL` after `EX`, `EX` after `PX`...), an expiry word without a value refused. Words
/// are compared as C strings, up to a NUL byte, as Redis compares them.
pub fn parse<A: AsRef<[u8]>>(args: &[A], of: OptionsOf) -> Result<SetOptions<'_>, SyntaxError> {
    let set = of == OptionsOf::Set;
    let mut options = SetOptions::default();
    let mut i = if set { 3 } else { 2 };
    while let Some(arg) = args.get(i) {
        let word = c_str(arg.as_ref());
        let is = |name: &str| word.eq_ignore_ascii_case(name.as_bytes());
        let unit = TtlUnit::option(word);
        let expiry = options.expiry;
        if set && is("NX") && !options.xx {
            options.nx = true;
        } else if set && is("XX") && !options.nx {
            options.xx = true;
        } else if set && is("GET") {
            options.get = true;
        } else if set && is("KEEPTTL") && matches!(expiry, None | Some(Expiry::Keep)) {
            options.expiry = Some(Expiry::Keep);
        } else if !set && is("PERSIST") && matches!(expiry, None | Some(Expiry::Persist)) {
            options.expiry = Some(Expiry::Persist);
        } else if let (Some(unit), Some(value)) = (unit, args.get(i + 1)) {
            match expiry {
                None => {}
                Some(Expiry::In(seen, _)) if seen == unit => {}
                Some(_) => return Err(SyntaxError),
            }
            options.expiry = Some(Expiry::In(unit, value.as_ref()));
            i += 1;
        } else {
            return Err(SyntaxError);
        }
        i += 1;
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words of `line`, as a request (kept for the test's lifetime).
    fn request(line: &'static str) -> &'static [&'static [u8]] {
        Vec::leak(line.split(' ').map(str::as_bytes).collect())
    }

    fn set(line: &'static str) -> Result<SetOptions<'static>, SyntaxError> {
        parse(request(line), OptionsOf::Set)
    }

    #[test]
    fn set_options_read_like_redis() {
        // Accepted and refused (ERR syntax error) by redis-server 7.0.15.
        let ex = Some(Expiry::In(TtlUnit::Seconds, b"10"));
        assert_eq!(set("SET k v"), Ok(SetOptions::default()));
        let nx_get_ex = SetOptions {
            nx: true,
            get: true,
            expiry: ex,
            ..SetOptions::default()
        };
        assert_eq!(set("SET k v nx GET ex 10"), Ok(nx_get_ex));
        assert_eq!(
            set("SET k v EX 10 EX 20").map(|o| o.expiry),
            Ok(Some(Expiry::In(TtlUnit::Seconds, b"20")))
        );
        assert_eq!(set("SET k v NX NX").map(|o| o.nx), Ok(true));
        assert_eq!(
            set("SET k v KEEPTTL KEEPTTL").map(|o| o.expiry),
            Ok(Some(Expiry::Keep))
        );
        for refused in [
            "SET k v NX XX",
            "SET k v XX NX",
            "SET k v EX 10 PX 10",
            "SET k v EX 10 KEEPTTL",
            "SET k v KEEPTTL EX 10",
            "SET k v EX",
            "SET k v PERSIST",
            "SET k v FOO",
            "SET k v EXAT 1 PXAT 1",
        ] {
            assert_eq!(set(refused), Err(SyntaxError), "{refused}");
        }
        // A NUL byte ends the word, as in C.
        let args: [&[u8]; 4] = [b"SET", b"k", b"v", b"nx\0junk"];
        assert_eq!(parse(&args, OptionsOf::Set).map(|o| o.nx), Ok(true));
    }

    #[test]
    fn getex_options_read_like_redis() {
        let getex = |line: &'static str| {
            parse(request(line), OptionsOf::GetEx).map(|o| (o.nx, o.get, o.expiry))
        };
        assert_eq!(getex("GETEX k"), Ok((false, false, None)));
        assert_eq!(
            getex("GETEX k PX 5"),
            Ok((false, false, Some(Expiry::In(TtlUnit::Millis, b"5"))))
        );
        assert_eq!(
            getex("GETEX k persist"),
            Ok((false, false, Some(Expiry::Persist)))
        );
        for refused in [
            "GETEX k NX",
            "GETEX k GET",
            "GETEX k KEEPTTL",
            "GETEX k PERSIST EX 1",
            "GETEX k EX 1 PERSIST",
            "GETEX k EX",
        ] {
            assert_eq!(getex(refused), Err(SyntaxError), "{refused}");
        }
    }
}
