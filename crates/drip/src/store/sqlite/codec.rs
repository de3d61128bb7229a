//! How a key's state and a policy are kept in their columns.

use rusqlite::types::ValueRef;

use super::*;
use crate::Result;
use crate::core::{Policy, State, WindowLog};

pub(super) fn decode_policy(bucket: &str, value: ValueRef<'_>) -> Result<Policy, Fail> {
    let text = value
        .as_str()
        .map_err(|e| Fail::Invalid(format!("bucket {bucket:?}: stored policy is not text: {e}")))?;
    Policy::decode(text).map_err(|e| {
        Fail::Invalid(format!(
            "bucket {bucket:?}: stored policy {text:?} cannot be read: {e}"
        ))
    })
}

pub(super) fn decode_state(tat: ValueRef<'_>, windows: ValueRef<'_>) -> Result<State, String> {
    let tat = tat
        .as_blob()
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map(u128::from_le_bytes)
        .ok_or("stored tat is not a 16-byte blob")?;
    let mut rest = windows
        .as_blob()
        .map_err(|_| "stored windows are not a blob")?;
    let mut logs = Vec::new();
    let bad = "stored window log is truncated";
    while !rest.is_empty() {
        let (n, tail) = rest.split_first_chunk::<4>().ok_or(bad)?;
        let n = u32::from_le_bytes(*n) as usize;
        let len = n.checked_mul(16).filter(|&l| l <= tail.len()).ok_or(bad)?;
        let (entries, tail) = tail.split_at(len);
        logs.push(WindowLog::from_entries(entries.chunks_exact(16).map(|e| {
            let (t, c) = e.split_at(8);
            (
                u64::from_le_bytes(t.try_into().unwrap_or_default()),
                u64::from_le_bytes(c.try_into().unwrap_or_default()),
            )
        })));
        rest = tail;
    }
    Ok(State { tat, windows: logs })
}

pub(super) fn encode_windows(logs: &[WindowLog], buf: &mut Vec<u8>) {
    buf.clear();
    for log in logs {
        let n = log.entries().count();
        buf.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
        for (t, c) in log.entries().take(u32::MAX as usize) {
            buf.extend_from_slice(&t.to_le_bytes());
            buf.extend_from_slice(&c.to_le_bytes());
        }
    }
}

pub(super) fn to_i64(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

pub(super) fn to_u64(x: i64) -> u64 {
    u64::try_from(x).unwrap_or(0)
}
