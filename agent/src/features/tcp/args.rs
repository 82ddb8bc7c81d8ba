//! TCP command-line flags (part of `credwatch run`).
use clap::Args;

use crate::features::tcp::classify::Cidr;

#[derive(Args, Debug, Clone, Default)]
pub struct TcpArgs {
    /// Pod and service address range: connects there are labelled destination="cluster"
    /// (repeatable; in the environment comma-separated).
    #[arg(long = "cluster-cidr", env = "CREDWATCH_CLUSTER_CIDRS", value_delimiter = ',')]
    pub cluster_cidrs: Vec<Cidr>,

    /// AWS API address range: connects there are labelled destination="aws_api" (repeatable).
    #[arg(long = "aws-api-cidr", env = "CREDWATCH_AWS_API_CIDRS", value_delimiter = ',')]
    pub aws_api_cidrs: Vec<Cidr>,
}
