//! Which of Redis Cluster's 16384 hash slots a key belongs to.
//!
//! As the Redis Cluster specification defines it (cluster-spec, "Keys distribution model"):
//! the slot is CRC16 of the key modulo 16384, where CRC16 is the XMODEM variant
//! (polynomial 0x1021, initial value 0, no reflection, no final xor). When the key holds a
//! `{` followed later by a `}` with at least one byte between them, only the bytes between
//! the first `{` and the first `}` after it (the hash tag) are hashed, so that keys sharing
//! a tag share a slot.

/// How many hash slots a Redis Cluster has.
pub const SLOTS: usize = 16384;

/// CRC16/XMODEM of `bytes`.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The part of `key` that is hashed: its hash tag when it has a non-empty one, else all of
/// it.
pub fn hashed_part(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The hash slot of `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hashed_part(key)) & (SLOTS as u16 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_specs_check_value() {
        // The cluster specification gives CRC16("123456789") = 0x31C3 for this variant.
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn hash_tags_follow_the_spec() {
        assert_eq!(hashed_part(b"{user1000}.following"), b"user1000");
        assert_eq!(hashed_part(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hashed_part(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hashed_part(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hashed_part(b"no tag"), b"no tag");
        assert_eq!(hashed_part(b"open{only"), b"open{only");
        assert_eq!(key_slot(b"{user}:a"), key_slot(b"{user}:b"));
    }
}
