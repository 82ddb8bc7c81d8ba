//! The demo's client against a fake metadata server on loopback (no root): it follows the AWS
//! Java SDK v1 rule, refreshing through the IMDSv2 flow only when it has no credentials or they
//! expire within 15 minutes, and calls its upstream once per application request.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener},
    process::Command,
    sync::{Arc, Mutex},
    thread,
};

/// (method, path, carried the IMDSv2 token header) of every request served.
type Log = Arc<Mutex<Vec<(String, String, bool)>>>;

/// Serves the IMDSv2 credential flow, the credentials expiring at `expiration`, and 200 to
/// anything else; records every request.
fn fake_server(expiration: &'static str) -> (SocketAddr, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::default();
    let seen = log.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut token = false;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                token |= header.to_ascii_lowercase().starts_with("x-aws-ec2-metadata-token:");
            }
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next().unwrap().to_string(), parts.next().unwrap());
            let body = match path {
                "/latest/api/token" => "a-session-token".to_string(),
                "/latest/meta-data/iam/security-credentials/" => "the-role".to_string(),
                "/latest/meta-data/iam/security-credentials/the-role" => format!(
                    r#"{{"Code":"Success","AccessKeyId":"ASIAFAKE","Expiration":"{expiration}"}}"#
                ),
                _ => "ok".to_string(),
            };
            seen.lock().unwrap().push((method, path.to_string(), token));
            let response =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (addr, log)
}

fn client(metadata: SocketAddr, upstream: SocketAddr, requests: u32) {
    let status = Command::new(env!("CARGO_BIN_EXE_credwatch-demo"))
        .args(["demo-client", "--endpoint", &metadata.to_string(), "--rate", "100"])
        .args(["--requests", &requests.to_string(), "--upstream", &upstream.to_string()])
        .env_remove("CREDWATCH_LOG_LEVEL")
        .status()
        .unwrap();
    assert!(status.success(), "demo-client exited {status}");
}

fn paths(log: &Log) -> Vec<String> {
    log.lock().unwrap().iter().map(|(m, p, _)| format!("{m} {p}")).collect()
}

const REFRESH: [&str; 3] = [
    "PUT /latest/api/token",
    "GET /latest/meta-data/iam/security-credentials/",
    "GET /latest/meta-data/iam/security-credentials/the-role",
];

#[test]
fn credentials_with_hours_left_are_fetched_once() {
    let (metadata, log) = fake_server("2999-01-01T00:00:00Z");
    let (upstream, calls) = fake_server("");
    client(metadata, upstream, 3);
    assert_eq!(paths(&log), REFRESH);
    // IMDSv2: both GETs carry the session token, the PUT asks for one.
    let tokens: Vec<bool> = log.lock().unwrap().iter().map(|r| r.2).collect();
    assert_eq!(tokens, [false, true, true]);
    assert_eq!(paths(&calls), ["GET /", "GET /", "GET /"]);
}

#[test]
fn expired_credentials_are_fetched_before_every_request() {
    let (metadata, log) = fake_server("2000-01-01T00:00:00Z");
    let (upstream, calls) = fake_server("");
    client(metadata, upstream, 3);
    assert_eq!(paths(&log), REFRESH.repeat(3));
    assert_eq!(paths(&calls).len(), 3);
}
