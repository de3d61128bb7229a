//! `drip status`: ask a server for its buckets and print them as a table,
//! then the cluster it is part of: members, alive, last seen, leader.

use std::io::Write;

use anyhow::{Context, Result, bail};

use crate::model::{BucketList, ClusterStatus, ErrorBody};

/// Options of `drip status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Base URL of the server's HTTP listener.
    #[arg(long, env = "DRIP_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
}

/// Fetches the bucket list from the server at `url`.
pub async fn fetch(url: &str) -> Result<BucketList> {
    let endpoint = format!("{}/v1/buckets", url.trim_end_matches('/'));
    let res = reqwest::get(&endpoint)
        .await
        .with_context(|| format!("could not reach {endpoint}"))?;
    let status = res.status();
    let body = res.bytes().await.context("reading the answer")?;
    if !status.is_success() {
        let why = serde_json::from_slice::<ErrorBody>(&body)
            .map(|e| e.error.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        bail!("{endpoint} answered {status}: {why}");
    }
    serde_json::from_slice(&body)
        .with_context(|| format!("{endpoint} did not answer a bucket list"))
}

/// Fetches the cluster as the server at `url` sees it.
pub async fn fetch_cluster(url: &str) -> Result<ClusterStatus> {
    let endpoint = format!("{}/v1/cluster", url.trim_end_matches('/'));
    let res = reqwest::get(&endpoint)
        .await
        .with_context(|| format!("could not reach {endpoint}"))?;
    if !res.status().is_success() {
        bail!("{endpoint} answered {}", res.status());
    }
    res.json()
        .await
        .with_context(|| format!("{endpoint} did not answer a cluster status"))
}

/// Writes the cluster's members as a table, the leader marked with `*`.
pub fn render_cluster(c: &ClusterStatus, out: &mut impl Write) -> std::io::Result<()> {
    let leader = if c.leader.is_empty() {
        "none"
    } else {
        &c.leader
    };
    let alive = c.nodes.iter().filter(|n| n.alive).count();
    writeln!(
        out,
        "cluster: {} members, {alive} alive, leader {leader} (seen from {})",
        c.nodes.len(),
        c.node_id
    )?;
    let width = c
        .nodes
        .iter()
        .map(|n| n.node_id.len() + 2)
        .max()
        .unwrap_or(0)
        .max("node".len());
    writeln!(
        out,
        "{:<width$}  {:<21}  {:<21}  {:<5}  {:>12}",
        "node", "http", "grpc", "alive", "last_seen_ms"
    )?;
    for n in &c.nodes {
        let id = if n.node_id == c.leader {
            format!("{} *", n.node_id)
        } else {
            n.node_id.clone()
        };
        writeln!(
            out,
            "{:<width$}  {:<21}  {:<21}  {:<5}  {:>12}",
            id,
            n.http,
            n.grpc,
            if n.alive { "yes" } else { "no" },
            n.last_seen_ms
        )?;
    }
    Ok(())
}

/// Writes `list` as a table.
pub fn render(list: &BucketList, out: &mut impl Write) -> std::io::Result<()> {
    if list.buckets.is_empty() {
        return writeln!(out, "no buckets");
    }
    let width = list
        .buckets
        .iter()
        .map(|b| b.bucket_id.len())
        .max()
        .unwrap_or(0)
        .max("bucket".len());
    writeln!(
        out,
        "{:<width$}  {:<6}  {:>10}  {:>12}  {:>10}  {:>8}  {:>10}  {:>10}  {:>10}",
        "bucket",
        "mode",
        "capacity",
        "leak_rate/s",
        "level",
        "queue",
        "allowed",
        "rejected",
        "processed"
    )?;
    for b in &list.buckets {
        writeln!(
            out,
            "{:<width$}  {:<6}  {:>10}  {:>12}  {:>10.2}  {:>8}  {:>10}  {:>10}  {:>10}",
            b.bucket_id,
            b.mode,
            b.capacity,
            b.leak_rate,
            b.level,
            b.queue_size,
            b.allowed_requests,
            b.rejected_requests,
            b.processed_requests
        )?;
    }
    Ok(())
}

/// Runs `drip status`.
pub async fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    let list = fetch(&args.url).await?;
    render(&list, out)?;
    // After the buckets, so the table stays first; a server without
    // /v1/cluster is shown without it.
    if let Ok(cluster) = fetch_cluster(&args.url).await {
        writeln!(out)?;
        render_cluster(&cluster, out)?;
    }
    if let Ok(rls) = crate::rls::status::fetch(&args.url).await
        && rls.enabled
    {
        writeln!(out)?;
        crate::rls::status::render(&rls, out)?;
    }
    Ok(())
}
