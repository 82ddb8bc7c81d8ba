//! One operation at a time of each generator: a connection, a round trip, a DNS query. The
//! subcommands run one workload in a loop; `interleave` runs one per cgroup, in turns.
use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

pub trait Workload {
    /// One operation; `Ok(false)` when it did not succeed but the generator can go on (a refused
    /// connect, an unanswered query).
    fn once(&mut self) -> io::Result<bool>;
}

/// Sequential connections to our own listener: connect, the accept thread accepts and closes,
/// the client reads the end of stream and closes. The listener (and so every accepted socket)
/// belongs to the cgroup the process was in when it was made; each client socket to the cgroup
/// the process is in when it connects.
pub struct TcpConnect {
    listener: Arc<TcpListener>,
    target: SocketAddr,
    accepted: Arc<AtomicU64>,
    acceptor: Option<thread::JoinHandle<()>>,
    pub made: u64,
    pub first_error: Option<io::Error>,
}

impl TcpConnect {
    pub fn new(addr: SocketAddr) -> io::Result<Self> {
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
        Ok(Self {
            listener,
            target,
            accepted,
            acceptor: Some(acceptor),
            made: 0,
            first_error: None,
        })
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Acquire)
    }

    /// Waits (up to 10 s) until every connection made has been accepted.
    pub fn wait_accepted(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.accepted() < self.made && Instant::now() < deadline {
            thread::yield_now();
        }
    }

    /// Stops the accept thread.
    pub fn finish(&mut self) -> io::Result<()> {
        // Wakes the thread blocked in accept() (Linux: accept then fails with EINVAL).
        // SAFETY: plain syscall on a descriptor the listener owns and keeps open.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        match self.acceptor.take() {
            Some(t) => t.join().map_err(|_| io::Error::other("accept thread panicked")),
            None => Ok(()),
        }
    }
}

impl Workload for TcpConnect {
    fn once(&mut self) -> io::Result<bool> {
        match TcpStream::connect(self.target) {
            Ok(mut conn) => {
                self.made += 1;
                // Wait for the acceptor's close (EOF) before closing: one connection at a time,
                // so the accept queue never fills (a full queue drops the SYN, and the client
                // retransmits it a second later), and the TIME_WAIT is the listener's, so
                // the client's ephemeral ports are never exhausted.
                let _ = conn.read(&mut [0u8; 1]);
                Ok(true)
            }
            Err(e) => {
                self.first_error.get_or_insert(e);
                Ok(false)
            }
        }
    }
}

impl Drop for TcpConnect {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// One loopback connection to a server thread of our own, both ends made in the cgroup the
/// process is in when it starts; closing our end ends the server, whose result `finish` returns.
struct Peer<T> {
    conn: TcpStream,
    server: Option<thread::JoinHandle<io::Result<T>>>,
}

impl<T: Send + 'static> Peer<T> {
    fn start(
        addr: SocketAddr,
        nodelay: bool,
        serve: impl FnOnce(TcpStream) -> io::Result<T> + Send + 'static,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let target = listener.local_addr()?;
        let server = thread::spawn(move || -> io::Result<T> {
            let (conn, _) = listener.accept()?;
            conn.set_nodelay(nodelay)?;
            serve(conn)
        });
        let conn = TcpStream::connect(target)?;
        conn.set_nodelay(nodelay)?;
        Ok(Self { conn, server: Some(server) })
    }
}

impl<T> Peer<T> {
    /// Closes our end and waits for the server; None when it was waited for already.
    fn finish(&mut self) -> io::Result<Option<T>> {
        let _ = self.conn.shutdown(std::net::Shutdown::Write);
        match self.server.take() {
            Some(t) => t.join().map_err(|_| io::Error::other("server thread panicked"))?.map(Some),
            None => Ok(None),
        }
    }
}

