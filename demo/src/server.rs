//! A fake instance-metadata credential server on loopback, in-process, for the demo. It hands
//! out credentials the way KIAM does (a new session every `rotate`, each living `lifetime`), or
//! the way EC2's instance profile does (hours). The credentials are random and never printed.
use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::sandbox::random_hex;

pub const ROLE: &str = "demo-app-role";

#[derive(Clone, Copy)]
pub struct Profile {
    lifetime: Duration,
    rotate: Duration,
}

impl Profile {
    /// KIAM defaults: `--session-duration=15m`, `--session-refresh=5m`.
    pub fn kiam() -> Self {
        Self { lifetime: Duration::from_secs(900), rotate: Duration::from_secs(300) }
    }
    /// EC2 instance profile: about six hours, rotated hourly.
    pub fn ec2_instance_profile() -> Self {
        Self { lifetime: Duration::from_secs(6 * 3600), rotate: Duration::from_secs(3600) }
    }

    /// Expiration of the credentials current at `now` (Unix seconds).
    fn expiration(&self, now: u64) -> u64 {
        let rotate = self.rotate.as_secs().max(1);
        now / rotate * rotate + self.lifetime.as_secs()
    }
}

pub async fn start(profile: Profile) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, profile));
        }
    });
    Ok(addr)
}

/// The demo's fake AWS API: answers every request with a small 200.
pub async fn start_api() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(addr)
}

async fn serve(mut stream: TcpStream, profile: Profile) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let line = head.lines().next().unwrap_or_default();
    let role_list = "/latest/meta-data/iam/security-credentials/";
    let (status, body) = match line.split(' ').take(2).collect::<Vec<_>>()[..] {
        ["PUT", "/latest/api/token"] => (200, random_hex(28)),
        ["GET", p] if p == role_list => (200, ROLE.to_string()),
        ["GET", p] if p.strip_prefix(role_list) == Some(ROLE) => (200, credentials(profile)),
        _ => (404, "not found".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        if status == 200 { "OK" } else { "Not Found" },
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A credential document in the order IMDS serves it (secrets before `Expiration`).
fn credentials(profile: Profile) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let exp = profile.expiration(now);
    format!(
        "{{\"Code\":\"Success\",\"LastUpdated\":\"{}\",\"Type\":\"AWS-HMAC\",\"AccessKeyId\":\"ASIA{}\",\
\"SecretAccessKey\":\"{}\",\"Token\":\"{}\",\"Expiration\":\"{}\"}}",
        iso8601(exp - profile.lifetime.as_secs()),
        random_hex(8).to_uppercase(),
        random_hex(20),
        random_hex(512),
        iso8601(exp)
    )
}

/// `YYYY-MM-DDThh:mm:ssZ` for Unix seconds.
pub fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // civil-from-days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent::features::metadata::expiration::unix_seconds;

    #[test]
    fn iso8601_round_trips_through_the_agent_parser() {
        for secs in [0u64, 951_825_600, 1_795_860_900, 4_102_444_799] {
            let s = iso8601(secs);
            let digits: String = s.chars().filter(char::is_ascii_digit).collect();
            assert_eq!(unix_seconds(digits.parse().unwrap()), Some(secs as i64), "{s}");
        }
    }

    #[test]
    fn kiam_credentials_have_ten_to_fifteen_minutes_left() {
        let p = Profile::kiam();
        for now in [0u64, 299, 300, 1_000_000_123] {
            let left = p.expiration(now) - now;
            assert!((601..=900).contains(&left), "{left}");
        }
    }
}
