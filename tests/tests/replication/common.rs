//! Helpers shared by the replication tests.

use fs_client::Client;
use fs_proto::meta::{MetaRequest, MetaResponse};
use fs_proto::{Ino, ReplicaInfo};
use futures::stream::{self, StreamExt, TryStreamExt};
use std::collections::HashMap;

/// A file written by a test.
pub struct Written {
    pub path: String,
    pub ino: Ino,
    pub data: Vec<u8>,
}

/// Size of the i-th test file: mostly small, some larger, one empty.
pub fn size_of(i: usize) -> usize {
    match i % 50 {
        0 => 0,
        7 => 700_000 + i * 13,
        _ => (i * 7919) % 90_000 + 1,
    }
}

/// Write `n` files under `dir` (created), 16 at a time.
pub async fn write_tree(c: &Client, dir: &str, n: usize, size: impl Fn(usize) -> usize) -> Vec<Written> {
    for d in 0..7.min(n) {
        c.mkdir(&format!("{dir}/d{d}"), true, 0o755).await.expect("mkdir");
    }
    stream::iter(0..n)
        .map(|i| {
            let len = size(i);
            async move {
                let path = format!("{dir}/d{}/f{i:04}", i % 7);
                let data = tests::pattern(len, i as u64 + 1);
                let attr = c.put_bytes(&data, &path).await?;
                Ok::<_, fs_client::ClientError>(Written { path, ino: attr.ino, data })
            }
        })
        .buffered(16)
        .try_collect()
        .await
        .expect("write tree")
}

/// Replicas of many files in one round trip per 512.
pub async fn replicas(c: &Client, inos: &[Ino]) -> HashMap<Ino, (u64, Vec<ReplicaInfo>)> {
    let mut out = HashMap::new();
    for chunk in inos.chunks(512) {
        let reqs = chunk.iter().map(|&ino| MetaRequest::Where { ino }).collect();
        let MetaResponse::Batch(replies) = c.meta().call(MetaRequest::Batch(reqs)).await.expect("where batch") else {
            panic!("not a batch answer")
        };
        for (ino, r) in chunk.iter().zip(replies) {
            match r.expect("where") {
                MetaResponse::Replicas { attr, replicas } => out.insert(*ino, (attr.gen, replicas)),
                other => panic!("unexpected {other:?}"),
            };
        }
    }
    out
}

/// Sites holding a live, good replica of the current generation, sorted.
pub fn good_sites(gen: u64, reps: &[ReplicaInfo]) -> Vec<String> {
    let mut s: Vec<String> = reps.iter().filter(|r| r.gen == gen && r.alive).map(|r| r.server.site.clone()).collect();
    s.sort();
    s
}

/// Bytes a host received and sent, as its heartbeats report them.
pub async fn host_bytes(c: &Client, host: &str) -> (u64, u64) {
    let h = c.hosts().await.expect("hosts");
    let h = h.iter().find(|h| h.host == host).expect("known host");
    (h.bytes_in, h.bytes_out)
}
