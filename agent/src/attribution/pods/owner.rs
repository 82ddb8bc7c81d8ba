//! Owner lookups (ReplicaSet → Deployment, Job → CronJob), cached. Only the metadata is fetched
//! (`PartialObjectMetadata`): RBAC needs `get` on replicasets and jobs, and nothing else of those
//! objects is kept. The cache is small and entries expire, so it follows the pods of this node.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::ReplicaSet, batch::v1::Job};
use kube::{Api, Client};

use crate::attribution::pods::meta::{Owner, controller, has_meaningful_parent};

/// A resolved owner is trusted this long (owners of a ReplicaSet or Job never change in
/// practice; expiry only bounds memory).
const TTL: Duration = Duration::from_secs(600);
/// A failed lookup is retried after this long.
const ERROR_TTL: Duration = Duration::from_secs(30);
/// Beyond this many cached owners, expired ones are dropped (and if none are, all of them).
const MAX_ENTRIES: usize = 4096;

#[derive(Debug)]
struct Cached {
    parent: Option<Owner>,
    until: Instant,
}

pub struct Owners {
    client: Client,
    cache: HashMap<(String, Owner), Cached>,
}

impl Owners {
    pub fn new(client: Client) -> Self {
        Self { client, cache: HashMap::new() }
    }

    /// The controller of `owner` (a ReplicaSet's Deployment, a Job's CronJob), or None when it
    /// has none, is not a kind worth looking through, or cannot be read now.
    pub async fn parent(&mut self, namespace: &str, owner: &Owner) -> Option<Owner> {
        if !has_meaningful_parent(&owner.kind) {
            return None;
        }
        let key = (namespace.to_string(), owner.clone());
        let now = Instant::now();
        if let Some(c) = self.cache.get(&key).filter(|c| c.until > now) {
            return c.parent.clone();
        }
        let (parent, ttl) = match self.fetch(namespace, owner).await {
            Ok(parent) => (parent, TTL),
            // Deleted (an orphaned pod): the owner itself names the workload.
            Err(kube::Error::Api(s)) if s.code == 404 => (None, TTL),
            Err(e) => {
                log::warn!(
                    "looking up {} {namespace}/{}: {e} (labelled by the {} itself until it works)",
                    owner.kind,
                    owner.name,
                    owner.kind
                );
                (None, ERROR_TTL)
            }
        };
        if self.cache.len() >= MAX_ENTRIES {
            self.cache.retain(|_, c| c.until > now);
            if self.cache.len() >= MAX_ENTRIES {
                self.cache.clear();
            }
        }
        self.cache.insert(key, Cached { parent: parent.clone(), until: now + ttl });
        parent
    }

    async fn fetch(&self, namespace: &str, owner: &Owner) -> Result<Option<Owner>, kube::Error> {
        let meta = match owner.kind.as_str() {
            "ReplicaSet" => {
                Api::<ReplicaSet>::namespaced(self.client.clone(), namespace)
                    .get_metadata(&owner.name)
                    .await?
                    .metadata
            }
            "Job" => {
                Api::<Job>::namespaced(self.client.clone(), namespace)
                    .get_metadata(&owner.name)
                    .await?
                    .metadata
            }
            _ => return Ok(None),
        };
        Ok(controller(&meta))
    }
}
