//! The log of the agent and of a program that embeds it (the demo): env_logger with the level
//! filter of `--log-level`, as text or, with `--log-format json`, one JSON object per line for
//! log pipelines (Fluent Bit, Vector, the CloudWatch agent) that would otherwise split or
//! mis-level multi-part text lines.
use std::io::Write as _;

use crate::cli::LogFormat;

pub fn init(level: &str, format: LogFormat) {
    let mut builder = env_logger::Builder::new();
    // The Kubernetes client logs each failed request itself; agent::attribution::pods says the
    // same once, with the retry delay. `--log-level info,kube_client=debug` brings them back.
    builder.filter_module("kube_client", log::LevelFilter::Off).parse_filters(level);
    match format {
        LogFormat::Text => {
            builder.format_target(false);
        }
        LogFormat::Json => {
            builder.format(|buf, record| {
                let time = buf.timestamp_millis().to_string();
                let line = json_line(&time, record.level(), record.target(), record.args());
                writeln!(buf, "{line}")
            });
        }
    }
    builder.init();
}

/// `{"time":…,"level":…,"target":…,"message":…}`, level in lower case.
fn json_line(
    time: &str,
    level: log::Level,
    target: &str,
    message: &std::fmt::Arguments<'_>,
) -> String {
    let mut line = String::with_capacity(128);
    line.push_str("{\"time\":");
    push_json_string(&mut line, time);
    line.push_str(",\"level\":");
    push_json_string(&mut line, &level.as_str().to_ascii_lowercase());
    line.push_str(",\"target\":");
    push_json_string(&mut line, target);
    line.push_str(",\"message\":");
    push_json_string(&mut line, &message.to_string());
    line.push('}');
    line
}

/// `s` as a JSON string, escaped by serde_json (serialising a `str` cannot fail).
fn push_json_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_parse_back_whatever_the_message_holds() {
        let message = "listening on [::]:9500 \"quoted\" back\\slash\ttab\nnewline \u{1} é";
        let line = json_line(
            "2026-12-06T15:00:00.123Z",
            log::Level::Warn,
            "agent::run",
            &format_args!("{message}"),
        );
        assert!(!line.contains('\n'));
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["message"], message);
        assert_eq!(parsed["level"], "warn");
        assert_eq!(parsed["target"], "agent::run");
        assert_eq!(parsed["time"], "2026-12-06T15:00:00.123Z");
        assert_eq!(parsed.as_object().unwrap().len(), 4);
    }
}
