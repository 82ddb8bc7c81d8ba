//! Whether and how to talk to the Kubernetes API: `--kubernetes auto|on|off`, in-cluster
//! configuration or a kubeconfig, the node name, and the series grace period.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, ValueEnum};
#[cfg(feature = "kubernetes")]
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--kubernetes on, but there is no in-cluster service account environment \
         (KUBERNETES_SERVICE_HOST) and no kubeconfig (--kubeconfig, KUBECONFIG, ~/.kube/config)"
    )]
    NoSource,
    #[error(
        "the Kubernetes watch needs this node's name: set --node-name or NODE_NAME (downward API spec.nodeName)"
    )]
    NoNodeName,
    #[cfg(feature = "kubernetes")]
    #[error("in-cluster Kubernetes configuration")]
    InCluster(#[source] kube::config::InClusterError),
    #[cfg(feature = "kubernetes")]
    #[error("reading kubeconfig {path}")]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[cfg(feature = "kubernetes")]
    #[error("kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[cfg(feature = "kubernetes")]
    #[error("creating the Kubernetes client")]
    Client(#[source] kube::Error),
    #[cfg(not(feature = "kubernetes"))]
    #[error(
        "this build of the agent has no Kubernetes client (the agent crate's `kubernetes` feature)"
    )]
    NotBuiltIn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// On when running in a pod (service account environment) or when a kubeconfig is given
    /// or found, off otherwise.
    Auto,
    On,
    Off,
}

#[derive(Args, Debug, Clone)]
pub struct KubeArgs {
    /// Label series with pod, container and workload names from the Kubernetes API.
    #[arg(long = "kubernetes", env = "CREDWATCH_KUBERNETES", value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,

    /// kubeconfig file to reach the API with (colon-separated list allowed, as kubectl does).
    /// Without it: in-cluster configuration, then ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<String>,

    /// This node's name, to watch only the pods scheduled here (set it from the downward API:
    /// `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// How long the series of a deleted pod (or vanished cgroup) stay in /metrics, so that
    /// their last increments are scraped: `90s`, `2m`, `1h`, or seconds.
    #[arg(long, env = "CREDWATCH_SERIES_GRACE", default_value = "2m", value_parser = parse_duration)]
    pub series_grace: Duration,
}

impl Default for KubeArgs {
    fn default() -> Self {
        Self {
            mode: Mode::Off,
            kubeconfig: None,
            node_name: None,
            series_grace: Duration::from_secs(120),
        }
    }
}

/// `500ms`, `90s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with an optional unit (ms, s, m, h)"))?;
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => return Err(format!("{s:?}: unknown unit {other:?} (ms, s, m, h)")),
    };
    n.checked_mul(ms).map(Duration::from_millis).ok_or_else(|| format!("{s:?}: too long"))
}

/// Where the API configuration comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    InCluster,
    Kubeconfig(Vec<PathBuf>),
}

/// What the process environment offers, gathered so [`choose`] stays a pure function.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    /// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT` are set.
    pub in_cluster: bool,
    /// `~/.kube/config`, when it exists.
    pub home_kubeconfig: Option<PathBuf>,
}

impl Environment {
    pub fn current() -> Self {
        let in_cluster = ["KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"]
            .iter()
            .all(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
        let home_kubeconfig = std::env::var_os("HOME")
            .map(|h| Path::new(&h).join(".kube/config"))
            .filter(|p| p.is_file());
        Self { in_cluster, home_kubeconfig }
    }
}

/// An explicit kubeconfig wins, then the pod's service account, then ~/.kube/config. `auto`
/// with none of them is off; `on` with none of them is an error.
pub fn choose(
    mode: Mode,
    kubeconfig: Option<&str>,
    env: &Environment,
) -> Result<Option<Source>, ConfigError> {
    if mode == Mode::Off {
        return Ok(None);
    }
    let explicit: Vec<PathBuf> = kubeconfig
        .unwrap_or_default()
        .split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    let source = if !explicit.is_empty() {
        Some(Source::Kubeconfig(explicit))
    } else if env.in_cluster {
        Some(Source::InCluster)
    } else {
        env.home_kubeconfig.clone().map(|p| Source::Kubeconfig(vec![p]))
    };
    match (source, mode) {
        (None, Mode::On) => Err(ConfigError::NoSource),
        (source, _) => Ok(source),
    }
}

/// A client for `source`. Reads files only: nothing is sent until the watch starts.
#[cfg(feature = "kubernetes")]
pub async fn client(source: &Source) -> Result<Client, ConfigError> {
    let config = match source {
        Source::InCluster => Config::incluster().map_err(ConfigError::InCluster)?,
        Source::Kubeconfig(paths) => {
            let mut merged: Option<Kubeconfig> = None;
            for path in paths {
                let kc = Kubeconfig::read_from(path)
                    .map_err(|source| ConfigError::ReadKubeconfig { path: path.clone(), source })?;
                merged = Some(match merged {
                    None => kc,
                    Some(m) => m
                        .merge(kc)
                        .map_err(|source| ConfigError::Kubeconfig { path: path.clone(), source })?,
                });
            }
            let first = paths.first().cloned().unwrap_or_default();
            let kc = merged.ok_or(ConfigError::NoSource)?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| ConfigError::Kubeconfig { path: first, source })?
        }
    };
    Client::try_from(config).map_err(ConfigError::Client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (s, d) in
            [("120", 120_000), ("90s", 90_000), ("2m", 120_000), ("1h", 3_600_000), ("500ms", 500)]
        {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(d)), "{s}");
        }
        for bad in ["", "m", "2d", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn source_selection() {
        let nothing = Environment::default();
        let pod = Environment { in_cluster: true, ..Default::default() };
        let home = Environment {
            home_kubeconfig: Some("/root/.kube/config".into()),
            ..Default::default()
        };
        let kc = |p: &[&str]| Some(Source::Kubeconfig(p.iter().map(PathBuf::from).collect()));
        assert_eq!(choose(Mode::Auto, None, &nothing).unwrap(), None);
        assert!(matches!(choose(Mode::On, None, &nothing), Err(ConfigError::NoSource)));
        assert_eq!(choose(Mode::Off, Some("/k"), &pod).unwrap(), None);
        assert_eq!(choose(Mode::Auto, None, &pod).unwrap(), Some(Source::InCluster));
        assert_eq!(choose(Mode::Auto, Some("/a:/b"), &pod).unwrap(), kc(&["/a", "/b"]));
        assert_eq!(choose(Mode::Auto, None, &home).unwrap(), kc(&["/root/.kube/config"]));
        assert_eq!(choose(Mode::On, Some(""), &home).unwrap(), kc(&["/root/.kube/config"]));
    }
}
