//! `credwatch-loadgen`: the benchmarks' load generators (bench/bench.py), compiled so that the
//! generator, not the interpreter running it, is what the kernel and the agent see.
//!
//! Every subcommand talks to loopback only (any other address is refused), uses blocking std
//! sockets and threads, and prints one JSON line on stdout when done:
//!
//! ```text
//! credwatch-loadgen tcp-connect --count N [--addr 127.0.0.1:PORT]
//!     {"op":"tcp-connect","count":N,"made":M,"accepted":A,"failed":F,"seconds":S,"cpu_seconds":C}
//! credwatch-loadgen tcp-rr --seconds S [--size BYTES]
//!     {"op":"tcp-rr","round_trips":R,"seconds":S,"cpu_seconds":C}
//! credwatch-loadgen dns-udp --server ADDR:PORT --count N [--name bench.test] [--timeout-ms 1000]
//! credwatch-loadgen OP --cgroups A,B[,…] --rounds R [--turn-ms 20] [OP's options]
//!     {"op":OP,"interleaved":true,"rounds":R,"ok":[[per turn]…],"failed":[…],"seconds":[…],"totals":[…]}
//!     {"op":"dns-udp","count":N,"answered":A,"timeouts":T,"seconds":S,"cpu_seconds":C}
//! credwatch-loadgen baseline --cgroup-path DIR [--all-hooks]
//!     ready                  (once attached; then SIGTERM or SIGINT detaches and it ends with)
//!     {"op":"baseline","attached":[program…],"signal":N}
//! credwatch-loadgen redirect --cgroup-path DIR --from ADDR:PORT --to ADDR:PORT
//!     ready                  (then, at SIGTERM or SIGINT)
//!     {"op":"redirect","from":…,"to":…,"signal":N}
//! ```
//!
//! `baseline` sends nothing: it holds empty programs (unshipped-ebpf, built into this binary and
//! never into `credwatch`) on a cgroup, the benchmarks' floor; see `baseline`. `redirect` holds a
//! test program there that rewrites IPv4 connects to one address into another, inside connect(),
//! as Cilium's socket-level load balancing does (tests/scenarios/test_pod_traffic.py).
//!
//! `seconds` is wall-clock time of the measured part; `cpu_seconds` is this process's user +
//! system time over the whole run (getrusage), softirq work done in its context included.
//! Sockets belong to the cgroup they are created in: the caller puts the process in its cgroup
//! before exec.
mod baseline;
mod interleave;
mod workload;

