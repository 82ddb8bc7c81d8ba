//! `--cgroups`: the generator moves itself between cgroups and reports each one's turns. Needs
//! root and cgroup v2 (CI is root); creates and removes `<cgroup2>/credwatch-test-<pid>-lg/…`.
mod can_run;

use std::{fs, path::PathBuf, process::Command};

fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })
}

/// Numbers of the first array after `"key":` in the one-line JSON (flattened).
fn numbers(line: &str, key: &str) -> Vec<f64> {
    let start = line.find(&format!("\"{key}\":")).expect(key) + key.len() + 3;
    let mut depth = 0;
    let mut end = start;
    for (i, c) in line[start..].char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    end = start + i;
                    break;
                }
            }
            _ => {}
        }
    }
    line[start..end]
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

/// Runs the generator with `args` plus `--cgroups` naming fresh cgroups `names` under
/// `<cgroup2>/credwatch-test-<pid>-<tag>`, removed afterwards; its JSON line, or None without
/// cgroup v2 or root (a failure unless skips are allowed: `can_run`).
fn run_in_cgroups(tag: &str, names: &[&str], args: &[&str]) -> Option<String> {
    let Some(cg2) = cgroup2_mount() else {
        can_run::cannot_run("loadgen interleave test", "no cgroup v2 mount");
        return None;
    };
    if unsafe { libc::geteuid() } != 0 {
        can_run::cannot_run("loadgen interleave test", "needs root (cgroup moves)");
        return None;
    }
    let base = cg2.join(format!("credwatch-test-{}-{tag}", std::process::id()));
    let cgs: Vec<PathBuf> = names.iter().map(|n| base.join(n)).collect();
    for cg in &cgs {
        fs::create_dir_all(cg).unwrap();
    }
    let list = cgs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",");
    let out = Command::new(env!("CARGO_BIN_EXE_credwatch-loadgen"))
        .args(args)
        .args(["--cgroups", &list])
        .output()
        .unwrap();
    // the child has exited: the cgroups are empty again
    for cg in cgs.iter().rev() {
        fs::remove_dir(cg).unwrap();
    }
    fs::remove_dir(&base).unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{line} {}", String::from_utf8_lossy(&out.stderr));
    // The kernel put the generator in each cgroup in turn (its workloads were made there).
    let joined = &line[line.find(r#""joined":["#).expect("joined") + 10..];
    let joined: Vec<&str> = joined[..joined.find(']').unwrap()].split(',').collect();
    let want: Vec<String> = cgs
        .iter()
        .map(|p| format!("{:?}", format!("/{}", p.strip_prefix(&cg2).unwrap().display())))
        .collect();
    assert_eq!(joined, want, "{line}");
    Some(line)
}

#[test]
fn turns_from_each_cgroup_add_up() {
    let args = ["tcp-connect", "--rounds", "4", "--turn-ms", "5"];
    let Some(line) = run_in_cgroups("lg", &["a", "b", "c"], &args) else { return };
    let ok = numbers(&line, "ok");
    let seconds = numbers(&line, "seconds");
    assert_eq!(ok.len(), 12, "3 cgroups × 4 rounds: {line}");
    assert!(ok.iter().all(|&n| n > 0.0), "every turn made connections: {line}");
    assert!(seconds.iter().all(|&s| s >= 0.005), "every turn lasted its 5 ms: {line}");
    // Per cgroup: made = accepted = its turns' connections + the untimed warm-up ones (3 a turn).
    let totals = numbers(&line, "totals");
    for (i, pair) in totals.chunks(2).enumerate() {
        let turns: f64 = ok[i * 4..i * 4 + 4].iter().sum();
        assert_eq!(pair[0], pair[1], "made = accepted: {line}");
        assert_eq!(pair[0], turns + 4.0 * 3.0, "cgroup {i}: {line}");
    }
    assert_eq!(numbers(&line, "failed").iter().sum::<f64>(), 0.0);
}

#[test]
fn refuses_a_single_cgroup() {
    let out = Command::new(env!("CARGO_BIN_EXE_credwatch-loadgen"))
        .args(["dns-udp", "--server", "127.0.0.1:53", "--cgroups", "/x", "--rounds", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("two or more"));
}

#[test]
fn bulk_turns_deliver_every_byte() {
    let args = ["tcp-bulk", "--rounds", "3", "--turn-ms", "5", "--size", "4096"];
    let Some(line) = run_in_cgroups("lgbulk", &["a", "b"], &args) else { return };
    let ok = numbers(&line, "ok");
    let totals = numbers(&line, "totals"); // per cgroup: chunk, timed_bytes, received
    for (i, t) in totals.chunks(3).enumerate() {
        let writes: f64 = ok[i * 3..i * 3 + 3].iter().sum();
        assert_eq!(t[1], writes * 4096.0, "{line}");
        // the reader got every byte written, the 3 untimed warm-up writes a turn included
        assert_eq!(t[2], (writes + 3.0 * 3.0) * 4096.0, "{line}");
    }
}
