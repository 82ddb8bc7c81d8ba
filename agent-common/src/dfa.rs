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
//!
//! Every table has 256 states (128 KiB), so the state is a whole `u8` and needs no mask. The
//! high byte of an entry is the automaton's action: a digit for [`expiration`], flags and an SDK
//! id for [`headers`], path kind, method and role bookkeeping for [`request_line`].

/// Entries per state (one per byte value).
pub const STRIDE: usize = 256;
/// States of a table: every `u8` is a state.
pub const LARGE_STATES: usize = 256;
pub const LARGE_TABLE_LEN: usize = LARGE_STATES * STRIDE;

/// One step of a digit automaton ([`expiration`]): the next state and the new accumulator.
#[inline(always)]
pub fn step_large(table: &[u16; LARGE_TABLE_LEN], state: u8, acc: u64, byte: u8) -> (u8, u64) {
    digit_action(table[((state as usize) << 8) | byte as usize], acc)
}

#[inline(always)]
fn digit_action(entry: u16, acc: u64) -> (u8, u64) {
    let d = (entry >> 8) as u64;
    // take = 1 when the entry carries a digit (d in 1..=10), computed without a branch.
    let take = (d + 15) >> 4;
    let acc = acc * (1 + 9 * take) + (d - take);
    ((entry & 0xff) as u8, acc)
}

/// A table entry of an automaton whose high byte is an action ([`headers`], [`request_line`]).
const fn entry(next: u8, action: u8) -> u16 {
    next as u16 | ((action as u16) << 8)
}

