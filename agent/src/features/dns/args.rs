//! DNS command-line flags (part of `credwatch run`).
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct DnsArgs {
    /// DNS server port to watch, UDP and TCP (repeatable; in the environment comma-separated).
    /// Queries to any address on it are observed.
    #[arg(
        long = "dns-port",
        env = "CREDWATCH_DNS_PORTS",
        value_delimiter = ',',
        default_value = "53"
    )]
    pub dns_ports: Vec<u16>,

    /// A query with no answer after this many seconds is counted with rcode="timeout".
    #[arg(long, env = "CREDWATCH_DNS_TIMEOUT", default_value_t = 5)]
    pub dns_timeout: u64,

    /// Export query counts per name for the first N names each pod asks for (the rest as
    /// "~other"). 0 (the default) exports no names. Series: at most N+1 per pod.
    #[arg(long, env = "CREDWATCH_DNS_TOP_NAMES", default_value_t = 0)]
    pub dns_top_names: usize,
}

impl DnsArgs {
    /// How long a query may wait for its answer (at least a second).
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.dns_timeout.max(1))
    }
}

impl Default for DnsArgs {
    fn default() -> Self {
        Self { dns_ports: vec![53], dns_timeout: 5, dns_top_names: 0 }
    }
}
