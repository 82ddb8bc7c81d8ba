//! Byte-at-a-time automata that the kernel runs over payload with no data-dependent branch (the
//! verifier limits pending branches to 8192, and a 4 KiB scan with a branch per byte exceeds it).
//! Each table entry packs the next state in the low byte and, for the expiration automaton, a
//! digit to accumulate (`digit + 1`, 0 for none) in the high byte.
//!
//! Byte 0 maps every state to itself: NUL never occurs in HTTP headers or JSON text, and the
//! kernel pads short chunks with zeros so that its loop count can be a constant.
//!
//! The tables are built at compile time and shared: the kernel indexes them from `.rodata`, and
//! userspace tests run the very same tables over crafted inputs split at every byte.

/// Entries per state (one per byte value).
pub const STRIDE: usize = 256;
/// States per table, a power of two so that `state & (STATES - 1)` bounds the index.
pub const STATES: usize = 64;
pub const TABLE_LEN: usize = STATES * STRIDE;

/// One step: the next state and the new accumulator.
#[inline(always)]
pub fn step(table: &[u16; TABLE_LEN], state: u8, acc: u64, byte: u8) -> (u8, u64) {
    let entry = table[((state as usize & (STATES - 1)) * STRIDE) | byte as usize];
    let d = (entry >> 8) as u64;
    // take = 1 when the entry carries a digit (d in 1..=10), computed without a branch.
    let take = (d + 15) >> 4;
    let acc = acc * (1 + 9 * take) + (d - take);
    ((entry & 0xff) as u8, acc)
}

/// `"Expiration"`, optional spaces, `:`, optional spaces, `"`, then `YYYY-MM-DDThh:mm:ss`.
/// The accumulator ends as the decimal number `YYYYMMDDhhmmss`.
pub mod expiration {
    use super::*;

    pub const KEY: &[u8] = b"\"Expiration\"";
    /// States `0..KEY.len()`: that many key bytes matched.
    pub const COLON: u8 = KEY.len() as u8;
    pub const QUOTE: u8 = COLON + 1;
    /// `VALUE + k`: k characters of the timestamp read.
    pub const VALUE: u8 = QUOTE + 1;
    pub const VALUE_TEMPLATE: &[u8] = b"0000-00-00T00:00:00";
    /// Timestamp complete: the accumulator holds it.
    pub const ACCEPT: u8 = VALUE + VALUE_TEMPLATE.len() as u8;
    /// Something after the key was not a timestamp.
    pub const FAIL: u8 = ACCEPT + 1;
    /// Set by the kernel once it has reported ACCEPT or FAIL: nothing more to do.
    pub const FINISHED: u8 = FAIL + 1;

    pub static TABLE: [u16; TABLE_LEN] = build();

    const fn is_space(b: u8) -> bool {
        matches!(b, b' ' | b'\t' | b'\r' | b'\n')
    }

    const fn build() -> [u16; TABLE_LEN] {
        let mut t = [0u16; TABLE_LEN];
        let mut s = 0usize;
        while s < STATES {
            let mut b = 0usize;
            while b < STRIDE {
                let c = b as u8;
                let st = s as u8;
                let entry: u16 = if c == 0 || st >= ACCEPT {
                    st as u16
                } else if st < COLON {
                    if c == KEY[s] {
                        (st + 1) as u16
                    } else if c == b'"' {
                        // `"` is the key's only border: a mismatch on it may start a new match.
                        1
                    } else {
                        0
                    }
                } else if st == COLON {
                    if c == b':' {
                        QUOTE as u16
                    } else if is_space(c) {
                        st as u16
                    } else {
                        FAIL as u16
                    }
                } else if st == QUOTE {
                    if c == b'"' {
                        VALUE as u16
                    } else if is_space(c) {
                        st as u16
                    } else {
                        FAIL as u16
                    }
                } else {
                    let pos = (st - VALUE) as usize;
                    let want = VALUE_TEMPLATE[pos];
                    if want == b'0' {
                        if c.is_ascii_digit() {
                            ((st + 1) as u16) | (((c - b'0') as u16 + 1) << 8)
                        } else {
                            FAIL as u16
                        }
                    } else if c == want {
                        (st + 1) as u16
                    } else {
                        FAIL as u16
                    }
                };
                t[s * STRIDE + b] = entry;
                b += 1;
            }
            s += 1;
        }
        t
    }
}

/// A header line named `X-aws-ec2-metadata-token` (any case): the request is IMDSv2.
pub mod token_header {
    use super::*;

    /// Matched from the newline that ends the previous line; lower case.
    pub const PATTERN: &[u8] = b"\nx-aws-ec2-metadata-token:";
    pub const ACCEPT: u8 = PATTERN.len() as u8;

    pub static TABLE: [u16; TABLE_LEN] = build();

