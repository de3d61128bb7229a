//! The key cap of `drip serve` and `drip proxy` on the memory store: how
//! many keys (over all buckets) the process holds at most, so a client
//! rotating keys cannot grow it without bound.
//!
//! A new key beyond the cap is refused (HTTP 503 `key_limit`, gRPC
//! `RESOURCE_EXHAUSTED`, metric `drip_keys_refused_total`); keys already
//! held keep deciding exactly as before, and nothing is reset to make room:
//! idle keys (bucket empty, counters' retention passed) are swept every few
//! seconds and free their place. SQLite and Redis keep keys in their own
//! storage and expire them there: the cap is for the memory store.

/// Default cap: 10^6 keys. A counted key held by `drip serve` costs about
/// 150-170 bytes of RSS (BENCHMARKS.md, `scripts/bench-key-flood.sh`), so
/// the default bounds the key state near 170 MB.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// Largest cap accepted (10^9 keys: over 150 GB; beyond any real host).
pub const MAX_MAX_KEYS: usize = 1_000_000_000;

/// The accepted range, as errors state it.
pub fn rule(name: &str) -> String {
    format!("{name} must be an integer in 1..={MAX_MAX_KEYS}")
}

/// Checks a cap given as `name` (the flag or the file's field).
pub fn check(name: &str, n: u64) -> Result<usize, String> {
    usize::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_MAX_KEYS).contains(n))
        .ok_or_else(|| format!("{}, not {n}", rule(name)))
}

/// Parses `--max-keys` (also `DRIP_MAX_KEYS`); `_` separators are allowed
/// (`1_000_000`).
pub fn parse_flag(s: &str) -> Result<usize, String> {
    let n: u64 = s
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{s:?} is not a number of keys: {}", rule("--max-keys")))?;
    check("--max-keys", n)
}

/// The message a refused new key gets (the same over HTTP, gRPC and the
/// proxy).
pub fn refusal(limit: usize) -> String {
    format!(
        "this server holds its limit of {limit} keys (--max-keys): a new key is refused until idle keys are swept; keys already held keep working; try again later"
    )
}

/// The cap in force: the flag's, else the config file's, else the default.
pub fn pick(flag: Option<usize>, file: Option<usize>) -> usize {
    flag.or(file).unwrap_or(DEFAULT_MAX_KEYS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked_and_the_flag_wins() {
        assert_eq!(parse_flag("500_000"), Ok(500_000));
        assert_eq!(parse_flag("1"), Ok(1));
        for bad in ["0", "-1", "many", "1000000001"] {
            let e = parse_flag(bad).unwrap_err();
            assert!(
                e.contains("--max-keys must be an integer in 1..=1000000000"),
                "{e}"
            );
        }
        assert_eq!(pick(Some(3), Some(4)), 3);
        assert_eq!(pick(None, Some(4)), 4);
        assert_eq!(pick(None, None), DEFAULT_MAX_KEYS);
    }
}
