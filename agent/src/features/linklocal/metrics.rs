//! Link-local metric families and their label types: the per-workload packet counter, the
//! node-wide per-second histograms (total and by service), and the ENA driver's allowance
//! counters, read at scrape time (`ena`).
use agent_common::linklocal::Service;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::Gauge,
        histogram::Histogram,
    },
    registry::Registry,
};

use super::ena;
use crate::{
    attribution::labels::Workload,
    series::{Tracked, workload_labels},
};

/// Packets in one second. 0 separates idle seconds; 819.2 is 80 % of the 1024 allowance (the
/// alert's threshold: counts are whole, so `le="819.2"` holds the seconds with at most 819).
pub const PER_SECOND_BUCKETS: [f64; 12] =
    [0.0, 64.0, 128.0, 256.0, 512.0, 768.0, 819.2, 896.0, 1024.0, 1536.0, 2048.0, 4096.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLocalLabels {
    #[prometheus(flatten)]
    pub workload: Workload,
    pub linklocal_service: &'static str,
}

workload_labels!(LinkLocalLabels);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub linklocal_service: &'static str,
}

fn per_second_histogram() -> Histogram {
    Histogram::new(PER_SECOND_BUCKETS)
}

#[derive(Clone, Debug)]
pub struct LinkLocalMetrics {
    pub packets: Tracked<LinkLocalLabels, Counter>,
    pub per_second: Histogram,
    pub service_per_second: Family<ServiceLabels, Histogram, fn() -> Histogram>,
    /// Seconds whose kernel slots were reused before they were read (the agent stalled for
    /// `SECOND_SLOTS` seconds): not observed.
    pub seconds_lost: Counter,
    /// Entries of the kernel's per-(cgroup, service) table at the last read.
    pub table_entries: Gauge,
}

impl LinkLocalMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self {
            packets: Tracked::register(
                r,
                "credwatch_linklocal_packets",
                "Packets sent to link-local services (IMDS, Amazon DNS, time sync, ECS and Pod Identity agents; the EC2 allowance is 1024 a second per interface)",
                Family::default(),
            ),
            per_second: per_second_histogram(),
            service_per_second: Family::new_with_constructor(per_second_histogram),
            seconds_lost: Counter::default(),
            table_entries: Gauge::default(),
        };
        r.register(
            "credwatch_linklocal_packets_per_second",
            "Packets to link-local services in each completed second, node-wide (every second observed once, idle ones as 0)",
            m.per_second.clone(),
        );
        r.register(
            "credwatch_linklocal_service_packets_per_second",
            "Packets to one link-local service in each completed second, node-wide",
            m.service_per_second.clone(),
        );
        for s in Service::ALL {
            let _ = m
                .service_per_second
                .get_or_create(&ServiceLabels { linklocal_service: s.as_str() });
        }
        r.register(
            "credwatch_linklocal_seconds_lost",
            "Seconds not observed in the per-second histograms: the kernel reused their slots before the agent read them",
            m.seconds_lost.clone(),
        );
        r.register(
            "credwatch_linklocal_table_entries",
            "(cgroup, service) entries in the kernel's link-local table; a vanished cgroup's are removed",
            m.table_entries.clone(),
        );
        r.register_collector(Box::new(EnaAllowances));
        m
    }

    /// One completed second: its total, and each service's packets.
    pub fn observe_second(&self, packets: &[u64; agent_common::linklocal::SERVICES]) {
        self.per_second.observe(packets.iter().sum::<u64>() as f64);
        for s in Service::ALL {
            let labels = ServiceLabels { linklocal_service: s.as_str() };
            self.service_per_second.get_or_create(&labels).observe(packets[s as usize] as f64);
        }
    }
}

/// `credwatch_ena_allowance_exceeded_total{interface, allowance}`, read from the driver at each
/// scrape; no series where no interface is driven by ENA.
#[derive(Debug)]
struct EnaAllowances;

impl Collector for EnaAllowances {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = enc.encode_descriptor(
            "credwatch_ena_allowance_exceeded",
            "Packets the ENA driver reports queued or dropped for exceeding an EC2 allowance (ethtool -S *_allowance_exceeded), per interface",
            None,
            MetricType::Counter,
        )?;
        for a in ena::read_all() {
            let labels = [("interface", a.interface.as_str()), ("allowance", a.allowance)];
            ConstCounter::new(a.value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_exist_before_any_packet() {
        let mut r = Registry::default();
        let _m = LinkLocalMetrics::register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        for line in [
            "credwatch_linklocal_seconds_lost_total 0",
            "credwatch_linklocal_packets_per_second_bucket{le=\"819.2\"} 0",
            "credwatch_linklocal_service_packets_per_second_count{linklocal_service=\"amazon_dns\"} 0",
            "# TYPE credwatch_ena_allowance_exceeded counter",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn a_second_is_one_observation_of_its_total_and_of_each_service() {
        let mut r = Registry::default();
        let m = LinkLocalMetrics::register(&mut r);
        // 819 stays at or under 80 %, 820 does not.
        m.observe_second(&[800, 0, 0, 19, 0, 0]);
        m.observe_second(&[800, 0, 0, 19, 1, 0]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        for line in [
            "credwatch_linklocal_packets_per_second_count 2",
            "credwatch_linklocal_packets_per_second_sum 1639.0",
            "credwatch_linklocal_packets_per_second_bucket{le=\"768.0\"} 0",
            "credwatch_linklocal_packets_per_second_bucket{le=\"819.2\"} 1",
            "credwatch_linklocal_packets_per_second_bucket{le=\"896.0\"} 2",
            "credwatch_linklocal_service_packets_per_second_count{linklocal_service=\"ntp\"} 2",
            "credwatch_linklocal_service_packets_per_second_bucket{le=\"0.0\",linklocal_service=\"ntp\"} 1",
            "credwatch_linklocal_service_packets_per_second_sum{linklocal_service=\"imds\"} 1600.0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
