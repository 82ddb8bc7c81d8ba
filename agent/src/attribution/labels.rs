//! The labels every per-workload series carries, and their encoding (the hot part of a scrape).
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelSetEncoder};

/// The labels every per-workload series carries.
///
/// With Kubernetes metadata: the pod's namespace and name, the container's name and the
/// controller that owns the pod (`Deployment/api`). Without it (see [`identify`]): the pod UID,
/// the short container id, or the systemd unit or cgroup path.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct Workload {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub workload: String,
}

/// What `#[derive(EncodeLabelSet)]` would write (`namespace="…",pod="…",container="…",
/// workload="…"`, values escaped), in two encoder calls instead of twelve: the first three labels
/// are written, escaped here, as the text encoder's label *key* (which it copies as it is), the
/// last as an ordinary label. Every per-pod line of /metrics carries these labels, so with many
/// pods the encoder's per-label calls are most of a scrape's CPU (docs/benchmarks.md, "Figures
/// behind userspace design choices"). Sound because this crate enables only prometheus-client's text
/// encoders (no protobuf feature, where a key is a field of its own); a test compares the output
/// with the derived encoding, escapes included, in both text formats.
impl EncodeLabelSet for Workload {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        LABEL_PREFIX.with_borrow_mut(|prefix| {
            prefix.clear();
            for (key, value) in
                [("namespace", &self.namespace), ("pod", &self.pod), ("container", &self.container)]
            {
                prefix.push_str(key);
                prefix.push_str("=\"");
                push_escaped(prefix, value);
                prefix.push_str("\",");
            }
            prefix.push_str("workload");
            let mut label = encoder.encode_label();
            let mut key = label.encode_label_key()?;
            key.write_str(prefix)?;
            let mut value = key.encode_label_value()?;
            EncodeLabelValue::encode(&self.workload.as_str(), &mut value)?;
            value.finish()
        })
    }
}

thread_local! {
    /// Reused by every [`Workload`] label encoding (a scrape writes tens of thousands).
    static LABEL_PREFIX: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// A label value as the exposition formats escape it: backslash, double quote and line feed.
fn push_escaped(out: &mut String, value: &str) {
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The labels as prometheus-client's derive encodes them: the reference for the hand-written
    /// encoding of [`Workload`].
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Derived {
        namespace: String,
        pod: String,
        container: String,
        workload: String,
    }

    /// Flattened into a larger label set, as the metrics use it.
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct OursWithMore {
        #[prometheus(flatten)]
        workload: Workload,
        qtype: &'static str,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct DerivedWithMore {
        #[prometheus(flatten)]
        workload: Derived,
        qtype: &'static str,
    }

    fn exposition<L>(labels: &[L], openmetrics: bool) -> String
    where
        L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    {
        use prometheus_client::{
            encoding::{prometheus_text, text},
            metrics::{counter::Counter, family::Family},
            registry::Registry,
        };
        let mut registry = Registry::default();
        let family = Family::<L, Counter>::default();
        registry.register("requests", "help", family.clone());
        for (i, l) in labels.iter().enumerate() {
            family.get_or_create(l).inc_by(i as u64 + 1);
        }
        let mut out = String::new();
        if openmetrics {
            text::encode(&mut out, &registry).unwrap();
        } else {
            prometheus_text::encode(&mut out, &registry).unwrap();
        }
        // series order follows the family's hash map: compare as sets of lines
        let mut lines: Vec<&str> = out.lines().collect();
        lines.sort_unstable();
        lines.join("\n")
    }

    #[test]
    fn workload_labels_encode_as_the_derive_would_escapes_included() {
        let values = [
            ("default", "api-7d9f", "app", "Deployment/api"),
            ("", "", "", ""),
            ("ns", "quote\"in", "back\\slash", "line\nfeed"),
            ("ünï", "ends with \\", "\"\"", "Job/x=\"y\",z"),
        ];
        let ours: Vec<OursWithMore> = values
            .iter()
            .map(|&(n, p, c, w)| OursWithMore {
                workload: Workload {
                    namespace: n.into(),
                    pod: p.into(),
                    container: c.into(),
                    workload: w.into(),
                },
                qtype: "A",
            })
            .collect();
        let derived: Vec<DerivedWithMore> = ours
            .iter()
            .map(|o| DerivedWithMore {
                workload: Derived {
                    namespace: o.workload.namespace.clone(),
                    pod: o.workload.pod.clone(),
                    container: o.workload.container.clone(),
                    workload: o.workload.workload.clone(),
                },
                qtype: "A",
            })
            .collect();
        for openmetrics in [true, false] {
            let (a, b) = (exposition(&ours, openmetrics), exposition(&derived, openmetrics));
            assert_eq!(a, b, "openmetrics: {openmetrics}");
            assert!(
                a.contains(
                    r#"pod="quote\"in",container="back\\slash",workload="line\nfeed",qtype="A""#
                ),
                "{a}"
            );
        }
    }
}
