//! Decoding `MetadataEvent`s from the ring buffer into what the metrics need.
use agent_common::{
    CredentialSource, EVENT_EXPIRATION, EVENT_NO_RESPONSE, EVENT_RESPONSE, EndpointKind,
    FLAG_IMDSV2_TOKEN, Flow, MetadataEvent, Method, ROLE_MAX, RequestKind, sdk::Sdk,
};

use crate::record::{self, KernelRecord, RecordError};

impl KernelRecord for MetadataEvent {
    const WHAT: &'static str = "metadata event";
}

/// A response to a metadata request, or a credential document's expiration.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub cgroup_id: u64,
    pub endpoint: EndpointKind,
    pub kind: RequestKind,
    pub role: String,
    /// The client's SDK family, from the request's `User-Agent`.
    pub sdk: Sdk,
    /// Monotonic (CLOCK_MONOTONIC) nanoseconds of the event.
    pub ktime_ns: u64,
    pub what: What,
}

#[derive(Debug, Clone, PartialEq)]
pub enum What {
    Response {
        status: u16,
        latency_ns: u64,
        /// A GET to an IMDS path without an IMDSv2 session token header.
        imdsv1: bool,
    },
    /// `YYYYMMDDhhmmss` as the kernel read it from the document.
    Expiration { packed: u64 },
    /// No response status line: the connection ended first, or `--metadata-timeout` passed.
    NoResponse {
        /// A GET to an IMDS path without an IMDSv2 session token header.
        imdsv1: bool,
    },
}

pub fn decode(bytes: &[u8]) -> Result<Observation, RecordError> {
    let ev: MetadataEvent = record::read(bytes)?;
    observation(&ev)
}

/// The no-response observation of a request whose flow userspace found unanswered past the
/// timeout (`now_ns`: monotonic nanoseconds, as the kernel's clock).
pub fn unanswered(flow: &Flow, now_ns: u64) -> Observation {
    let ev = MetadataEvent {
        cgroup_id: flow.cgroup_id,
        latency_ns: now_ns.saturating_sub(flow.request_ns),
        expiration: 0,
        ktime_ns: now_ns,
        event: EVENT_NO_RESPONSE,
        endpoint: flow.endpoint,
        kind: flow.kind,
        method: flow.method,
        source: flow.source,
        flags: flow.flags,
        status: 0,
        role_len: flow.role_len,
        sdk: flow.sdk,
        _pad: [0; 6],
        role: flow.role,
    };
    observation(&ev).expect("a no-response event always decodes")
}

fn observation(ev: &MetadataEvent) -> Result<Observation, RecordError> {
    let kind = RequestKind::from_u8(ev.kind);
    let endpoint = EndpointKind::from_u8(ev.endpoint);
    let what = match ev.event {
        EVENT_RESPONSE => What::Response {
            status: ev.status,
            latency_ns: ev.latency_ns,
            imdsv1: is_imdsv1(ev, kind, endpoint),
        },
        EVENT_EXPIRATION => What::Expiration { packed: ev.expiration },
        EVENT_NO_RESPONSE => What::NoResponse { imdsv1: is_imdsv1(ev, kind, endpoint) },
        other => return Err(RecordError::unknown_type::<MetadataEvent>(other)),
    };
    Ok(Observation {
        cgroup_id: ev.cgroup_id,
        endpoint,
        kind,
        role: role_label(ev),
        sdk: Sdk::from_u8(ev.sdk),
        ktime_ns: ev.ktime_ns,
        what,
    })
}

/// A GET to an IMDS path that carries no `X-aws-ec2-metadata-token` header.
fn is_imdsv1(ev: &MetadataEvent, kind: RequestKind, endpoint: EndpointKind) -> bool {
    let imds_path = match kind {
        RequestKind::Token => false,
        RequestKind::RoleList => true,
        RequestKind::Credentials => {
            CredentialSource::from_u8(ev.source) == CredentialSource::ImdsRole
        }
        RequestKind::Metadata => matches!(endpoint, EndpointKind::Imds | EndpointKind::Custom),
    };
    imds_path && ev.method == Method::Get as u8 && ev.flags & FLAG_IMDSV2_TOKEN == 0
}