/// Whether `a` and `b` both have at least `len` bytes and agree on the first `len`.
const fn same_prefix(a: &[u8], b: &[u8], len: usize) -> bool {
    if a.len() < len || b.len() < len {
        return false;
    }
    let mut i = 0;
    while i < len {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The states of a trie over the byte strings `keys[k].0` (the product tokens of [`headers`],
/// the paths of [`request_line`]): `nodes[k][len]` is the state of `keys[k]`'s first `len` bytes,
/// `root` for 0, the others numbered from `first` in order of first appearance (the first key
/// with a prefix owns its state). With `ends`, a whole key has a state of its own too (a path
/// goes on after it); without, it has none (a token's last byte acts instead). Also returns
/// the number of states numbered.
const fn trie<T, const N: usize, const W: usize>(
    keys: &[(&[u8], T)],
    root: u8,
    first: u8,
    ends: bool,
) -> ([[u8; W]; N], usize) {
    assert!(keys.len() == N);
    let mut nodes = [[0u8; W]; N];
    let mut n = 0usize;
    let mut q = 0usize;
    while q < N {
        let key = keys[q].0;
        let states = if ends { key.len() + 1 } else { key.len() };
        assert!(states <= W);
        nodes[q][0] = root;
        let mut l = 1usize;
        while l < states {
            let mut r = 0usize;
            while r < q && !same_prefix(keys[r].0, key, l) {
                r += 1;
            }
            if r < q {
                nodes[q][l] = nodes[r][l];
            } else {
                nodes[q][l] = first + n as u8;
                n += 1;
            }
            l += 1;
        }
        q += 1;
    }
    (nodes, n)
}

/// `"Expiration"`, optional spaces, `:`, optional spaces, `"`, then `YYYY-MM-DDThh:mm:ss`.
/// The accumulator ends as the decimal number `YYYYMMDDhhmmss`.
///
/// A `Transfer-Encoding: chunked` boundary (`\r\n`, the next chunk's size in hex, `\r\n`) may fall
/// anywhere inside the key, between the tokens or inside the timestamp: JSON strings cannot hold
/// a raw CR, so a CR there can only start a boundary, which is skipped (four states per place it
/// can interrupt, which is why this is a 256-state table). Chunk extensions (`;name=value`),
/// which no credential server sends, end the search.
pub mod expiration {
    use super::*;

    pub const KEY: &[u8] = b"\"Expiration\"";
    /// States `0..KEY.len()`: that many key bytes matched.
    pub const COLON: u8 = KEY.len() as u8;
    pub const QUOTE: u8 = COLON + 1;
    /// `VALUE + k`: k characters of the timestamp read.
    pub const VALUE: u8 = QUOTE + 1;
    pub const VALUE_TEMPLATE: &[u8] = b"0000-00-00T00:00:00";
    /// The last character of the timestamp is next.
    const LAST: u8 = VALUE + VALUE_TEMPLATE.len() as u8 - 1;
    /// `BOUNDARY + 4 * (s - 1) + k`: inside a chunk boundary that interrupted state `s` (1 to
    /// `LAST`), k = 0 after its CR, 1 after CR LF, 2 in the size, 3 after the size's CR.
    pub const BOUNDARY: u8 = 64;
    const INTERRUPTIBLE: usize = LAST as usize;
    /// Timestamp complete: the accumulator holds it. The three terminal states are the highest,
    /// so `state < ACCEPT` means "still searching", whatever the state.
    pub const ACCEPT: u8 = 253;
    /// Something after the key was not a timestamp.
    pub const FAIL: u8 = 254;
    /// Set by the kernel once it has reported ACCEPT or FAIL: nothing more to do.
    pub const FINISHED: u8 = 255;
    const _: () = assert!(BOUNDARY as usize + 4 * INTERRUPTIBLE <= ACCEPT as usize);
    const _: () = assert!(LAST < BOUNDARY);

    pub static TABLE: [u16; LARGE_TABLE_LEN] = build();

    const fn is_space(b: u8) -> bool {
        matches!(b, b' ' | b'\t' | b'\r' | b'\n')
    }

    const fn is_hex(b: u8) -> bool {
        b.is_ascii_hexdigit()
    }

    /// Where a broken-off boundary leaves the search: inside the key, start over (it was not
    /// our key); after it, the document is not what it claimed.
    const fn broken(interrupted: u8) -> u16 {
        if interrupted < COLON { 0 } else { FAIL as u16 }
    }

    /// The entry of a state that is not inside a boundary.
    const fn plain(st: u8, c: u8) -> u16 {
        if c == 0 || st >= ACCEPT {
            return st as u16;
        }
        if st > 0 && c == b'\r' {
            return (BOUNDARY + 4 * (st - 1)) as u16;
        }
        if st < COLON {
            if c == KEY[st as usize] {
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
            let next = if st == LAST { ACCEPT } else { st + 1 };
            if want == b'0' {
                if c.is_ascii_digit() {
                    (next as u16) | (((c - b'0') as u16 + 1) << 8)
                } else {
                    FAIL as u16
                }
            } else if c == want {
                next as u16
            } else {
                FAIL as u16
            }
        }
    }

    /// The entry of boundary sub-state `k` of interrupted state `s`.
    const fn boundary(s: u8, k: u8, c: u8) -> u16 {
        let here = BOUNDARY + 4 * (s - 1) + k;
        let whitespace = s == COLON || s == QUOTE;
        if c == 0 {
            return here as u16;
        }
        match k {
            0 => {
                if c == b'\n' {
                    (here + 1) as u16
                } else if whitespace {
                    plain(s, c) // the CR was whitespace between tokens
                } else {
                    broken(s)
                }
            }
            1 => {
                if is_hex(c) {
                    (here + 1) as u16
                } else if whitespace {
                    plain(s, c) // CR LF was whitespace between tokens
                } else {
                    broken(s)
                }
            }
            2 => {
                if is_hex(c) {
                    here as u16
                } else if c == b'\r' {
                    (here + 1) as u16
                } else {
                    broken(s)
                }
            }
            _ => {
                if c == b'\n' {
                    s as u16
                } else {
                    broken(s)
                }
            }
        }
    }

    const fn build() -> [u16; LARGE_TABLE_LEN] {
        let mut t = [0u16; LARGE_TABLE_LEN];
        let mut st = 0usize;
        while st < LARGE_STATES {
            let mut b = 0usize;
            while b < STRIDE {
                let c = b as u8;
                let entry = if st < BOUNDARY as usize || st >= ACCEPT as usize {
                    if st <= LAST as usize || st >= ACCEPT as usize {
                        plain(st as u8, c)
                    } else {
                        st as u16
                    }
                } else {
                    let rel = st - BOUNDARY as usize;
                    let s = (rel / 4) as u8 + 1;
                    if (s as usize) <= INTERRUPTIBLE {
                        boundary(s, (rel % 4) as u8, c)
                    } else {
                        st as u16
                    }
                };
                t[st * STRIDE + b] = entry;
                b += 1;
            }
            st += 1;
        }
        t
    }
}

/// The header block of a request, in one pass from its first byte, across any number of chunks
/// and segments (the state lives in the flow): which headers it holds, which client sent it,
/// where it ends, and whether another request follows it in the same bytes (pipelining). The
/// entries' actions accumulate ([`headers::step`]), so a header is found wherever it is: first,
/// last, past the first 512 bytes, in a later segment.
///
/// Shape: a line is skipped to its newline; at the start of a line the header names that matter
/// (lower-cased, so any case matches) are followed, and a name that matches up to its `:` acts:
/// - `X-aws-ec2-metadata-token:` sets `FLAG_TOKEN`;
/// - `User-Agent:` leads, past optional whitespace, into a trie of the leading product tokens of
///   `sdk::PRODUCTS`; the first token that matches whole sets its family id, and any other value
///   (empty, binary, unknown, cut short by its line end) sets `Sdk::Other`. No header leaves the
///   id at `Sdk::None`.
///
/// The line states exist twice: before a `User-Agent` was read (phase A, where `user-agent:` is
/// a branch of the name trie) and after (phase B, where it is not). The id is set on the only
/// transitions from A to B, so it is set at most once, by the table itself: the first
/// `User-Agent` counts, later ones are skipped, and the step is a plain OR of the entry's action
/// into an accumulator (flags in its low bits, the id above them), no set-once arithmetic per
/// byte. An empty line ends the block (from either phase). The states after the end are the
/// highest, so `state < END` means "the block goes on".
pub mod headers {
    use super::*;
    use crate::sdk::{PRODUCTS, Sdk};

    /// `X-aws-ec2-metadata-token:` (not `…-token-ttl-seconds`): the request is IMDSv2.
    pub const FLAG_TOKEN: u8 = 1;
    /// The empty line that ends the header block was seen.
    pub const FLAG_END: u8 = 2;
    /// After the end, the bytes start another request line (`METHOD /`): pipelining.
    pub const FLAG_PIPELINED: u8 = 4;
    /// An entry's action, and the accumulator: flags in the low bits, an `Sdk` id (0: none)
    /// above them.
    pub const FLAGS_MASK: u8 = 0x07;
    pub const SDK_SHIFT: u8 = 3;
    const _: () = assert!(Sdk::ALL.len() <= 1 << (8 - SDK_SHIFT));
    const _: () = assert!((FLAG_TOKEN | FLAG_END | FLAG_PIPELINED) == FLAGS_MASK);

    pub const TOKEN_NAME: &[u8] = b"x-aws-ec2-metadata-token:";
    pub const AGENT_NAME: &[u8] = b"user-agent:";

    // The line states of a phase, as offsets from the phase's first state.
    /// Inside a line, skipping to its end (the request line is the first such line).
    const IN: u8 = 0;
    const CR_: u8 = 1;
    const START: u8 = 2;
    /// A CR at the start of a line: the end of the block when LF follows.
    const EMPTY: u8 = 3;
    /// `TOK + k`: k + 1 bytes of the token header's name matched.
    const TOK: u8 = 4;
    const LINE_STATES: u8 = TOK + TOKEN_NAME.len() as u8 - 1;

    /// Phase A: no `User-Agent` read yet. The scan of a request starts here.
    pub const IN_LINE: u8 = 0;
    /// `AGENT + k`: k + 1 bytes of `user-agent:` matched (phase A only).
    const AGENT: u8 = LINE_STATES;
    /// After `User-Agent:` and any whitespace: the root of the product trie.
    const VALUE: u8 = AGENT + AGENT_NAME.len() as u8 - 1;
    /// First node of the product trie; the trie takes the states from here to `B`.
    const PRODUCT: u8 = VALUE + 1;
    /// Phase B: a `User-Agent` was read (its id is in the accumulator).
    const B: u8 = PRODUCT + PRODUCT_TRIE.1 as u8;
    /// The header block has ended; nothing after it seen yet.
    pub const END: u8 = B + LINE_STATES;
    /// `METHOD + k`: k upper-case letters of what follows the end.
    const METHOD: u8 = END + 1;
    const METHOD_MAX: u8 = 7;
    /// A method and a space: `/` makes it a request line.
    const METHOD_SPACE: u8 = METHOD + METHOD_MAX;
    /// Something else follows the block (a body): nothing more to find.
    pub const BODY: u8 = METHOD_SPACE + 1;
    /// Another request follows: nothing more to find.
    pub const PIPELINED: u8 = BODY + 1;
    pub const STATES_USED: usize = PIPELINED as usize + 1;
    const _: () = assert!(STATES_USED <= LARGE_STATES);

    pub static TABLE: [u16; LARGE_TABLE_LEN] = build();

    /// What the scan found so far.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Scan {
        pub state: u8,
        /// `FLAG_*`, ORed in as found.
        pub flags: u8,
        /// The `Sdk` id of the first `User-Agent`; 0 until one is read.
        pub sdk: u8,
    }

    impl Scan {
        /// The accumulator [`step_packed`] carries: the header flags and the id.
        #[inline(always)]
        pub fn packed(&self) -> u8 {
            (self.flags & FLAGS_MASK) | (self.sdk << SDK_SHIFT)
        }

        /// Takes back a state and accumulator from [`step_packed`].
        #[inline(always)]
        pub fn unpack(&mut self, state: u8, acc: u8) {
            self.state = state;
            self.flags |= acc & FLAGS_MASK;
            self.sdk = acc >> SDK_SHIFT;
        }
    }

    /// One byte: the next state, and the entry's action ORed into `acc` (the kernel's loop).
    #[inline(always)]
    pub fn step_packed(state: u8, acc: u8, byte: u8) -> (u8, u8) {
        let entry = TABLE[((state as usize) << 8) | byte as usize];
        (entry as u8, acc | (entry >> 8) as u8)
    }

    /// [`step_packed`] on a [`Scan`].
    #[inline(always)]
    pub fn step(scan: &mut Scan, byte: u8) {
        let (state, acc) = step_packed(scan.state, scan.packed(), byte);
        scan.unpack(state, acc);
    }

    /// Runs the automaton over `chunks` from the start of a request, as the kernel does over
    /// TCP segments: the scan carries over, and each chunk is followed by the zeros that pad the
    /// kernel's buffer (for tests and fuzzing).
    #[cfg(any(test, feature = "user"))]
    pub fn scan_chunks(chunks: &[&[u8]]) -> Scan {
        let mut scan = Scan::default();
        for chunk in chunks {
            for &b in chunk.iter().chain(&[0u8; 7]) {
                step(&mut scan, b);
            }
        }
        scan
    }

    const fn sdk_action(sdk: Sdk) -> u8 {
        (sdk as u8) << SDK_SHIFT
    }

    /// Inside a line of phase `base` (or after a name that did not match): CR and LF lead to
    /// the next line.
    const fn skip(base: u8, c: u8, action: u8) -> u16 {
        match c {
            b'\r' => entry(base + CR_, action),
            b'\n' => entry(base + START, action),
            _ => entry(base + IN, action),
        }
    }

    /// Continues a header name of which `k` bytes matched (state `first + k - 1`) in phase
    /// `base`; its `:` leads to `done` with `action`.
    #[allow(clippy::too_many_arguments)]
    const fn name(
        name: &[u8],
        base: u8,
        first: u8,
        k: usize,
        lower: u8,
        c: u8,
        done: u8,
        action: u8,
    ) -> u16 {
        if lower != name[k] {
            skip(base, c, 0)
        } else if k + 1 == name.len() {
            entry(done, action)
        } else {
            entry(first + k as u8, 0)
        }
    }

    /// A line state of phase `base` (offset `off`).
    const fn line(base: u8, off: u8, c: u8) -> u16 {
        let lower = c.to_ascii_lowercase();
        if off == IN || off == CR_ {
            if off == CR_ && c == b'\n' { entry(base + START, 0) } else { skip(base, c, 0) }
        } else if off == START || off == EMPTY {
            if c == b'\n' {
                entry(END, FLAG_END)
            } else if off == START && c == b'\r' {
                entry(base + EMPTY, 0)
            } else if off == START && lower == TOKEN_NAME[0] {
                entry(base + TOK, 0)
            } else if off == START && base == 0 && lower == AGENT_NAME[0] {
                entry(AGENT, 0)
            } else {
                skip(base, c, 0)
            }
        } else {
            let k = (off - TOK + 1) as usize;
            name(TOKEN_NAME, base, base + TOK, k, lower, c, base + IN, FLAG_TOKEN)
        }
    }

    const fn next(st: u8, c: u8) -> u16 {
        if c == 0 || st == BODY || st == PIPELINED || st as usize >= STATES_USED {
            return entry(st, 0);
        }
        if st < LINE_STATES {
            line(0, st, c)
        } else if st < VALUE {
            let k = (st - AGENT + 1) as usize;
            let lower = c.to_ascii_lowercase();
            name(AGENT_NAME, 0, AGENT, k, lower, c, VALUE, 0)
        } else if st < B {
            entry(st, 0) // the product trie's rows are filled by fill_products
        } else if st < END {
            line(B, st - B, c)
        } else if st == END && (c == b'\r' || c == b'\n') {
            // Empty lines before a request line are allowed (RFC 9112, 2.2).
            entry(END, 0)
        } else if c.is_ascii_uppercase() {
            // END or METHOD + k: another method letter (at most METHOD_MAX of them).
            let k = if st == END { 0 } else { st - METHOD + 1 };
            if st == METHOD_SPACE || k >= METHOD_MAX {
                entry(BODY, 0)
            } else {
                entry(METHOD + k, 0)
            }
        } else if c == b' ' && st >= METHOD + 2 && st < METHOD_SPACE {
            entry(METHOD_SPACE, 0)
        } else if c == b'/' && st == METHOD_SPACE {
            entry(PIPELINED, FLAG_PIPELINED)
        } else {
            entry(BODY, 0)
        }
    }

    const LONGEST: usize = 24;

    /// `NODES[p][len]`: the trie node of `PRODUCTS[p]`'s first `len` bytes (`VALUE` for 0; a
    /// whole token has no node: its last byte sets the id).
    const NODES: [[u8; LONGEST]; PRODUCTS.len()] = PRODUCT_TRIE.0;
    const PRODUCT_TRIE: ([[u8; LONGEST]; PRODUCTS.len()], usize) =
        trie(PRODUCTS, VALUE, PRODUCT, false);

    // A token that were a prefix of another would end where the other goes on.
    const _: () = {
        let mut q = 0usize;
        while q < PRODUCTS.len() {
            let token = PRODUCTS[q].0;
            assert!(!token.is_empty());
            let mut r = 0usize;
            while r < PRODUCTS.len() {
                assert!(r == q || !same_prefix(PRODUCTS[r].0, token, token.len()));
                r += 1;
            }
            q += 1;
        }
    };

    /// The trie's rows: by default the value names no known product (`Other`, and the rest of
    /// the line is skipped in phase B); whitespace before the value is skipped; then the edges
    /// of every token, in both cases, the last byte of each setting its family (and phase B).
    const fn fill_products(t: &mut [u16; LARGE_TABLE_LEN]) {
        let mut row = VALUE as usize;
        while row < B as usize {
            let mut b = 1usize;
            while b < STRIDE {
                t[row * STRIDE + b] = skip(B, b as u8, sdk_action(Sdk::Other));
                b += 1;
            }
            row += 1;
        }
        t[VALUE as usize * STRIDE + b' ' as usize] = entry(VALUE, 0);
        t[VALUE as usize * STRIDE + b'\t' as usize] = entry(VALUE, 0);
        let mut p = 0usize;
        while p < PRODUCTS.len() {
            let (token, sdk) = PRODUCTS[p];
            let mut l = 0usize;
            while l < token.len() {
                let e = if l + 1 == token.len() {
                    entry(B + IN, sdk_action(sdk))
                } else {
                    entry(NODES[p][l + 1], 0)
                };
                let row = NODES[p][l] as usize * STRIDE;
                t[row + token[l] as usize] = e;
                t[row + token[l].to_ascii_uppercase() as usize] = e;
                l += 1;
            }
            p += 1;
        }
    }

    const fn build() -> [u16; LARGE_TABLE_LEN] {
        let mut t = [0u16; LARGE_TABLE_LEN];
        let mut s = 0usize;
        while s < LARGE_STATES {
            let mut b = 0usize;
            while b < STRIDE {
                t[s * STRIDE + b] = next(s as u8, b as u8);
                b += 1;
            }
            s += 1;
        }
        fill_products(&mut t);
        t
    }
}

/// The request line: method, path kind, IAM role, protocol. Replaces a parser of branches and
/// loops whose exits multiplied the verifier's paths (it cost 470k of the egress program's
/// instructions); this one is a table walk over the first chunk, whatever the bytes.
///
/// `METHOD SP PATH SP HTTP/` with METHOD 3 to 7 upper-case letters; the path is matched against a
/// trie of the paths that name a kind:
/// - `/latest/api/token`: an IMDSv2 session token;
/// - `/latest/meta-data/iam/security-credentials[-extended][/]`: the role list;
/// - `/latest/meta-data/iam/security-credentials[-extended]/ROLE[/]`: IMDS credentials, ROLE in
///   the IAM role-name alphabet `[A-Za-z0-9+=,.@_-]` (its length is checked by the caller);
/// - `/v1/credentials…` (EKS Pod Identity), `/v2/credentials…` (ECS): container credentials;
/// - anything else: another path (which, on a container endpoint, may still be answered with
///   credentials: the response decides).
///
/// A NUL byte is an error in every non-terminal state, so the zeros that pad a short chunk end an
/// unfinished line with the reason it is unfinished.
pub mod request_line {
    use super::*;

    // Actions in an entry's high byte.
    /// Path kind, set by the space that ends the path (`KIND_*`).
    pub const KIND_MASK: u8 = 0x07;
    pub const KIND_TOKEN: u8 = 1;
    pub const KIND_ROLE_LIST: u8 = 2;
    pub const KIND_IMDS_ROLE: u8 = 3;
    pub const KIND_ECS: u8 = 4;
    pub const KIND_POD_IDENTITY: u8 = 5;
    pub const KIND_OTHER: u8 = 6;
    /// Method, set by the space after it (`METHOD_*`, shifted by 3).
    pub const METHOD_SHIFT: u8 = 3;
    pub const METHOD_GET: u8 = 1;
    pub const METHOD_PUT: u8 = 2;
    pub const METHOD_OTHER: u8 = 3;
    /// This byte is part of the role name.
    pub const ROLE_BYTE: u8 = 0x20;
    /// This byte comes before the role name (counted, the count is where the role starts: a
    /// sum rather than a position recorded on one byte, which would be a branch on BPF).
    pub const BEFORE_ROLE: u8 = 0x40;

    // States.
    const START: u8 = 0;
    /// `OTHER + k` (1 ≤ k ≤ 7): k letters of a method that is neither GET nor PUT.
    const OTHER: u8 = 0;
    const G: u8 = 8;
    const GE: u8 = 9;
    const GET: u8 = 10;
    const P: u8 = 11;
    const PU: u8 = 12;
    const PUT: u8 = 13;
    /// After the method's space: `/` must follow.
    const PATH: u8 = 14;
    /// `/` read: the root of the trie.
    const ROOT: u8 = 15;
    /// Another path, until its space.
    const OTHER_PATH: u8 = 16;
    /// `…/security-credentials[-extended]/`: a role or the end of the path follows.
    const ROLE_SLASH_BEFORE: u8 = 17;
    const ROLE: u8 = 18;
    /// `…/ROLE/`: only the end of the path may follow.
    const ROLE_SLASH_AFTER: u8 = 19;
    /// `PROTOCOL + k`: k bytes of `HTTP/` read after the path's space.
    const PROTOCOL: u8 = 20;
    pub const ACCEPT: u8 = 25;
    pub const NOT_HTTP: u8 = 26;
    pub const BAD_LINE: u8 = 27;
    pub const BAD_ROLE: u8 = 28;
    /// First trie node; the trie takes the states from here on.
    const TRIE: u8 = 29;
    pub const STATES_USED: usize = TRIE as usize + PATH_TRIE.1;

    /// The paths of the trie, without their leading `/`, and what each ends as.
    const PATHS: [(&[u8], End); 5] = [
        (b"latest/api/token", End::Exact(KIND_TOKEN)),
        (b"latest/meta-data/iam/security-credentials", End::RoleList),
        (b"latest/meta-data/iam/security-credentials-extended", End::RoleList),
        (b"v1/credentials", End::Prefix(KIND_POD_IDENTITY)),
        (b"v2/credentials", End::Prefix(KIND_ECS)),
    ];

    #[derive(Clone, Copy)]
    enum End {
        /// The path is exactly this.
        Exact(u8),
        /// The role list, or `/ROLE` follows.
        RoleList,
        /// The path starts with this.
        Prefix(u8),
    }

    pub static TABLE: [u16; LARGE_TABLE_LEN] = build();

    const fn method(m: u8) -> u8 {
        m << METHOD_SHIFT
    }

    const fn is_role_byte(c: u8) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, b'+' | b'=' | b',' | b'.' | b'@' | b'_' | b'-')
    }

    /// A byte of a path that names no kind: the end of the path, or more of it.
    const fn other_path(c: u8) -> u16 {
        match c {
            b' ' => entry(PROTOCOL, KIND_OTHER),
            0 | b'\r' | b'\n' => entry(BAD_LINE, 0),
            _ => entry(OTHER_PATH, 0),
        }
    }

    const LONGEST: usize = 64;

    /// `NODES[p][len]`: the trie node of `PATHS[p]`'s first `len` bytes (`ROOT` for 0).
    const NODES: [[u8; LONGEST + 1]; PATHS.len()] = PATH_TRIE.0;
    const PATH_TRIE: ([[u8; LONGEST + 1]; PATHS.len()], usize) = trie(&PATHS, ROOT, TRIE, true);

    const _: () = assert!(STATES_USED <= LARGE_STATES);

    /// The trie's rows: another path by default, then what each path's end means, then the
    /// edges that continue a path (which win over an end's meaning: `…-credentials` goes on to
    /// `…-credentials-extended` on `-`).
    const fn fill_trie(t: &mut [u16; LARGE_TABLE_LEN]) {
        // ROOT's row, then every node's.
        let mut row = ROOT as usize;
        while row < STATES_USED {
            let mut b = 0usize;
            while b < STRIDE {
                t[row * STRIDE + b] = other_path(b as u8);
                b += 1;
            }
            row = if row == ROOT as usize { TRIE as usize } else { row + 1 };
        }
        let mut p = 0usize;
        while p < PATHS.len() {
            let (path, end) = PATHS[p];
            let node = NODES[p][path.len()] as usize;
            let mut b = 0usize;
            while b < STRIDE {
                let c = b as u8;
                let e = match end {
                    End::Exact(kind) => {
                        if c == b' ' {
                            entry(PROTOCOL, kind)
                        } else {
                            other_path(c)
                        }
                    }
                    End::RoleList => match c {
                        b' ' => entry(PROTOCOL, KIND_ROLE_LIST),
                        b'/' => entry(ROLE_SLASH_BEFORE, 0),
                        _ => other_path(c),
                    },
                    End::Prefix(kind) => match c {
                        b' ' => entry(PROTOCOL, kind),
                        0 | b'\r' | b'\n' => entry(BAD_LINE, 0),
                        _ => entry(node as u8, 0),
                    },
                };
                t[node * STRIDE + b] = e;
                b += 1;
            }
            p += 1;
        }
        let mut p = 0usize;
        while p < PATHS.len() {
            let path = PATHS[p].0;
            let mut l = 0usize;
            while l < path.len() {
                t[NODES[p][l] as usize * STRIDE + path[l] as usize] = entry(NODES[p][l + 1], 0);
                l += 1;
            }
            p += 1;
        }
    }

    const fn next(st: u8, c: u8) -> u16 {
        if st == ACCEPT || st == NOT_HTTP || st == BAD_LINE || st == BAD_ROLE {
            return entry(st, 0);
        }
        let upper = c.is_ascii_uppercase();
        match st {
            START => match c {
                b'G' => entry(G, 0),
                b'P' => entry(P, 0),
                _ if upper => entry(OTHER + 1, 0),
                _ => entry(NOT_HTTP, 0),
            },
            G => match c {
                b'E' => entry(GE, 0),
                _ if upper => entry(OTHER + 2, 0),
                _ => entry(NOT_HTTP, 0),
            },
            GE => match c {
                b'T' => entry(GET, 0),
                _ if upper => entry(OTHER + 3, 0),
                _ => entry(NOT_HTTP, 0),
            },
            P => match c {
                b'U' => entry(PU, 0),
                _ if upper => entry(OTHER + 2, 0),
                _ => entry(NOT_HTTP, 0),
            },
            PU => match c {
                b'T' => entry(PUT, 0),
                _ if upper => entry(OTHER + 3, 0),
                _ => entry(NOT_HTTP, 0),
            },
            GET | PUT => match c {
                b' ' => entry(PATH, method(if st == GET { METHOD_GET } else { METHOD_PUT })),
                _ if upper => entry(OTHER + 4, 0),
                _ => entry(NOT_HTTP, 0),
            },
            PATH => {
                if c == b'/' {
                    entry(ROOT, 0)
                } else {
                    entry(NOT_HTTP, 0)
                }
            }
            OTHER_PATH => other_path(c),
            ROLE_SLASH_BEFORE => {
                if c == b' ' {
                    entry(PROTOCOL, KIND_ROLE_LIST)
                } else if is_role_byte(c) {
                    entry(ROLE, ROLE_BYTE)
                } else {
                    entry(BAD_ROLE, 0)
                }
            }
            ROLE => {
                if c == b' ' {
                    entry(PROTOCOL, KIND_IMDS_ROLE)
                } else if c == b'/' {
                    entry(ROLE_SLASH_AFTER, 0)
                } else if is_role_byte(c) {
                    entry(ROLE, ROLE_BYTE)
                } else {
                    entry(BAD_ROLE, 0)
                }
            }
            ROLE_SLASH_AFTER => {
                if c == b' ' {
                    entry(PROTOCOL, KIND_IMDS_ROLE)
                } else {
                    entry(BAD_ROLE, 0)
                }
            }
            _ if st >= PROTOCOL && st < ACCEPT => {
                if c == b"HTTP/"[(st - PROTOCOL) as usize] {
                    entry(st + 1, 0)
                } else {
                    entry(BAD_LINE, 0)
                }
            }
            _ if st > OTHER && st < G => {
                // OTHER + k, k letters so far (1 ≤ k ≤ 7)
                let k = st - OTHER;
                if upper && k < 7 {
                    entry(st + 1, 0)
                } else if c == b' ' && k >= 3 {
                    entry(PATH, method(METHOD_OTHER))
                } else {
                    entry(NOT_HTTP, 0)
                }
            }
            _ => entry(st, 0), // the trie's rows are filled by fill_trie
        }
    }

    const fn build() -> [u16; LARGE_TABLE_LEN] {
        let mut t = [0u16; LARGE_TABLE_LEN];
        let mut s = 0usize;
        while s < LARGE_STATES {
            let mut b = 0usize;
            while b < STRIDE {
                t[s * STRIDE + b] =
                    if s < STATES_USED { next(s as u8, b as u8) } else { entry(s as u8, 0) };
                b += 1;
            }
            s += 1;
        }
        fill_trie(&mut t);
        // Every byte read before the role (in the method, the path up to the role, or a path
        // without one) counts towards where the role starts.
        let mut s = 0usize;
        while s < STATES_USED {
            let st = s as u8;
            let after_role_started =
                st == ROLE || st == ROLE_SLASH_AFTER || (st >= PROTOCOL && st <= BAD_ROLE);
            if !after_role_started {
                let mut b = 0usize;
                while b < STRIDE {
                    let e = t[s * STRIDE + b];
                    if (e & 0xff) as u8 != ROLE {
                        t[s * STRIDE + b] = e | ((BEFORE_ROLE as u16) << 8);
                    }
                    b += 1;
                }
            }
            s += 1;
        }
        t
    }

    /// How a walk that ended in `state` went. A line not finished within the bytes walked is
    /// refused for what it was in the middle of (a role: `BadRole`; anything else after the
    /// method: `BadLine`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Verdict {
        Accept,
        NotHttp,
        BadLine,
        BadRole,
    }

    #[inline(always)]
    pub const fn verdict(state: u8) -> Verdict {
        match state {
            ACCEPT => Verdict::Accept,
            NOT_HTTP => Verdict::NotHttp,
            BAD_ROLE | ROLE_SLASH_BEFORE | ROLE | ROLE_SLASH_AFTER => Verdict::BadRole,
            _ if state < PATH => Verdict::NotHttp,
            _ => Verdict::BadLine,
        }
    }

    /// What the walk found so far; all of it is computed without a branch.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Scan {
        pub state: u8,
        /// `KIND_*` | `METHOD_*` << METHOD_SHIFT, each set once.
        pub found: u8,
        /// Where the role's first byte is, when the kind is `KIND_IMDS_ROLE` (else meaningless).
        pub role_start: u32,
        pub role_len: u32,
    }

    impl Scan {
        pub const fn kind(&self) -> u8 {
            self.found & KIND_MASK
        }
        pub const fn method(&self) -> u8 {
            self.found >> METHOD_SHIFT
        }
    }

    /// One byte. Only ORs and adds: no select that the compiler could make a branch of.
    #[inline(always)]
    pub fn step(scan: &mut Scan, byte: u8) {
        let entry = TABLE[((scan.state as usize) << 8) | byte as usize];
        let action = (entry >> 8) as u32;
        scan.state = entry as u8;
        scan.found |= (action & 0x1f) as u8;
        scan.role_len += (action >> 5) & 1;
        scan.role_start += (action >> 6) & 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a table over `chunks` in order, as the kernel does over TCP segments: the state and
    /// accumulator carry over, and each chunk is padded with zeros as the kernel's buffer is.
    fn run(table: &[u16; LARGE_TABLE_LEN], chunks: &[&[u8]]) -> (u8, u64) {
        let (mut state, mut acc) = (0u8, 0u64);
        for chunk in chunks {
            let mut padded = chunk.to_vec();
            padded.resize(chunk.len() + 7, 0);
            for &b in &padded {
                (state, acc) = step_large(table, state, acc, b);
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
                assert_eq!(step_large(&expiration::TABLE, s, 7, b), (s, 7));
            }
        }
    }

    /// The header automaton over `chunks`, from the start of a request: its state and flags.
    fn header_flags(chunks: &[&[u8]]) -> (u8, u8) {
        let scan = headers::scan_chunks(chunks);
        (scan.state, scan.flags)
    }

    fn request_with(h: &[u8]) -> Vec<u8> {
        let mut req = b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n".to_vec();
        req.extend_from_slice(h);
        req.extend_from_slice(b"\r\n\r\n");
        req
    }

    #[test]
    fn token_header_any_case_not_the_ttl_header() {
        let token = |h: &[u8]| header_flags(&[&request_with(h)]).1 & headers::FLAG_TOKEN != 0;
        assert!(token(b"X-aws-ec2-metadata-token: AQAEAF"));
        assert!(token(b"x-AWS-EC2-METADATA-TOKEN:AQAEAF"));
        assert!(!token(b"X-aws-ec2-metadata-token-ttl-seconds: 21600"));
        assert!(!token(b"Authorization: x-aws-ec2-metadata-token: no"));
        assert!(!token(b""));
    }

    #[test]
    fn token_header_anywhere_in_the_block_and_across_splits() {
        // A long User-Agent first pushes the token header past 512 and 900 bytes.
        let agent = format!("User-Agent: {}\r\n", "a".repeat(1200));
        let req = request_with(format!("{agent}X-aws-ec2-metadata-token: t").as_bytes());
        assert!(req.windows(24).position(|w| w == b"X-aws-ec2-metadata-token").unwrap() > 900);
        for i in 0..=req.len() {
            let (state, flags) = header_flags(&[&req[..i], &req[i..]]);
            assert_eq!(flags, headers::FLAG_TOKEN | headers::FLAG_END, "split at {i}");
            assert_eq!(state, headers::END, "split at {i}");
        }
        // After the block ends, the same name in a body is not a header.
        let mut body = request_with(b"");
        body.extend_from_slice(b"\r\nX-aws-ec2-metadata-token: t\r\n");
        assert_eq!(header_flags(&[&body]), (headers::BODY, headers::FLAG_END));
    }

    #[test]
    fn pipelined_requests_are_flagged_bodies_are_not() {
        let first = request_with(b"");
        let second = b"GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\n\r\n";
        for follow in [&second[..], b"PUT /latest/api/token HTTP/1.1\r\n", b"OPTIONS / HTTP/1.1"] {
            let both = [first.as_slice(), follow].concat();
            let (state, flags) = header_flags(&[&both]);
            assert_eq!(state, headers::PIPELINED, "{}", String::from_utf8_lossy(follow));
            assert_eq!(flags, headers::FLAG_END | headers::FLAG_PIPELINED);
        }
        for body in [&b"{\"a\":1}"[..], b"GET", b"ABCDEFGH /", b"GET x", b"hello"] {
            let both = [first.as_slice(), body].concat();
            let (_, flags) = header_flags(&[&both]);
            assert_eq!(flags, headers::FLAG_END, "{}", String::from_utf8_lossy(body));
        }
        // Unfinished block: no end, no pipelining.
        assert_eq!(header_flags(&[b"GET / HTTP/1.1\r\nHost: x\r\n"]).1, 0);
    }

    /// Runs the request-line automaton as the kernel does: over the bytes and zero padding.
    fn request_line(req: &[u8]) -> request_line::Scan {
        let mut scan = request_line::Scan::default();
        for &b in req.iter().chain(&[0u8; 8]) {
            request_line::step(&mut scan, b);
        }
        scan
    }

    fn role_of<'a>(req: &'a [u8], scan: &request_line::Scan) -> &'a [u8] {
        let start = scan.role_start as usize;
        if scan.kind() != request_line::KIND_IMDS_ROLE {
            return b"";
        }
        &req[start..start + scan.role_len as usize]
    }

    #[test]
    fn request_lines_name_their_kind_method_and_role() {
        use request_line::*;
        let cases: &[(&str, u8, u8, &str)] = &[
            (
                "GET /latest/meta-data/iam/security-credentials/my-role",
                KIND_IMDS_ROLE,
                METHOD_GET,
                "my-role",
            ),
            (
                "GET /latest/meta-data/iam/security-credentials/my-role/",
                KIND_IMDS_ROLE,
                METHOD_GET,
                "my-role",
            ),
            (
                "GET /latest/meta-data/iam/security-credentials-extended/a+b=c,d.e@f_g-h",
                KIND_IMDS_ROLE,
                METHOD_GET,
                "a+b=c,d.e@f_g-h",
            ),
            ("GET /latest/meta-data/iam/security-credentials/", KIND_ROLE_LIST, METHOD_GET, ""),
            ("GET /latest/meta-data/iam/security-credentials", KIND_ROLE_LIST, METHOD_GET, ""),
            (
                "GET /latest/meta-data/iam/security-credentials-extended/",
                KIND_ROLE_LIST,
                METHOD_GET,
                "",
            ),
            (
                "GET /latest/meta-data/iam/security-credentials-extended",
                KIND_ROLE_LIST,
                METHOD_GET,
                "",
            ),
            ("GET /latest/meta-data/iam/security-credentials-ext", KIND_OTHER, METHOD_GET, ""),
            ("GET /latest/meta-data/iam/security-credentialsX", KIND_OTHER, METHOD_GET, ""),
            ("PUT /latest/api/token", KIND_TOKEN, METHOD_PUT, ""),
            ("HEAD /latest/api/token", KIND_TOKEN, METHOD_OTHER, ""),
            ("PUT /latest/api/tokens", KIND_OTHER, METHOD_PUT, ""),
            ("GET /v2/credentials/0b1c-ecs?x=1", KIND_ECS, METHOD_GET, ""),
            ("GET /v1/credentials", KIND_POD_IDENTITY, METHOD_GET, ""),
            ("GET /v1/credential", KIND_OTHER, METHOD_GET, ""),
            ("GET /creds", KIND_OTHER, METHOD_GET, ""),
            ("GET /role/my-role", KIND_OTHER, METHOD_GET, ""),
            ("OPTIONS /", KIND_OTHER, METHOD_OTHER, ""),
            ("GETS /latest/api/token", KIND_TOKEN, METHOD_OTHER, ""),
            ("DELETE /latest/meta-data/", KIND_OTHER, METHOD_OTHER, ""),
        ];
        for &(line, kind, method, role) in cases {
            let req = format!("{line} HTTP/1.1\r\nHost: x\r\n\r\n");
            let scan = request_line(req.as_bytes());
            assert_eq!(scan.state, ACCEPT, "{line}");
            assert_eq!((scan.kind(), scan.method()), (kind, method), "{line}");
            assert_eq!(role_of(req.as_bytes(), &scan), role.as_bytes(), "{line}");
        }
    }

    #[test]
    fn bad_request_lines_end_in_their_reason() {
        use request_line::*;
        let long_role =
            format!("GET /latest/meta-data/iam/security-credentials/{} HTTP/1.1", "r".repeat(65));
        let cases: &[(&[u8], u8)] = &[
            (b"", NOT_HTTP),
            (b"G", NOT_HTTP),
            (b"GET", NOT_HTTP),
            (b"get / HTTP/1.1", NOT_HTTP),
            (b"GE / HTTP/1.1", NOT_HTTP),
            (b"PROPPATCH / HTTP/1.1", NOT_HTTP),
            (b"GET  HTTP/1.1", NOT_HTTP),
            (b"\x16\x03\x01\x00", NOT_HTTP),
            (b"GET /", BAD_LINE),
            (b"GET /latest/meta-data/\r\n", BAD_LINE),
            (b"GET /latest/meta-data/ HTTX/1.1", BAD_LINE),
            (b"GET /v1/credentials\r\n", BAD_LINE),
            (b"GET /latest/meta-data/iam/security-credentials/ro%20le HTTP/1.1", BAD_ROLE),
            (b"GET /latest/meta-data/iam/security-credentials/ro\0le HTTP/1.1", BAD_ROLE),
            (b"GET /latest/meta-data/iam/security-credentials/my-ro", BAD_ROLE),
            (b"GET /latest/meta-data/iam/security-credentials/my-role/x HTTP/1.1", BAD_ROLE),
            (b"GET /latest/meta-data/iam/security-credentials/my-role junk", BAD_LINE),
            (b"GET /a\0b HTTP/1.1", BAD_LINE),
        ];
        for &(line, want) in cases {
            assert_eq!(request_line(line).state, want, "{}", String::from_utf8_lossy(line));
        }
        // 65 role bytes pass the automaton; the caller checks the length against ROLE_MAX.
        let scan = request_line(long_role.as_bytes());
        assert_eq!((scan.state, scan.role_len), (ACCEPT, 65));
    }

    #[test]
    fn request_line_table_is_closed_and_terminal_states_stick() {
        use request_line::*;
        for s in 0..LARGE_STATES {
            for b in 0..=255u8 {
                let entry = TABLE[s * STRIDE + b as usize];
                assert!(((entry & 0xff) as usize) < STATES_USED.max(s + 1), "{s} {b}");
            }
        }
        for s in [ACCEPT, NOT_HTTP, BAD_LINE, BAD_ROLE] {
            for b in 0..=255u8 {
                assert_eq!(TABLE[s as usize * STRIDE + b as usize], s as u16);
            }
        }
    }

    /// `DOC` as a chunked body cut at `cuts` (offsets into the document), chunk sizes in hex.
    fn chunked(cuts: &[usize]) -> Vec<u8> {
        let body = &DOC[DOC.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
        let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let bounds: Vec<usize> =
            [0].into_iter().chain(cuts.iter().copied()).chain([body.len()]).collect();
        for w in bounds.windows(2) {
            if w[1] > w[0] {
                out.extend_from_slice(format!("{:x}\r\n", w[1] - w[0]).as_bytes());
                out.extend_from_slice(&body[w[0]..w[1]]);
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    fn run_large(chunks: &[&[u8]]) -> (u8, u64) {
        let (mut state, mut acc) = (0u8, 0u64);
        for chunk in chunks {
            for &b in chunk.iter().chain(&[0u8; 7]) {
                (state, acc) = step_large(&expiration::TABLE, state, acc, b);
            }
        }
        (state, acc)
    }

    #[test]
    fn finds_expiration_across_a_chunk_boundary_anywhere() {
        let body_start = DOC.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let key = DOC.windows(12).position(|w| w == expiration::KEY).unwrap() - body_start;
        // A chunk boundary at every offset from before the key to after the timestamp, and the
        // result also split into two segments at every byte around it.
        for cut in key - 2..key + 36 {
            let doc = chunked(&[cut]);
            assert_eq!(run_large(&[&doc]), (expiration::ACCEPT, 20261128101500), "cut {cut}");
            let at = doc.windows(12).position(|w| w == b"\"Expiration").unwrap_or(0);
            for split in at.saturating_sub(8)..(at + 40).min(doc.len()) {
                let r = run_large(&[&doc[..split], &doc[split..]]);
                assert_eq!(r, (expiration::ACCEPT, 20261128101500), "cut {cut} split {split}");
            }
        }
        // Two boundaries inside the key and the timestamp, as the scenario server cuts them.
        let doc = chunked(&[key + 6, key + 27]);
        assert_eq!(run_large(&[&doc]), (expiration::ACCEPT, 20261128101500));
        // Whitespace between the tokens (CR LF included) is still whitespace.
        let doc = b"{\"Expiration\"\r\n :\r\n\t\"2030-01-02T03:04:05Z\"}";
        assert_eq!(run_large(&[doc]), (expiration::ACCEPT, 20300102030405));
    }

    #[test]
    fn broken_boundaries_do_not_make_a_timestamp() {
        for bad in [
            &b"\"Expiration\":\"2026-11\r\nzz\r\n-28T10:15:00Z\""[..],
            b"\"Expiration\":\"2026-11\r\n5;ext=1\r\n-28T10:15:00Z\"",
            b"\"Expiration\":\"2026-11\rx-28T10:15:00Z\"",
            b"\"Expiration\":\"2026-11\r\n5\rx-28T10:15:00Z\"",
        ] {
            assert_eq!(run_large(&[bad]).0, expiration::FAIL, "{}", String::from_utf8_lossy(bad));
        }
        // Inside the key a broken boundary means it was not the key; a real one may follow.
        let doc = b"\"Expir\r\nxx\"Expiration\":\"2030-01-02T03:04:05Z\"";
        assert_eq!(run_large(&[doc]), (expiration::ACCEPT, 20300102030405));
    }

    #[test]
    fn nul_bytes_never_move_a_state() {
        for s in 0..=255u8 {
            assert_eq!(step_large(&expiration::TABLE, s, 5, 0), (s, 5));
        }
        for s in 0..=255u8 {
            let mut scan = headers::Scan { state: s, flags: 3, sdk: 0 };
            headers::step(&mut scan, 0);
            assert_eq!(scan, headers::Scan { state: s, flags: 3, sdk: 0 });
        }
    }
}
