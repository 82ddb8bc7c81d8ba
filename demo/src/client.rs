//! The demo's client: the AWS Java SDK v1 `EC2CredentialsFetcher` rule. Before each application
//! request it refreshes when it has no credentials or they expire within 15 minutes, using the
//! IMDSv2 flow (token PUT, role list, role credentials: what IMDSv2-capable v1 builds do).
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use clap::Args;

use agent::features::metadata::expiration::unix_seconds;

/// The SDK's refresh threshold.
const REFRESH_WITHIN: Duration = Duration::from_secs(15 * 60);

#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Metadata server, ADDR:PORT.
    #[arg(long)]
    pub endpoint: SocketAddr,
    /// Application requests per second.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Stop after this many application requests (0: forever).
    #[arg(long, default_value_t = 0)]
    pub requests: u64,
    /// The application's upstream (`NAME:PORT`, resolved through glibc each request, like a JVM
    /// with its DNS cache off): what every request calls after making sure it has credentials.
    #[arg(long)]
    pub upstream: Option<String>,
}

pub fn run(args: &ClientArgs) -> anyhow::Result<()> {
    let period = Duration::from_secs_f64(1.0 / args.rate.clamp(0.01, 1000.0));
    let mut expires_at: Option<i64> = None;
    let mut done = 0u64;
    while args.requests == 0 || done < args.requests {
        let started = Instant::now();
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
        if expires_at.is_none_or(|e| e - now < REFRESH_WITHIN.as_secs() as i64) {
            expires_at = Some(refresh(args.endpoint).context("refreshing credentials")?);
        }
        if let Some(upstream) = &args.upstream {
            call_upstream(upstream).with_context(|| format!("calling {upstream}"))?;
        }
        done += 1;
        std::thread::sleep(period.saturating_sub(started.elapsed()));
    }
    Ok(())
}

fn refresh(server: SocketAddr) -> anyhow::Result<i64> {
    let token =
        call(server, "PUT", "/latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds: 21600")?;
    let token_header = format!("X-aws-ec2-metadata-token: {token}");
    let role = call(server, "GET", "/latest/meta-data/iam/security-credentials/", &token_header)?;
    let doc = call(
        server,
        "GET",
        &format!("/latest/meta-data/iam/security-credentials/{}", role.trim()),
        &token_header,
    )?;
    expiration_of(&doc).context("credential document without a valid Expiration")
}

/// The document's `"Expiration"`, however the JSON is spaced.
fn expiration_of(doc: &str) -> Option<i64> {
    let rest = &doc[doc.find("\"Expiration\"")? + "\"Expiration\"".len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let digits: String = rest.get(..19)?.chars().filter(char::is_ascii_digit).collect();
    unix_seconds(digits.parse().ok()?)
}

fn call_upstream(upstream: &str) -> anyhow::Result<()> {
    use std::net::ToSocketAddrs as _;
    // getaddrinfo: the search list and ndots of this process's /etc/resolv.conf apply.
    let addr = upstream.to_socket_addrs()?.next().context("no address")?;
    call(addr, "GET", "/", "Accept: */*")?;
    Ok(())
}

/// The `User-Agent` Java SDK v1 sends on its metadata calls (`VersionInfoUtils.getUserAgent()`):
/// credwatch names the client `sdk="java_v1"` from it.
const USER_AGENT: &str =
    "aws-sdk-java/1.12.780 Linux/6.1.0 OpenJDK_64-Bit_Server_VM/17.0.10+7 java/17.0.10";

/// One request on a new connection, as the SDK's default HTTP client does for IMDS.
fn call(server: SocketAddr, method: &str, path: &str, header: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(server)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_nodelay(true)?;
    // One write, as an SDK's HTTP client does: the request head leaves in one segment.
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {server}\r\nUser-Agent: {USER_AGENT}\r\n{header}\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes())?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("response without a header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{method} {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::expiration_of;

    #[test]
    fn expiration_with_or_without_spaces() {
        let want = Some(1_795_860_900);
        assert_eq!(expiration_of(r#"{"Token":"x","Expiration":"2026-11-28T10:15:00Z"}"#), want);
        assert_eq!(expiration_of(r#"{"Token": "x", "Expiration": "2026-11-28T10:15:00Z"}"#), want);
        assert_eq!(expiration_of(r#"{"Expiration": 5}"#), None);
    }
}
