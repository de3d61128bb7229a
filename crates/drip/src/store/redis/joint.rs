//! Joint decisions on Redis: one script call (`joint.lua`, which wraps
//! `decide.lua`) decides every part and undoes the admitted ones if any
//! part refuses, atomically as every script runs.
//!
//! On Redis Cluster one script's keys must share a hash slot, and each
//! bucket's keys carry their own hash tag (`{b:BUCKET}`): a joint decision
//! there must stay within one bucket, and one spanning buckets is refused
//! with [`Error::Unsupported`] saying so (a single Redis has no such limit).

use std::io::Write;

use redis::Value;

use super::*;
use crate::core::{JointDecision, MAX_EXACT};
use crate::store::{JointPart, check_parts};
use crate::{Error, Result};

/// The joint script: decide.lua as the function `one`, then the driver.
pub(super) fn joint_script() -> String {
    format!("local function one(KEYS, ARGV)\n{DECIDE}\nend\n{JOINT}")
}

const JOINT: &str = include_str!("joint.lua");

impl Inner {
    /// The decide script's argument for one request (as `decide_cmd` packs it).
    fn one_arg(&self, cached: &Cached, part: &JointPart<'_>) -> Vec<u8> {
        let mut arg = Vec::with_capacity(24 + cached.args.len());
        let now = self.now_us();
        let max_wait = part.req.max_wait.map_or(-1.0, |w| w.min(MAX_EXACT) as f64);
        // Writing to a Vec cannot fail.
        let _ = arg.write_all(&now.to_le_bytes());
        let _ = arg.write_all(&cached.args);
        let _ = arg.write_all(&(part.req.cost.min(MAX_EXACT) as f64).to_le_bytes());
        let _ = arg.write_all(&max_wait.to_le_bytes());
        arg
    }
}

impl RedisStore {
    /// [`Store::decide_all`](crate::Store::decide_all) in one script call.
    pub(super) async fn decide_all_now(&self, parts: &[JointPart<'_>]) -> Result<JointDecision> {
        check_parts(parts)?;
        let inner = &self.inner;
        if let (Conn::Cluster(_), Some(first)) = (&inner.conn, parts.first())
            && let Some(other) = parts.iter().find(|p| p.bucket != first.bucket)
        {
            return Err(Error::Unsupported(format!(
                "on Redis Cluster a joint decision must stay within one bucket (one hash slot), \
                 but it spans buckets {:?} and {:?}; use a single Redis for it",
                first.bucket, other.bucket
            )));
        }
        for _ in 0..3 {
            let mut cached = Vec::with_capacity(parts.len());
            for p in parts {
                let entry = inner.bucket(p.bucket).await?;
                cached.push(inner.cached(p.bucket, &entry).await?);
            }
            let mut call = inner.joint.prepare_invoke();
            for (p, c) in parts.iter().zip(&cached) {
                call.key(&c.policy_key)
                    .key(format!("{}{}", c.state_prefix, p.key));
            }
            for (p, c) in parts.iter().zip(&cached) {
                call.arg(inner.one_arg(c, p));
            }
            let advisory: String = parts
                .iter()
                .map(|p| if p.advisory { '1' } else { '0' })
                .collect();
            call.arg(advisory);
            let reply: Value = call
                .invoke_async(&mut inner.conn.clone())
                .await
                .map_err(store_error)?;
            let bad = || bad_reply(&reply);
            let Value::Array(fields) = &reply else {
                return Err(bad());
            };
            match fields.as_slice() {
                [Value::Int(flag), Value::BulkString(bytes)] if bytes.len() == 48 * parts.len() => {
                    let mut decisions = Vec::with_capacity(parts.len());
                    for ((p, c), chunk) in parts.iter().zip(&cached).zip(bytes.chunks_exact(48)) {
                        let item = Item {
                            key: p.key,
                            req: p.req,
                            peek: false,
                            count: false,
                            id: "",
                        };
                        let one = Value::BulkString(chunk.to_vec());
                        match parse_reply(&one, &[item], c.policy.quota())? {
                            Parsed::Replies(r) if r.len() == 1 => decisions.push(r[0].decision()),
                            _ => return Err(bad()),
                        }
                    }
                    return Ok(JointDecision {
                        admitted: *flag == 1,
                        decisions,
                    });
                }
                [Value::BulkString(word), Value::Int(i)] => {
                    let part = usize::try_from(*i - 1)
                        .ok()
                        .and_then(|i| parts.get(i))
                        .ok_or_else(bad)?;
                    match word.as_slice() {
                        b"stale" => inner.forget(part.bucket),
                        b"nobucket" => {
                            inner.forget(part.bucket);
                            return Err(Error::UnknownBucket(part.bucket.to_owned()));
                        }
                        _ => return Err(bad()),
                    }
                }
                _ => return Err(bad()),
            }
        }
        Err(Error::Store(
            "the policies of a joint decision kept changing while deciding".to_owned(),
        ))
    }
}
