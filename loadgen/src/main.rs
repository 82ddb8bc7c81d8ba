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
//!     {"op":"dns-udp","count":N,"answered":A,"timeouts":T,"seconds":S,"cpu_seconds":C}
//! ```
//!
//! `seconds` is wall-clock time of the measured part; `cpu_seconds` is this process's user +
//! system time over the whole run (getrusage), softirq work done in its context included.
//! Sockets belong to the cgroup they are created in: the caller puts the process in its cgroup
//! before exec.
use std::{
    io::{self, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

const USAGE: &str = "usage:
  credwatch-loadgen tcp-connect --count N [--addr 127.0.0.1:PORT]
  credwatch-loadgen tcp-rr --seconds S [--size BYTES] [--addr 127.0.0.1:PORT]
  credwatch-loadgen dns-udp --server ADDR:PORT --count N [--name NAME] [--timeout-ms MS]
Loopback addresses only. Prints one JSON line with the result.";

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
        "-h" | "--help" | "help" => return Ok(USAGE.into()),
        other => return Err(format!("unknown subcommand {other:?}\n{USAGE}")),
    };
    line.map_err(|e| format!("{cmd}: {e}"))
}

/// `--name value` pairs, nothing else.
struct Opts(Vec<(String, String)>);

impl Opts {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let Some(name) = flag.strip_prefix("--") else {
                return Err(format!("unexpected argument {flag:?}\n{USAGE}"));
            };
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

/// Wakes a thread blocked in accept() on this listener (Linux: accept then fails with EINVAL).
fn shutdown_listener(listener: &TcpListener) {
    // SAFETY: plain syscall on a descriptor the listener owns and keeps open.
    unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
}

/// N sequential connections to our own listener: connect, the accept thread accepts and closes,
/// the client reads the end of stream and closes. Timed from the first connect until the last
/// connection made has been accepted.
fn tcp_connect(count: u64, addr: SocketAddr) -> io::Result<String> {
    let listener = Arc::new(TcpListener::bind(addr)?);
    let target = listener.local_addr()?;
    let accepted = Arc::new(AtomicU64::new(0));
    let acceptor = {
        let (listener, accepted) = (Arc::clone(&listener), Arc::clone(&accepted));
        thread::spawn(move || {
            while let Ok((conn, _)) = listener.accept() {
                drop(conn);
                accepted.fetch_add(1, Ordering::Release);
            }
        })
    };
    let (mut made, mut failed, mut first_error) = (0u64, 0u64, None);
    let t0 = Instant::now();
    for _ in 0..count {
        match TcpStream::connect(target) {
            Ok(mut conn) => {
                made += 1;
                // Wait for the acceptor's close (EOF) before closing: one connection at a time,
                // so the accept queue never fills (a full queue drops the SYN, and the client
                // retransmits it a second later), and the TIME_WAIT is the listener's, so
                // the client's ephemeral ports are never exhausted.
                let _ = conn.read(&mut [0u8; 1]);
                drop(conn);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    // Every connection made is in the accept queue or already accepted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted.load(Ordering::Acquire) < made && Instant::now() < deadline {
        thread::yield_now();
    }
    let seconds = t0.elapsed().as_secs_f64();
    shutdown_listener(&listener);
    acceptor.join().map_err(|_| io::Error::other("accept thread panicked"))?;
    if let Some(e) = first_error {
        eprintln!("credwatch-loadgen: tcp-connect: {failed} connects failed, first: {e}");
    }
    Ok(format!(
        r#"{{"op":"tcp-connect","count":{count},"made":{made},"accepted":{},"failed":{failed},"seconds":{seconds:.6},"cpu_seconds":{:.6}}}"#,
        accepted.load(Ordering::Acquire),
        cpu_seconds()
    ))
}

/// Ping-pong of `size`-byte messages over one loopback connection for `seconds`.
fn tcp_rr(seconds: f64, size: usize, addr: SocketAddr) -> io::Result<String> {
    let listener = TcpListener::bind(addr)?;
    let target = listener.local_addr()?;
    let server = thread::spawn(move || -> io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        conn.set_nodelay(true)?;
        let mut buf = vec![0u8; size];
        loop {
            match read_message(&mut conn, &mut buf) {
                Ok(true) => conn.write_all(&buf)?,
                Ok(false) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let mut conn = TcpStream::connect(target)?;
    conn.set_nodelay(true)?;
    let msg = vec![b'x'; size];
    let mut buf = vec![0u8; size];
    let run_for = Duration::from_secs_f64(seconds);
    let mut round_trips = 0u64;
    let t0 = Instant::now();
    let elapsed = loop {
        conn.write_all(&msg)?;
        if !read_message(&mut conn, &mut buf)? {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed"));
        }
        round_trips += 1;
        let elapsed = t0.elapsed();
        if elapsed >= run_for {
            break elapsed;
        }
    };
    conn.shutdown(std::net::Shutdown::Write)?;
    server.join().map_err(|_| io::Error::other("server thread panicked"))??;
    Ok(format!(
        r#"{{"op":"tcp-rr","size":{size},"round_trips":{round_trips},"seconds":{:.6},"cpu_seconds":{:.6}}}"#,
        elapsed.as_secs_f64(),
        cpu_seconds()
    ))
}

/// Fills `buf` with one message; false on a clean end of stream before its first byte.
fn read_message(conn: &mut TcpStream, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match conn.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short message")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// A DNS name in wire format (labels, then the root).
fn encode_name(name: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("--name: bad DNS name {name:?}"));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Ok(out)
}

/// `count` A queries, one in flight; a query unanswered within `timeout` counts as a timeout
/// and the next one is sent. Replies are matched by id (a late reply is not a new answer).
fn dns_udp(server: SocketAddr, count: u64, name: &[u8], timeout: Duration) -> io::Result<String> {
    let local: SocketAddr =
        if server.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.expect("literal");
    // Unconnected: after an ICMP port unreachable a connected socket's next send fails.
    let sock = UdpSocket::bind(local)?;
    sock.set_read_timeout(Some(timeout))?;
    let mut query = vec![0u8; 12];
    query[2..4].copy_from_slice(&0x0100u16.to_be_bytes()); // recursion desired
    query[4..6].copy_from_slice(&1u16.to_be_bytes()); // one question
    query.extend_from_slice(name);
    query.extend_from_slice(&[0, 1, 0, 1]); // A, IN
    let mut buf = [0u8; 1500];
    let (mut answered, mut timeouts) = (0u64, 0u64);
    let t0 = Instant::now();
    for i in 0..count {
        let id = (i & 0xffff) as u16;
        query[0..2].copy_from_slice(&id.to_be_bytes());
        sock.send_to(&query, server)?;
        let sent = Instant::now();
        let mut shortened = false;
        loop {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == server && n >= 12 && buf[0..2] == id.to_be_bytes() => {
                    answered += 1;
                    break;
                }
                Ok(_) => {
                    // a stray or late reply: keep waiting for ours, within the same deadline
                    let left = timeout.saturating_sub(sent.elapsed());
                    if left.is_zero() {
                        timeouts += 1;
                        break;
                    }
                    sock.set_read_timeout(Some(left))?;
                    shortened = true;
                }
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    timeouts += 1;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // e.g. ECONNREFUSED from an ICMP port unreachable: no answer for this one
                Err(_) => {
                    timeouts += 1;
                    break;
                }
            }
        }
        if shortened {
            sock.set_read_timeout(Some(timeout))?;
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    Ok(format!(
        r#"{{"op":"dns-udp","count":{count},"answered":{answered},"timeouts":{timeouts},"seconds":{seconds:.6},"cpu_seconds":{:.6}}}"#,
        cpu_seconds()
    ))
}

#[cfg(test)]
mod tests {
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
