//! The kernel's TCP tables: connects and accepts counted per (cgroup, class) in `CW_TCP_STATS`
//! and each CPU's cache `CW_TCP_STATS_CPU`, read as increments (crate::counts, the model DNS
//! counts with too).
use agent_common::{
    names,
    tcp::{STATS_CACHE_SLOTS, TcpStats, TcpStatsKey},
};

use crate::{
    counts::CountTables,
    kernel::{Attachment, KernelError},
};

pub type TcpTables = CountTables<TcpStatsKey, TcpStats>;

/// Takes the TCP counting maps out of the kernel object.
pub fn take(kernel: &mut Attachment) -> Result<TcpTables, KernelError> {
    CountTables::take(
        kernel,
        names::MAP_TCP_STATS,
        names::MAP_TCP_STATS_CPU,
        STATS_CACHE_SLOTS,
        names::config::TCP_STATS_EPOCH,
    )
}
