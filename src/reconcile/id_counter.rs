//! Allocation of the sessions' numeric ids (the API's `id`).
//!
//! Ids come from a counter in a ConfigMap, advanced with optimistic concurrency, so they stay
//! unique and are never reused across operator restarts and leader changes. The leader takes
//! a block of ids per write, so a fleet of thousands does not mean thousands of counter writes;
//! ids left in a block when the process stops are skipped, never handed out twice.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use tokio::sync::Mutex;

use crate::k8s::tolerated::{CONFLICT, tolerating};
use crate::reconcile::error::{Error, Result};

const NEXT_KEY: &str = "next";

pub struct IdAllocator {
    api: Api<ConfigMap>,
    name: String,
    block_size: i64,
    block: Mutex<Block>,
}

#[derive(Default)]
struct Block {
    next: i64,
    end: i64,
}

impl IdAllocator {
    pub fn new(api: Api<ConfigMap>, name: impl Into<String>, block_size: i64) -> Self {
        Self {
            api,
            name: name.into(),
            block_size: block_size.max(1),
            block: Mutex::new(Block::default()),
        }
    }

    /// Next id. `floor` is one above the highest id any session already has: it keeps ids
    /// unique even if someone deleted the counter.
    pub async fn allocate(&self, floor: impl FnOnce() -> i64) -> Result<i64> {
        let mut block = self.block.lock().await;
        if block.next >= block.end {
            let start = self.reserve(floor().max(1)).await?;
            *block = Block {
                next: start,
                end: start + self.block_size,
            };
        }
        let id = block.next;
        block.next += 1;
        Ok(id)
    }

    /// Moves the counter past one block and returns the block's first id.
    async fn reserve(&self, floor: i64) -> Result<i64> {
        loop {
            let current = self.api.get_opt(&self.name).await?;
            let counter = match &current {
                Some(cm) => self.parse(cm)?,
                None => 1,
            };
            let start = counter.max(floor);
            let mut cm = current.clone().unwrap_or_else(|| ConfigMap {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    labels: Some(BTreeMap::from([(
                        crate::k8s::names::MANAGED_BY_LABEL.to_string(),
                        crate::k8s::names::MANAGED_BY.to_string(),
                    )])),
                    ..Default::default()
                },
                ..Default::default()
            });
            cm.data
                .get_or_insert_with(BTreeMap::new)
                .insert(NEXT_KEY.into(), (start + self.block_size).to_string());
            let written = match current {
                // resourceVersion in `cm` makes this a compare-and-swap.
                Some(_) => self.api.replace(&self.name, &PostParams::default(), &cm).await,
                None => self.api.create(&PostParams::default(), &cm).await,
            };
            // A conflict: another writer moved the counter first; read it again.
            if tolerating(written, &[CONFLICT])?.is_some() {
                return Ok(start);
            }
        }
    }

    fn parse(&self, cm: &ConfigMap) -> Result<i64> {
        let raw = cm.data.as_ref().and_then(|d| d.get(NEXT_KEY));
        raw.and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| Error::IdCounter {
                name: self.name.clone(),
                message: format!("data.{NEXT_KEY} must be a positive integer, found {raw:?}"),
            })
    }
}