use std::{
    io,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use interleave::Plan;
use workload::{DnsUdp, TcpBulk, TcpConnect, TcpRr, Workload, encode_name};

const USAGE: &str = "usage:
  credwatch-loadgen tcp-connect --count N [--addr 127.0.0.1:PORT]
  credwatch-loadgen tcp-rr --seconds S [--size BYTES] [--addr 127.0.0.1:PORT]
  credwatch-loadgen dns-udp --server ADDR:PORT --count N [--name NAME] [--timeout-ms MS]
  credwatch-loadgen OP --cgroups DIR,DIR[,...] --rounds R [--turn-ms 20] [OP's options]
    (interleaved: turns of OP from each cgroup; instead of --count/--seconds; OP may also be
    tcp-bulk [--size CHUNK, default 65536]: one connection per cgroup, CHUNK-byte writes)
  credwatch-loadgen baseline --cgroup-path DIR [--all-hooks]
  credwatch-loadgen redirect --cgroup-path DIR --from ADDR:PORT --to ADDR:PORT
    (empty programs on DIR, egress and ingress; --all-hooks: connect4, connect6 and sock_ops
    too; prints ready, holds them until SIGTERM or SIGINT; refuses a cgroup v2 root)
Loopback addresses only. Prints one JSON line with the result.";

/// Options that take no value.
const SWITCHES: &[&str] = &["all-hooks"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("credwatch-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<String, String> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err(USAGE.into());
    };
    let opts = Opts::parse(rest)?;
    if let Some(cgroups) = opts.value("cgroups") {
        opts.only(&[
            "cgroups",
            "rounds",
            "turn-ms",
            "addr",
            "size",
            "server",
            "name",
            "timeout-ms",
        ])?;
        let plan = Plan {
            cgroups: cgroups.split(',').map(PathBuf::from).collect(),
            rounds: opts.get("rounds")?,
            turn: Duration::from_millis(opts.get_or("turn-ms", 20)?),
        };
        if plan.cgroups.len() < 2 || plan.rounds == 0 {
            return Err(
                "--cgroups needs two or more cgroup directories, --rounds at least 1".into()
            );
        }
        return interleaved(cmd, &plan, &opts);
    }
    let line = match cmd.as_str() {
        "tcp-connect" => {
            opts.only(&["count", "addr"])?;
            tcp_connect(opts.get("count")?, opts.addr("addr", "127.0.0.1:0")?)
        }
        "tcp-rr" => {
            opts.only(&["seconds", "size", "addr"])?;
            let size: usize = opts.get_or("size", 1)?;
            if size == 0 || size > 65536 {
                return Err("--size must be 1..=65536".into());
            }
            tcp_rr(opts.get("seconds")?, size, opts.addr("addr", "127.0.0.1:0")?)
        }
        "dns-udp" => {
            opts.only(&["server", "count", "name", "timeout-ms"])?;
            let name = opts.value("name").unwrap_or("bench.test");
            let query_name = encode_name(name)?;
            dns_udp(
                opts.addr("server", "")?,
                opts.get("count")?,
                &query_name,
                Duration::from_millis(opts.get_or("timeout-ms", 1000)?),
            )
        }
        "baseline" => {
            opts.only(&["cgroup-path", "all-hooks"])?;
            let cgroup: PathBuf = opts.get("cgroup-path")?;
            return baseline::run(&cgroup, opts.value("all-hooks").is_some());
        }
        "redirect" => {
            opts.only(&["cgroup-path", "from", "to"])?;
            let cgroup: PathBuf = opts.get("cgroup-path")?;
            return baseline::redirect(&cgroup, opts.get("from")?, opts.get("to")?);
        }
        "-h" | "--help" | "help" => return Ok(USAGE.into()),
        other => return Err(format!("unknown subcommand {other:?}\n{USAGE}")),
    };
    line.map_err(|e| format!("{cmd}: {e}"))
}

/// `--name value` pairs, and the [`SWITCHES`] alone (held with the value `true`).
struct Opts(Vec<(String, String)>);

impl Opts {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let Some(name) = flag.strip_prefix("--") else {
                return Err(format!("unexpected argument {flag:?}\n{USAGE}"));
            };
            if SWITCHES.contains(&name) {
                out.push((name.to_string(), "true".to_string()));
                continue;
            }
            let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            out.push((name.to_string(), value.clone()));
        }
        Ok(Self(out))
    }

    fn only(&self, allowed: &[&str]) -> Result<(), String> {
        match self.0.iter().find(|(n, _)| !allowed.contains(&n.as_str())) {
            Some((n, _)) => Err(format!("unknown option --{n}\n{USAGE}")),
            None => Ok(()),
        }
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn get<T: std::str::FromStr>(&self, name: &str) -> Result<T, String> {
        let v = self.value(name).ok_or_else(|| format!("--{name} is required\n{USAGE}"))?;
        v.parse().map_err(|_| format!("--{name}: cannot parse {v:?}"))
    }

    fn get_or<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        if self.value(name).is_some() { self.get(name) } else { Ok(default) }
    }

    /// A socket address that must be on loopback (the benchmarks never send anywhere else).
    fn addr(&self, name: &str, default: &str) -> Result<SocketAddr, String> {
        let v = match self.value(name) {
            Some(v) => v,
            None if !default.is_empty() => default,
            None => return Err(format!("--{name} is required\n{USAGE}")),
        };
        let addr: SocketAddr = v.parse().map_err(|_| format!("--{name}: not an IP:PORT: {v:?}"))?;
        if !is_loopback(addr.ip()) {
            return Err(format!("--{name}: {addr} is not a loopback address; refusing"));
        }
        Ok(addr)
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// User + system CPU time of this process so far (all threads).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// N sequential connections (see `workload::TcpConnect`), timed from the first connect until the
/// last connection made has been accepted.
fn tcp_connect(count: u64, addr: SocketAddr) -> io::Result<String> {
    let mut load = TcpConnect::new(addr)?;
    let mut failed = 0u64;
    let t0 = Instant::now();
    for _ in 0..count {
        if !load.once()? {
            failed += 1;
        }
    }
    // Every connection made is in the accept queue or already accepted.
    load.wait_accepted();
    let seconds = t0.elapsed().as_secs_f64();
    load.finish()?;
    if let Some(e) = &load.first_error {
        eprintln!("credwatch-loadgen: tcp-connect: {failed} connects failed, first: {e}");
    }
    Ok(format!(
        r#"{{"op":"tcp-connect","count":{count},"made":{},"accepted":{},"failed":{failed},"seconds":{seconds:.6},"cpu_seconds":{:.6}}}"#,
        load.made,
        load.accepted(),
        cpu_seconds()
    ))
}

/// Ping-pong of `size`-byte messages over one loopback connection for `seconds`.
fn tcp_rr(seconds: f64, size: usize, addr: SocketAddr) -> io::Result<String> {
    let mut load = TcpRr::new(size, addr)?;
    let run_for = Duration::from_secs_f64(seconds);
    let mut round_trips = 0u64;
    let t0 = Instant::now();
    let elapsed = loop {
        load.once()?;
        round_trips += 1;
        let elapsed = t0.elapsed();
        if elapsed >= run_for {
            break elapsed;
        }
    };
    load.finish()?;
    Ok(format!(
        r#"{{"op":"tcp-rr","size":{size},"round_trips":{round_trips},"seconds":{:.6},"cpu_seconds":{:.6}}}"#,
        elapsed.as_secs_f64(),
        cpu_seconds()
    ))
}

/// `count` A queries, one in flight (see `workload::DnsUdp`).
fn dns_udp(server: SocketAddr, count: u64, name: &[u8], timeout: Duration) -> io::Result<String> {
    let mut load = DnsUdp::new(server, name, timeout)?;
    let t0 = Instant::now();
    for _ in 0..count {
        load.once()?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    Ok(format!(
        r#"{{"op":"dns-udp","count":{count},"answered":{},"timeouts":{},"seconds":{seconds:.6},"cpu_seconds":{:.6}}}"#,
        load.answered,
        load.timeouts,
        cpu_seconds()
    ))
}

/// The interleaved form of each subcommand (see `interleave`): one JSON line with per-cgroup,
/// per-turn counts, and per-cgroup totals the benchmark checks the agent's exported counts with.
fn interleaved(cmd: &str, plan: &Plan, opts: &Opts) -> Result<String, String> {
    let err = |e: io::Error| e.to_string();
    let (turns, totals) = match cmd {
        "tcp-connect" => {
            let addr = opts.addr("addr", "127.0.0.1:0")?;
            let (mut loads, turns) =
                interleave::run(plan, || TcpConnect::new(addr)).map_err(err)?;
            let mut totals = Vec::new();
            for load in &mut loads {
                load.wait_accepted();
                load.finish().map_err(err)?;
                totals.push(format!(r#"{{"made":{},"accepted":{}}}"#, load.made, load.accepted()));
            }
            (turns, totals)
        }
        "tcp-bulk" => {
            let chunk: usize = opts.get_or("size", 65536)?;
            if chunk == 0 || chunk > 1 << 20 {
                return Err("--size must be 1..=1048576".into());
            }
            let addr = opts.addr("addr", "127.0.0.1:0")?;
            let (mut loads, turns) =
                interleave::run(plan, || TcpBulk::new(chunk, addr)).map_err(err)?;
            let mut totals = Vec::new();
            for (load, ok) in loads.iter_mut().zip(&turns.ok) {
                let received = load.finish().map_err(err)?;
                let timed = ok.iter().sum::<u64>() * chunk as u64;
                totals.push(format!(
                    r#"{{"chunk":{chunk},"timed_bytes":{timed},"received":{received}}}"#
                ));
            }
            (turns, totals)
        }
        "tcp-rr" => {
            let size: usize = opts.get_or("size", 1)?;
            let addr = opts.addr("addr", "127.0.0.1:0")?;
            let (mut loads, turns) =
                interleave::run(plan, || TcpRr::new(size, addr)).map_err(err)?;
            let mut totals = Vec::new();
            for (load, ok) in loads.iter_mut().zip(&turns.ok) {
                load.finish().map_err(err)?;
                totals.push(format!(r#"{{"round_trips":{}}}"#, ok.iter().sum::<u64>()));
            }
            (turns, totals)
        }
        "dns-udp" => {
            let server = opts.addr("server", "")?;
            let name = encode_name(opts.value("name").unwrap_or("bench.test"))?;
            let timeout = Duration::from_millis(opts.get_or("timeout-ms", 1000)?);
            let (loads, turns) =
                interleave::run(plan, || DnsUdp::new(server, &name, timeout)).map_err(err)?;
            let totals = loads
                .iter()
                .map(|l| format!(r#"{{"answered":{},"timeouts":{}}}"#, l.answered, l.timeouts))
                .collect();
            (turns, totals)
        }
        other => return Err(format!("unknown subcommand {other:?}\n{USAGE}")),
    };
    Ok(format!(
        r#"{{"op":"{cmd}","interleaved":true,"rounds":{},{},"totals":[{}]}}"#,
        plan.rounds,
        turns.json_fields(),
        totals.join(",")
    ))
}

#[cfg(test)]
mod tests {
    use std::{net::UdpSocket, thread};

    use super::*;

    fn parse(line: &str, key: &str) -> f64 {
        let rest = &line[line.find(&format!("\"{key}\":")).expect(key) + key.len() + 3..];
        rest.split([',', '}']).next().unwrap().parse().unwrap()
    }

    #[test]
    fn connects_and_accepts_every_one() {
        let line = tcp_connect(50, "127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(parse(&line, "made"), 50.0);
        assert_eq!(parse(&line, "accepted"), 50.0);
        assert_eq!(parse(&line, "failed"), 0.0);
    }

    #[test]
    fn ping_pongs() {
        let line = tcp_rr(0.05, 3, "127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(parse(&line, "round_trips") > 0.0);
    }

    #[test]
    fn dns_answers_and_timeouts() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        // answers the first two queries, ignores the third
        let t = thread::spawn(move || {
            let mut buf = [0u8; 512];
            for _ in 0..2 {
                let (n, from) = server.recv_from(&mut buf).unwrap();
                buf[2] |= 0x80;
                server.send_to(&buf[..n], from).unwrap();
            }
            server.recv_from(&mut buf).unwrap();
        });
        let name = encode_name("bench.test").unwrap();
        let line = dns_udp(addr, 3, &name, Duration::from_millis(100)).unwrap();
        t.join().unwrap();
        assert_eq!(parse(&line, "answered"), 2.0);
        assert_eq!(parse(&line, "timeouts"), 1.0);
    }

    #[test]
    fn refuses_other_addresses() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let err = run(&args(&["dns-udp", "--server", "169.254.169.254:53", "--count", "1"]));
        assert!(err.unwrap_err().contains("not a loopback"));
        let err = run(&args(&["tcp-connect", "--count", "1", "--addr", "10.0.0.1:80"]));
        assert!(err.unwrap_err().contains("not a loopback"));
        assert!(run(&args(&["tcp-connect", "--count", "1", "--addr", "[::1]:0"])).is_ok());
    }

    #[test]
    fn encodes_names() {
        assert_eq!(encode_name("bench.test.").unwrap(), b"\x05bench\x04test\x00");
        assert!(encode_name("a..b").is_err());
    }
}