impl<T> Drop for Peer<T> {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Ping-pong of `size`-byte messages over one loopback connection (see [`Peer`]).
pub struct TcpRr {
    peer: Peer<()>,
    msg: Vec<u8>,
    buf: Vec<u8>,
}

impl TcpRr {
    pub fn new(size: usize, addr: SocketAddr) -> io::Result<Self> {
        let peer = Peer::start(addr, true, move |mut conn| {
            let mut buf = vec![0u8; size];
            while read_message(&mut conn, &mut buf)? {
                conn.write_all(&buf)?;
            }
            Ok(())
        })?;
        Ok(Self { peer, msg: vec![b'x'; size], buf: vec![0u8; size] })
    }

    /// Closes the connection and waits for the server thread.
    pub fn finish(&mut self) -> io::Result<()> {
        self.peer.finish().map(|_| ())
    }
}

impl Workload for TcpRr {
    fn once(&mut self) -> io::Result<bool> {
        self.peer.conn.write_all(&self.msg)?;
        if !read_message(&mut self.peer.conn, &mut self.buf)? {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed"));
        }
        Ok(true)
    }
}

/// Bulk transfer over one loopback connection (see [`Peer`]): each operation writes one
/// `chunk`-byte buffer; the server reads and discards everything.
pub struct TcpBulk {
    peer: Peer<u64>,
    chunk: Vec<u8>,
}

impl TcpBulk {
    pub fn new(chunk: usize, addr: SocketAddr) -> io::Result<Self> {
        let peer = Peer::start(addr, false, |mut conn| {
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                match conn.read(&mut buf) {
                    Ok(0) => return Ok(total),
                    Ok(n) => total += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        })?;
        Ok(Self { peer, chunk: vec![b'x'; chunk] })
    }

    /// Closes the connection; the bytes the server received.
    pub fn finish(&mut self) -> io::Result<u64> {
        Ok(self.peer.finish()?.unwrap_or(0))
    }
}

impl Workload for TcpBulk {
    fn once(&mut self) -> io::Result<bool> {
        self.peer.conn.write_all(&self.chunk)?;
        Ok(true)
    }
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
pub fn encode_name(name: &str) -> Result<Vec<u8>, String> {
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

/// A queries, one in flight, from one UDP socket (the cgroup's it was made in); a query
/// unanswered within `timeout` is a timeout and the next one is sent. Replies are matched by id
/// (a late reply is not a new answer).
pub struct DnsUdp {
    sock: UdpSocket,
    server: SocketAddr,
    query: Vec<u8>,
    buf: [u8; 1500],
    timeout: Duration,
    next_id: u16,
    /// The read timeout was shortened while a stray reply was skipped.
    shortened: bool,
    pub answered: u64,
    pub timeouts: u64,
}

impl DnsUdp {
    pub fn new(server: SocketAddr, name: &[u8], timeout: Duration) -> io::Result<Self> {
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
        Ok(Self {
            sock,
            server,
            query,
            buf: [0; 1500],
            timeout,
            next_id: 0,
            shortened: false,
            answered: 0,
            timeouts: 0,
        })
    }

    fn wait_answer(&mut self, id: u16, sent: Instant) -> io::Result<bool> {
        loop {
            match self.sock.recv_from(&mut self.buf) {
                Ok((n, from))
                    if from == self.server && n >= 12 && self.buf[0..2] == id.to_be_bytes() =>
                {
                    return Ok(true);
                }
                Ok(_) => {
                    // a stray or late reply: keep waiting for ours, within the same deadline
                    let left = self.timeout.saturating_sub(sent.elapsed());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    self.sock.set_read_timeout(Some(left))?;
                    self.shortened = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock/TimedOut, or e.g. ECONNREFUSED from an ICMP port unreachable: no
                // answer for this one
                Err(_) => return Ok(false),
            }
        }
    }
}

impl Workload for DnsUdp {
    fn once(&mut self) -> io::Result<bool> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.query[0..2].copy_from_slice(&id.to_be_bytes());
        self.sock.send_to(&self.query, self.server)?;
        let answered = self.wait_answer(id, Instant::now());
        if std::mem::take(&mut self.shortened) {
            self.sock.set_read_timeout(Some(self.timeout))?;
        }
        if answered? {
            self.answered += 1;
            Ok(true)
        } else {
            self.timeouts += 1;
            Ok(false)
        }
    }
}
