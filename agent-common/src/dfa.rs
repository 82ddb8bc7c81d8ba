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
