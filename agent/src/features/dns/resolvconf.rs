//! The parts of resolv.conf(5) that decide search-list expansion: the search list and ndots.
//! glibc semantics: the last `search` or `domain` line wins; ndots defaults to 1, capped at 15.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// Suffixes in the order the resolver tries them, lower case, no trailing dot.
    pub search: Vec<String>,
    pub ndots: u32,
}

impl Default for ResolvConf {
    fn default() -> Self {
        Self { search: Vec::new(), ndots: 1 }
    }
}

pub fn parse(text: &str) -> ResolvConf {
    let mut conf = ResolvConf::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("search") | Some("domain") => {
                conf.search = words
                    .map(|w| w.trim_end_matches('.').to_ascii_lowercase())
                    .filter(|w| !w.is_empty())
                    .collect();
            }
            Some("options") => {
                for opt in words {
                    if let Some(n) = opt.strip_prefix("ndots:").and_then(|n| n.parse::<u32>().ok())
                    {
                        conf.ndots = n.min(15);
                    }
                }
            }
            _ => {}
        }
    }
    conf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_pod_resolv_conf() {
        let text = "search default.svc.cluster.local svc.cluster.local cluster.local ec2.internal\n\
                    nameserver 10.96.0.10\noptions ndots:5\n";
        assert_eq!(
            parse(text),
            ResolvConf {
                search: vec![
                    "default.svc.cluster.local".into(),
                    "svc.cluster.local".into(),
                    "cluster.local".into(),
                    "ec2.internal".into()
                ],
                ndots: 5
            }
        );
    }

    #[test]
    fn last_search_or_domain_wins_and_junk_is_ignored() {
        let text = "domain a.example.\nsearch B.Example. c # comment\nnameserver 1.1.1.1\noptions ndots:x timeout:2\n";
        assert_eq!(
            parse(text),
            ResolvConf { search: vec!["b.example".into(), "c".into()], ndots: 1 }
        );
        assert_eq!(parse("\u{0}\u{ff}garbage\n").ndots, 1);
        assert_eq!(parse("options ndots:99").ndots, 15);
    }
}
