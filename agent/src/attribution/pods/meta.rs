//! From a Kubernetes Pod object to [`PodMeta`]: container ids → names, and the owner chain that
//! names the workload.
use k8s_openapi::{
    api::core::v1::{ContainerStatus, Pod},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use crate::attribution::pods::cache::PodMeta;

/// An owner reference, reduced to what the workload label needs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

/// The object's managing controller (`controller: true`), or its only owner.
pub fn controller(meta: &ObjectMeta) -> Option<Owner> {
    let refs = meta.owner_references.as_deref().unwrap_or_default();
    let chosen = refs.iter().find(|r| r.controller == Some(true)).or(if refs.len() == 1 {
        refs.first()
    } else {
        None
    })?;
    Some(Owner { kind: chosen.kind.clone(), name: chosen.name.clone() })
}

/// Owner kinds whose own controller names the workload better than they do.
pub fn has_meaningful_parent(kind: &str) -> bool {
    matches!(kind, "ReplicaSet" | "Job")
}

/// `<Kind>/<name>` of what runs the pod: the owner's controller for ReplicaSets (Deployment)
/// and Jobs (CronJob) when there is one, else the owner itself. Bare pods and static pods
/// (owned by their Node) are their own workload.
pub fn workload_label(pod_name: &str, owner: Option<&Owner>, parent: Option<&Owner>) -> String {
    match (owner, parent) {
        (None, _) => format!("Pod/{pod_name}"),
        (Some(o), _) if o.kind == "Node" => format!("Pod/{pod_name}"),
        (Some(o), Some(p)) if has_meaningful_parent(&o.kind) => format!("{}/{}", p.kind, p.name),
        (Some(o), _) => format!("{}/{}", o.kind, o.name),
    }
}

/// `containerd://<id>`, `cri-o://<id>`, `docker://<id>` → `<id>`.
pub fn strip_runtime(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, rest)| rest)
}

/// Every (container id, name) the status mentions: current containers, the previous instance of
/// restarted ones (its cgroup may still be draining), init and ephemeral containers.
fn containers(pod: &Pod) -> Vec<(String, String)> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let all: [&Option<Vec<ContainerStatus>>; 3] = [
        &status.container_statuses,
        &status.init_container_statuses,
        &status.ephemeral_container_statuses,
    ];
    let mut out = Vec::new();
    for statuses in all.into_iter().flatten() {
        for s in statuses {
            let last = s
                .last_state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .and_then(|t| t.container_id.as_deref());
            for id in [s.container_id.as_deref(), last].into_iter().flatten() {
                let id = strip_runtime(id);
                if !id.is_empty() && !out.iter().any(|(known, _)| known == id) {
                    out.push((id.to_string(), s.name.clone()));
                }
            }
        }
    }
    out
}

/// The pod's metadata, with `workload` left for the caller (it may need API lookups). None when
/// the object lacks a UID or name, which a real API server never sends.
pub fn pod_meta(pod: &Pod) -> Option<PodMeta> {
    let m = &pod.metadata;
    Some(PodMeta {
        uid: m.uid.clone()?,
        namespace: m.namespace.clone().unwrap_or_default(),
        name: m.name.clone()?,
        workload: String::new(),
        containers: containers(pod),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(kind: &str, name: &str) -> Owner {
        Owner { kind: kind.into(), name: name.into() }
    }

    #[test]
    fn workload_names_follow_the_owner_chain() {
        let rs = owner("ReplicaSet", "api-7d9f8b6c5d");
        let dep = owner("Deployment", "api");
        let job = owner("Job", "backup-29012345");
        let cron = owner("CronJob", "backup");
        let cases = [
            (None, None, "Pod/p"),
            (Some(&rs), Some(&dep), "Deployment/api"),
            (Some(&rs), None, "ReplicaSet/api-7d9f8b6c5d"),
            (Some(&job), Some(&cron), "CronJob/backup"),
            (Some(&job), None, "Job/backup-29012345"),
            (Some(&owner("DaemonSet", "agent")), None, "DaemonSet/agent"),
            (Some(&owner("StatefulSet", "db")), None, "StatefulSet/db"),
            (Some(&owner("Node", "node-1")), None, "Pod/p"),
            // only ReplicaSets and Jobs are looked through
            (Some(&owner("StatefulSet", "db")), Some(&dep), "StatefulSet/db"),
        ];
        for (o, p, want) in cases {
            assert_eq!(workload_label("p", o, p), want, "{o:?} {p:?}");
        }
    }

    #[test]
    fn runtime_prefixes_are_stripped() {
        for (raw, id) in [
            ("containerd://abc", "abc"),
            ("cri-o://abc", "abc"),
            ("docker://abc", "abc"),
            ("abc", "abc"),
        ] {
            assert_eq!(strip_runtime(raw), id);
        }
    }

    #[test]
    fn pod_objects_as_the_api_serves_them() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "api-7d9f8b6c5d-x2x4k", "namespace": "shop",
                "uid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "resourceVersion": "42",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "1"},
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7d9f8b6c5d",
                     "uid": "2", "controller": true, "blockOwnerDeletion": true}
                ]
            },
            "spec": {"nodeName": "node-1", "containers": [{"name": "app"}, {"name": "sidecar"}]},
            "status": {
                "phase": "Running",
                "initContainerStatuses": [{"name": "init", "containerID": "cri-o://i1",
                    "image": "x", "imageID": "", "ready": true, "restartCount": 0}],
                "containerStatuses": [
                    {"name": "app", "containerID": "containerd://c1", "image": "x", "imageID": "",
                     "ready": true, "restartCount": 1,
                     "lastState": {"terminated": {"containerID": "containerd://c0", "exitCode": 1}}},
                    {"name": "sidecar", "image": "y", "imageID": "", "ready": false,
                     "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}
                ]
            }
        }))
        .unwrap();
        let meta = pod_meta(&pod).unwrap();
        assert_eq!(meta.uid, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
        assert_eq!((meta.namespace.as_str(), meta.name.as_str()), ("shop", "api-7d9f8b6c5d-x2x4k"));
        let names: Vec<(&str, &str)> =
            meta.containers.iter().map(|(i, n)| (i.as_str(), n.as_str())).collect();
        assert_eq!(names, [("c1", "app"), ("c0", "app"), ("i1", "init")]);
        assert_eq!(controller(&pod.metadata), Some(owner("ReplicaSet", "api-7d9f8b6c5d")));
    }
}