/// The `role` label: the IAM role for IMDS, a fixed name where the request does not carry one.
fn role_label(ev: &MetadataEvent) -> String {
    match CredentialSource::from_u8(ev.source) {
        CredentialSource::ImdsRole => {
            let len = (ev.role_len as usize).min(ROLE_MAX);
            // The kernel admits only the IAM role-name alphabet; from_utf8 cannot fail on it,
            // and anything else would be a kernel bug, shown replaced rather than trusted.
            String::from_utf8_lossy(&ev.role[..len]).into_owned()
        }
        CredentialSource::EcsTask => "ecs-task".into(),
        CredentialSource::PodIdentity => "pod-identity".into(),
        CredentialSource::None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(
        event: u8,
        kind: RequestKind,
        method: Method,
        flags: u8,
        source: CredentialSource,
    ) -> Vec<u8> {
        let mut role = [0u8; ROLE_MAX];
        role[..7].copy_from_slice(b"my-role");
        let ev = MetadataEvent {
            cgroup_id: 42,
            latency_ns: 5_000_000,
            expiration: if event == EVENT_EXPIRATION { 20261128101500 } else { 0 },
            ktime_ns: 1,
            event,
            endpoint: EndpointKind::Imds as u8,
            kind: kind as u8,
            method: method as u8,
            source: source as u8,
            flags,
            status: 200,
            role_len: 7,
            sdk: Sdk::JavaV1 as u8,
            _pad: [0; 6],
            role,
        };
        record::bytes_of(&ev)
    }

    #[test]
    fn decodes_a_credentials_response_with_role() {
        let o = decode(&raw(
            EVENT_RESPONSE,
            RequestKind::Credentials,
            Method::Get,
            FLAG_IMDSV2_TOKEN,
            CredentialSource::ImdsRole,
        ))
        .unwrap();
        assert_eq!(o.role, "my-role");
        assert_eq!(o.sdk, Sdk::JavaV1);
        assert_eq!(o.kind, RequestKind::Credentials);
        assert_eq!(o.what, What::Response { status: 200, latency_ns: 5_000_000, imdsv1: false });
    }

    #[test]
    fn imdsv1_is_a_get_without_token_to_an_imds_path() {
        let v1 = |kind, method, flags, source| match decode(&raw(
            EVENT_RESPONSE,
            kind,
            method,
            flags,
            source,
        ))
        .unwrap()
        .what
        {
            What::Response { imdsv1, .. } => imdsv1,
            _ => unreachable!(),
        };
        assert!(v1(RequestKind::RoleList, Method::Get, 0, CredentialSource::None));
        assert!(v1(RequestKind::Credentials, Method::Get, 0, CredentialSource::ImdsRole));
        assert!(!v1(
            RequestKind::Credentials,
            Method::Get,
            FLAG_IMDSV2_TOKEN,
            CredentialSource::ImdsRole
        ));
        assert!(!v1(RequestKind::Token, Method::Put, 0, CredentialSource::None));
        // ECS and Pod Identity are not IMDS
        assert!(!v1(RequestKind::Credentials, Method::Get, 0, CredentialSource::EcsTask));
    }

    #[test]
    fn fixed_role_names_where_the_path_has_none() {
        let o = decode(&raw(
            EVENT_EXPIRATION,
            RequestKind::Credentials,
            Method::Get,
            0,
            CredentialSource::PodIdentity,
        ))
        .unwrap();
        assert_eq!(o.role, "pod-identity");
        assert_eq!(o.what, What::Expiration { packed: 20261128101500 });
    }

    #[test]
    fn no_response_events_and_unanswered_flows() {
        let b = raw(EVENT_NO_RESPONSE, RequestKind::Token, Method::Put, 0, CredentialSource::None);
        let o = decode(&b).unwrap();
        assert_eq!((o.kind, o.what), (RequestKind::Token, What::NoResponse { imdsv1: false }));
        let flow = Flow {
            cgroup_id: 7,
            request_ns: 1_000,
            response_ns: 0,
            expiration: 0,
            request_seq: 0,
            request_next_seq: 0,
            response_next_seq: 0,
            status: 0,
            phase: agent_common::PHASE_REQUEST_SENT,
            endpoint: EndpointKind::Imds as u8,
            kind: RequestKind::RoleList as u8,
            method: Method::Get as u8,
            source: 0,
            flags: 0,
            scan: 0,
            role_len: 0,
            header: 0,
            sdk: Sdk::Botocore as u8,
            role: [0; ROLE_MAX],
        };
        let o = unanswered(&flow, 11_000);
        assert_eq!(o.cgroup_id, 7);
        assert_eq!(o.sdk, Sdk::Botocore);
        assert_eq!((o.kind, o.ktime_ns), (RequestKind::RoleList, 11_000));
        assert_eq!(o.what, What::NoResponse { imdsv1: true });
    }

    #[test]
    fn short_or_unknown_events_are_errors_not_panics() {
        assert!(matches!(decode(&[0u8; 10]), Err(RecordError::Size { got: 10, .. })));
        let mut b = raw(EVENT_RESPONSE, RequestKind::Token, Method::Put, 0, CredentialSource::None);
        b[32] = 99;
        assert_eq!(decode(&b), Err(RecordError::Type { what: "metadata event", kind: 99 }));
    }
}