    const fn build() -> [u16; TABLE_LEN] {
        let mut t = [0u16; TABLE_LEN];
        let mut s = 0usize;
        while s < STATES {
            let mut b = 0usize;
            while b < STRIDE {
                let c = b as u8;
                let st = s as u8;
                let entry: u16 = if c == 0 || st >= ACCEPT {
                    st as u16
                } else if c.to_ascii_lowercase() == PATTERN[s] {
                    (st + 1) as u16
                } else if c == b'\n' {
                    // The pattern's only border is its leading newline.
                    1
                } else {
                    0
                };
                t[s * STRIDE + b] = entry;
                b += 1;
            }
            s += 1;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a table over `chunks` in order, as the kernel does over TCP segments: the state and
    /// accumulator carry over, and each chunk is padded with zeros as the kernel's buffer is.
    fn run(table: &[u16; TABLE_LEN], chunks: &[&[u8]]) -> (u8, u64) {
        let (mut state, mut acc) = (0u8, 0u64);
        for chunk in chunks {
            let mut padded = chunk.to_vec();
            padded.resize(chunk.len() + 7, 0);
            for &b in &padded {
                (state, acc) = step(table, state, acc, b);
            }
        }
        (state, acc)
    }

    const DOC: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n{\"Code\":\"Success\",\
\"LastUpdated\":\"2026-11-28T10:00:00Z\",\"Type\":\"AWS-HMAC\",\"AccessKeyId\":\"ASIAXYZ\",\
\"SecretAccessKey\":\"s3cr\\\"et\",\"Token\":\"IQoJb3JpZ2luX2VjE\",\"Expiration\":\"2026-11-28T10:15:00Z\"}";

    #[test]
    fn finds_expiration_in_one_piece() {
        assert_eq!(run(&expiration::TABLE, &[DOC]), (expiration::ACCEPT, 20261128101500));
    }

    #[test]
    fn finds_expiration_split_at_every_byte_and_in_three_pieces() {
        for i in 0..=DOC.len() {
            let r = run(&expiration::TABLE, &[&DOC[..i], &DOC[i..]]);
            assert_eq!(r, (expiration::ACCEPT, 20261128101500), "split at {i}");
        }
        let key = DOC.windows(12).position(|w| w == expiration::KEY).unwrap();
        for i in key..key + 34 {
            for j in i..key + 34 {
                let r = run(&expiration::TABLE, &[&DOC[..i], &DOC[i..j], &DOC[j..]]);
                assert_eq!(r.0, expiration::ACCEPT, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn tolerates_whitespace_and_restarts_on_a_quote() {
        let doc = b"{\"\"Expiration\" : \"2030-01-02T03:04:05Z\"}";
        assert_eq!(run(&expiration::TABLE, &[doc]), (expiration::ACCEPT, 20300102030405));
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for bad in [
            &b"\"Expiration\":\"2026/11/28T10:15:00Z\""[..],
            b"\"Expiration\":\"tomorrow\"",
            b"\"Expiration\":1795860900",
            b"\"Expiration\"x",
            b"\"Expiration\":\"2026-11-28 10:15:00Z\"",
        ] {
            assert_eq!(
                run(&expiration::TABLE, &[bad]).0,
                expiration::FAIL,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_document_without_expiration_never_accepts() {
        let doc = b"{\"Code\":\"Success\",\"Expirations\":3,\"Expire\":\"x\",\"Token\":\"abc\"}";
        let (state, _) = run(&expiration::TABLE, &[doc]);
        assert!(state < expiration::ACCEPT);
    }

    #[test]
    fn terminal_states_are_sticky() {
        for s in [expiration::ACCEPT, expiration::FAIL, expiration::FINISHED] {
            for b in 0..=255u8 {
                assert_eq!(step(&expiration::TABLE, s, 7, b), (s, 7));
            }
        }
    }

    #[test]
    fn token_header_any_case_not_the_ttl_header() {
        let with = |h: &[u8]| {
            let mut req = b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n".to_vec();
            req.extend_from_slice(h);
            req.extend_from_slice(b"\r\n\r\n");
            run(&token_header::TABLE, &[&req]).0 == token_header::ACCEPT
        };
        assert!(with(b"X-aws-ec2-metadata-token: AQAEAF"));
        assert!(with(b"x-AWS-EC2-METADATA-TOKEN:AQAEAF"));
        assert!(!with(b"X-aws-ec2-metadata-token-ttl-seconds: 21600"));
        assert!(!with(b"Authorization: x-aws-ec2-metadata-token: no"));
        assert!(!with(b""));
    }

    #[test]
    fn nul_bytes_never_move_a_state() {
        for s in 0..STATES as u8 {
            assert_eq!(step(&expiration::TABLE, s, 5, 0), (s, 5));
            assert_eq!(step(&token_header::TABLE, s, 0, 0), (s, 0));
        }
    }
}
