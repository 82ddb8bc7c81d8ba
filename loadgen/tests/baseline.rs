//! `baseline`: empty programs on a cgroup until SIGTERM, then detached. Needs root and cgroup v2
//! (CI is root); creates and removes `<cgroup2>/credwatch-test-<pid>-baseline`, attaches only
//! there, and reads the attachments back with bpftool.
mod can_run;

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })
}

/// The attach types of the programs attached to `cgroup` itself, sorted.
fn attach_types(cgroup: &Path) -> Result<Vec<String>, String> {
    let out = Command::new("bpftool").args(["-j", "cgroup", "show"]).arg(cgroup).output();
    let out = out.map_err(|e| format!("bpftool (scripts/setup.sh installs it): {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let json = String::from_utf8_lossy(&out.stdout);
    let key = r#""attach_type":""#;
    let mut types: Vec<String> = json
        .match_indices(key)
        .map(|(at, _)| {
            let rest = &json[at + key.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect();
    types.sort();
    Ok(types)
}

fn run(all_hooks: bool) -> Option<(Vec<String>, String)> {
    let Some(cg2) = cgroup2_mount() else {
        can_run::cannot_run("loadgen baseline test", "no cgroup v2 mount");
        return None;
    };
    if unsafe { libc::geteuid() } != 0 {
        can_run::cannot_run(
            "loadgen baseline test",
            "needs root (loads and attaches BPF programs)",
        );
        return None;
    }
    let cg = cg2.join(format!("credwatch-test-{}-baseline-{all_hooks}", std::process::id()));
    fs::create_dir(&cg).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_credwatch-loadgen"))
        .arg("baseline")
        .arg("--cgroup-path")
        .arg(&cg)
        .args(all_hooks.then_some("--all-hooks"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut ready = String::new();
    stdout.read_line(&mut ready).unwrap();
    let during = attach_types(&cg);
    // SAFETY: a signal to the child we started, by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut last = String::new();
    let _ = stdout.read_to_string(&mut last);
    let after = attach_types(&cg);
    // Removed before any assertion, so that a failure leaves nothing behind.
    fs::remove_dir(&cg).unwrap();
    assert_eq!(ready, "ready\n");
    assert!(status.success(), "{status} {last}");
    assert_eq!(after.unwrap(), Vec::<String>::new(), "detached on SIGTERM");
    Some((during.unwrap(), last))
}

#[test]
fn holds_the_empty_programs_until_sigterm() {
    let Some((during, last)) = run(false) else { return };
    assert_eq!(during, ["cgroup_inet_egress", "cgroup_inet_ingress"]);
    assert!(last.contains(r#""attached":["cw_bench_empty"]"#), "{last}");
}

#[test]
fn all_hooks_adds_connect_and_sock_ops() {
    let Some((during, last)) = run(true) else { return };
    let want = [
        "cgroup_inet4_connect",
        "cgroup_inet6_connect",
        "cgroup_inet_egress",
        "cgroup_inet_ingress",
        "cgroup_sock_ops",
    ];
    assert_eq!(during, want);
    assert!(last.contains(r#""signal":15"#), "{last}");
}
