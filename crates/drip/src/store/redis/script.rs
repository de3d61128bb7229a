//! The decide script's arguments and replies: one call decides a batch of
//! requests of one bucket (see `decide.lua`).

use std::io::Write;
use std::sync::Arc;

use redis::{Cmd, RedisWrite, Value};

use super::*;
use crate::core::{Decision, MAX_EXACT, Mode, Outcome, Policy, Quota, Request};
use crate::error::ConfigError;
use crate::store::Counters;
use crate::{Error, Result};

pub(super) const DECIDE: &str = include_str!("decide.lua");
pub(super) const CONFIGURE: &str = include_str!("configure.lua");
pub(super) const QUEUE: &str = include_str!("queue.lua");

/// One request of a script call.
#[derive(Clone, Copy)]
pub(super) struct Item<'a> {
    pub(super) key: &'a str,
    pub(super) req: Request,
    /// Report the key's state; decide and write nothing.
    pub(super) peek: bool,
    /// The request's id, listed when the bucket tracks its queue.
    pub(super) id: &'a str,
    /// Add `req.cost` refusals to the key's counter (refused on the node
    /// by the deny cache); decide nothing.
    pub(super) count: bool,
}

impl Inner {
    /// The `EVALSHA` deciding `items`, built in one buffer.
    pub(super) fn decide_cmd(&self, cached: &Cached, items: &[Item<'_>]) -> Cmd {
        let keys_len: usize = items
            .iter()
            .map(|i| cached.state_prefix.len() + i.key.len())
            .sum();
        let track = cached.policy.tracks_queue();
        let lists = if track { items.len() } else { 0 };
        let mut cmd = Cmd::with_capacity(
            7 + items.len() + 2 * lists,
            96 + cached.policy_key.len() + cached.args.len() + keys_len + 16 * items.len(),
        );
        cmd.arg("EVALSHA")
            .arg(self.decide.get_hash())
            .arg(1 + items.len() + lists)
            .arg(&cached.policy_key);
        for item in items {
            let mut key = cmd.writer_for_next_arg();
            // Writing to a Cmd's buffer cannot fail.
            let _ = key.write_all(cached.state_prefix.as_bytes());
            let _ = key.write_all(item.key.as_bytes());
        }
        // A tracked bucket's queue lists, beside the state keys (same tag).
        for item in items.iter().take(lists) {
            let mut key = cmd.writer_for_next_arg();
            let _ = key.write_all(cached.queue_prefix.as_bytes());
            let _ = key.write_all(item.key.as_bytes());
        }
        {
            // One argument: now, the version and policy, the requests.
            let mut reqs = cmd.writer_for_next_arg();
            let _ = reqs.write_all(&self.now_us().to_le_bytes());
            let _ = reqs.write_all(&cached.args);
            for item in items {
                let max_wait = match (item.peek, item.count, item.req.max_wait) {
                    (true, _, _) => -2.0,
                    (_, true, _) => -3.0,
                    (false, false, None) => -1.0,
                    (false, false, Some(w)) => w.min(MAX_EXACT) as f64,
                };
                let _ = reqs.write_all(&(item.req.cost.min(MAX_EXACT) as f64).to_le_bytes());
                let _ = reqs.write_all(&max_wait.to_le_bytes());
            }
        }
        for item in items.iter().take(lists) {
            cmd.arg(item.id);
        }
        cmd
    }

    /// Decides `items` of `bucket` in one script call (reloading the policy
    /// when it changed): their answers in order, and the policy used.
    pub(super) async fn run(
        &self,
        name: &str,
        bucket: &Bucket,
        items: &[Item<'_>],
    ) -> Result<(Vec<Reply>, Arc<Cached>)> {
        for _ in 0..3 {
            let cached = self.cached(name, bucket).await?;
            let cmd = self.decide_cmd(&cached, items);
            let sent = self.local_now();
            let reply = self.eval_decide(&cmd).await?;
            let parsed = parse_reply(&reply, items, cached.policy.quota())?;
            if let Parsed::Replies(r) = parsed {
                self.remember_refusals(name, bucket, items, &r, sent, &cached);
                return Ok((r, cached));
            }
            {
                // Unless another call has read the policy again since.
                let mut state = bucket.state.lock();
                if state
                    .cached
                    .as_ref()
                    .is_some_and(|c| Arc::ptr_eq(c, &cached))
                {
                    state.cached = None;
                }
            }
            if let Parsed::NoBucket = parsed {
                return Err(Error::UnknownBucket(name.to_owned()));
            }
        }
        Err(Error::Store(format!(
            "the policy of bucket {name:?} kept changing while deciding"
        )))
    }
}

/// What the decide script reads after `now`: the version, then the policy:
/// mode (0 police, 1 shape), a, p, capacity, window count, counter
/// retention in ms, then per window
/// limit, period_ns and granularity_ns, then track (1: list the queue), as little-endian doubles (exact:
/// versions count configurations, and `configure` refuses what would pass
/// 2^53).
pub(super) fn script_args(policy: &Policy, version: u64) -> Vec<u8> {
    let rate = policy.limit().rate();
    let mode = match policy.mode() {
        Mode::Police => 0,
        Mode::Shape => 1,
    };
    let mut numbers = vec![
        version,
        mode,
        rate.amount(),
        rate.period_ns(),
        policy.limit().capacity(),
        policy.windows().len() as u64,
        policy.counter_retention().as_millis() as u64,
    ];
    for w in policy.windows() {
        numbers.extend([w.limit(), w.period_ns(), w.granularity_ns()]);
    }
    numbers.push(u64::from(policy.tracks_queue()));
    numbers
        .into_iter()
        .flat_map(|n| (n as f64).to_le_bytes())
        .collect()
}

/// Refuses policies whose numbers would not stay exact in the script.
pub(super) fn check_exact(policy: &Policy) -> Result<(), ConfigError> {
    let rate = policy.limit().rate();
    let full = rate.period_ns() as u128 * policy.limit().capacity() as u128;
    if rate.amount() > MAX_EXACT || full > MAX_EXACT as u128 {
        return Err(ConfigError::new(
            "capacity",
            format!(
                "capacity × emission interval is too fine or too large for the Redis store: \
                 capacity × period_ns / amount must fit 2^53 ticks (here {} × {} ns / {})",
                policy.limit().capacity(),
                rate.period_ns(),
                rate.amount()
            ),
        ));
    }
    // A window's times (ns) scaled to ticks (`ready * a` in the script)
    // must stay below 2^53: periods up to 2^53 / 1000 ns (2.5 h) at any
    // rate, and longer ones (up to 104 days) while period × amount fits.
    let fits = |w: &crate::core::Window| {
        w.period_ns() <= MAX_EXACT / 1000
            || u128::from(w.period_ns()) * u128::from(rate.amount()) <= u128::from(MAX_EXACT)
    };
    if let Some(i) = policy.windows().iter().position(|w| !fits(w)) {
        return Err(ConfigError::new(
            format!("windows[{i}].period_s"),
            format!(
                "windows[{i}].period_s must be at most 9007 s on the Redis store, or up to \
                 9007199 s (104 days) when period_ns × the rate's amount ({}) stays below 2^53",
                rate.amount()
            ),
        ));
    }
    Ok(())
}

/// One answer of the decide script.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) outcome: Outcome,
    pub(super) wait: u64,
    pub(super) queue_position: u64,
    pub(super) remaining: u64,
    pub(super) retry_after: u64,
    pub(super) reset_after: u64,
    /// The policy's, as every decision carries it.
    pub(super) quota: Quota,
    /// Only for a peek.
    pub(super) water_ticks: u64,
    /// Only for a peek.
    pub(super) counters: Counters,
}

impl Reply {
    pub(super) fn decision(&self) -> Decision {
        Decision {
            outcome: self.outcome,
            wait: self.wait,
            queue_position: self.queue_position,
            remaining: self.remaining,
            retry_after: self.retry_after,
            reset_after: self.reset_after,
            quota: self.quota,
        }
    }
}

pub(super) enum Parsed {
    Replies(Vec<Reply>),
    Stale,
    NoBucket,
}

pub(super) fn bad_reply(reply: &Value) -> Error {
    Error::Store(format!(
        "unexpected reply from the decide script: {reply:?}"
    ))
}

/// The script's answer to `items`: six little-endian doubles per request
/// (nine for a peek), or a status word.
/// `quota` is that of the policy the call was made with, which the script
/// checked (by its version) is the stored one.
pub(super) fn parse_reply(reply: &Value, items: &[Item<'_>], quota: Quota) -> Result<Parsed> {
    let bad = || bad_reply(reply);
    let bytes = match reply {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => {
            return match s.as_str() {
                "stale" => Ok(Parsed::Stale),
                "nobucket" => Ok(Parsed::NoBucket),
                _ => Err(bad()),
            };
        }
        _ => return Err(bad()),
    };
    let want = 8 * (6 * items.len() + 3 * items.iter().filter(|i| i.peek).count());
    if bytes.len() != want {
        return Err(bad());
    }
    let mut n = bytes.chunks_exact(8).map(|c| {
        let x = f64::from_le_bytes(c.try_into().expect("8 bytes"));
        // Whole numbers in 0..2^64 only (the script works below 2^53).
        if x >= 0.0 && x.fract() == 0.0 && x < 18_446_744_073_709_551_616.0 {
            Ok(x as u64)
        } else {
            Err(bad())
        }
    });
    let mut next = || n.next().unwrap_or_else(|| Err(bad()));
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let outcome = match next()? {
            1 => Outcome::Allowed,
            2 => Outcome::Limited,
            3 => Outcome::Exceeds,
            _ => return Err(bad()),
        };
        let mut r = Reply {
            outcome,
            wait: next()?,
            queue_position: next()?,
            remaining: next()?,
            retry_after: next()?,
            reset_after: next()?,
            quota,
            water_ticks: 0,
            counters: Counters::default(),
        };
        if item.peek {
            r.water_ticks = next()?;
            r.counters = Counters {
                allowed: next()?,
                rejected: next()?,
            };
        }
        out.push(r);
    }
    Ok(Parsed::Replies(out))
}
