//! The agent's own heap: what it holds, and handing freed memory back to the kernel.
//!
//! RSS alone cannot tell a leak from memory the allocator keeps for reuse: after thousands of pods
//! come and go, glibc keeps part of what was freed (fragments between live allocations), so the
//! RSS left over moves by several MB from one churn to the next. The bytes still allocated do not;
//! they are exported so that a leak shows as a line that keeps rising.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, gauge::ConstGauge},
};

/// Hands memory freed by a large removal back to the kernel. glibc keeps freed heap memory for
/// reuse (and raises its mmap threshold after large frees), so without this the agent's RSS after
/// thousands of pods come and go stays near its peak even though nothing is in use.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused pages of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Bytes allocated and not yet freed: heap chunks in use in every arena plus blocks the allocator
/// mmapped for large allocations. None where the allocator cannot say (not glibc).
pub fn heap_in_use() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics (glibc 2.33+; the agent is
        // built against Debian 12's 2.36).
        let info = unsafe { libc::mallinfo2() };
        Some((info.uordblks + info.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// `credwatch_agent_heap_bytes`, read at scrape time.
#[derive(Debug)]
pub struct HeapInUse;

impl Collector for HeapInUse {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(bytes) = heap_in_use() else {
            return Ok(());
        };
        let metric = enc.encode_descriptor(
            "credwatch_agent_heap_bytes",
            "Bytes the agent has allocated and not freed (its RSS also holds freed memory the allocator keeps)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(bytes as i64).encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_in_use_follows_a_large_allocation() {
        let Some(before) = heap_in_use() else {
            return; // not glibc: nothing to measure
        };
        let block = vec![0u8; 64 << 20];
        let during = heap_in_use().unwrap();
        drop(std::hint::black_box(block));
        let after = heap_in_use().unwrap();
        // Other test threads allocate too, but not tens of MiB at a time.
        assert!(during >= before + (60 << 20), "{before} → {during}");
        assert!(after + (60 << 20) <= during, "{during} → {after}");
    }
}
