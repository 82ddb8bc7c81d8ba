//! The built object against Linux 6.1's control-flow check (`check_cfg` in
//! kernel/bpf/verifier.c of 6.1, Debian 12 and Amazon Linux 2023), replayed here without a
//! kernel: a depth-first walk that reaches an instruction still on its path is a loop, and 6.1
//! accepts that back-edge only on a jump instruction. A loop that LLVM lays out with its latch
//! *before* its header enters the header by falling through, which 6.1 rejects with
//! "back-edge from insn N to N+1" while later kernels (and this machine's) accept it. Found by
//! booting Debian's 6.1 kernel (scripts/vm-kernel-test.sh); this test keeps it from coming back
//! without a VM. No root needed.
use std::collections::BTreeMap;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

const BPF_JMP: u8 = 0x05;
const BPF_JMP32: u8 = 0x06;
const BPF_JA: u8 = 0x00;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;

#[derive(Clone, Copy, PartialEq)]
enum State {
    New,
    OnPath,
    Done,
}

/// Back-edges that are not jumps, as `(from, to)` instruction indexes, following 6.1's walk:
/// from each instruction, the fall-through edge first, then the branch target. Calls to other
/// functions are followed there (their own walk).
fn fallthrough_back_edges(code: &[(u8, i16)]) -> Vec<(usize, usize)> {
    let mut state = vec![State::New; code.len()];
    let mut found = Vec::new();
    // Explicit stack of (instruction, next edge to try).
    let mut stack = vec![(0usize, 0u8)];
    state[0] = State::OnPath;
    while let Some(&mut (t, ref mut edge)) = stack.last_mut() {
        let (op, off) = code[t];
        let class = op & 0x07;
        let is_jump = class == BPF_JMP || class == BPF_JMP32;
        let kind = op & 0xf0;
        let edges: Vec<usize> = if !is_jump || kind == BPF_CALL {
            vec![t + 1]
        } else if kind == BPF_EXIT {
            vec![]
        } else if kind == BPF_JA {
            vec![(t as i64 + i64::from(off) + 1) as usize]
        } else {
            vec![t + 1, (t as i64 + i64::from(off) + 1) as usize]
        };
        let loop_ok = is_jump && kind != BPF_CALL;
        if let Some(&w) = edges.get(usize::from(*edge)) {
            *edge += 1;
            if w >= code.len() {
                continue; // past the end: the kernel refuses that too, not this test's concern
            }
            match state[w] {
                State::New => {
                    state[w] = State::OnPath;
                    stack.push((w, 0));
                }
                State::OnPath if !loop_ok => found.push((t, w)),
                _ => {}
            }
        } else {
            state[t] = State::Done;
            stack.pop();
        }
    }
    found
}

#[test]
fn no_loop_is_entered_by_falling_through() {
    let obj = aya_obj::Object::parse(OBJECT).expect("parse the built eBPF object");
    let mut report = BTreeMap::new();
    for function in obj.functions.values() {
        let code: Vec<(u8, i16)> = function.instructions.iter().map(|i| (i.code, i.off)).collect();
        let found = fallthrough_back_edges(&code);
        if !found.is_empty() {
            report.insert(function.name.clone(), found);
        }
    }
    assert!(
        report.is_empty(),
        "Linux 6.1 rejects these back-edges (function: [(from, to)] instruction indexes): {report:?}"
    );
}

#[test]
fn the_replay_finds_a_fallthrough_back_edge() {
    // 0: goto +1 (to 2); 1: r0 += 1 (latch, falls into 2); 2: if r0 > 9 goto +1 (to 4);
    // 3: goto -3 (to 1); 4: exit
    let code = [
        (BPF_JMP | BPF_JA, 1),
        (0x07, 0),
        (BPF_JMP | 0x20, 1),
        (BPF_JMP | BPF_JA, -3),
        (BPF_JMP | BPF_EXIT, 0),
    ];
    assert_eq!(fallthrough_back_edges(&code), vec![(1, 2)]);
    // The same loop with the latch at the bottom: the back-edge is the jump, which is fine.
    // 0: r0 += 1; 1: if r0 > 9 goto +1; 2: goto -3 (to 0); 3: exit
    let code = [(0x07, 0), (BPF_JMP | 0x20, 1), (BPF_JMP | BPF_JA, -3), (BPF_JMP | BPF_EXIT, 0)];
    assert!(fallthrough_back_edges(&code).is_empty());
}
