//! The configuration of envoyproxy/ratelimit, read as it reads it: YAML
//! files of one `domain` each, with nested `descriptors` (`key`, optional
//! `value` with `*` wildcards, `rate_limit {unit, requests_per_unit, name,
//! replaces, unlimited}`, `shadow_mode`), matched as its service matches
//! them (`config_impl.go`): at each level `key_value` first, then wildcard
//! values, then the bare `key`; a limit applies only when the descriptor's
//! last entry reaches it. Each value keeps its own counter, except values
//! matched through a wildcard descriptor with `share_threshold: true`,
//! which share the wildcard's one counter (the service's counter key then
//! has the pattern in place of the value, as envoyproxy/ratelimit's cache
//! key does). `detailed_metric`, `value_to_metric`, `quota_mode` and
//! `metadata` are accepted and ignored (metrics are per rule).
//!
//! Each rule becomes a drip policy ([`rule_policy`]): an exact rolling
//! window of `requests_per_unit` per unit, so no window of one unit ever
//! admits more (fixed windows admit up to twice that across a boundary).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use drip::{Limit, Policy, Rate, Window};
use serde::{Deserialize, Serialize};

/// The largest `requests_per_unit` kept as an exact window: a key's log
/// holds up to that many admissions. Above it the window is approximate
/// ([`APPROX_SLOTS`] slots), admitting at most the limit, possibly less.
pub const EXACT_MAX: u32 = 1024;

/// Slots of an approximate window (its log holds at most this many + 1).
pub const APPROX_SLOTS: u32 = 1024;

/// Prefix of the drip buckets the RLS rules become.
pub const BUCKET_PREFIX: &str = "rls:";

/// A rate limit's unit, as envoyproxy/ratelimit counts it (lowercase,
/// uppercase or capitalized, as envoyproxy/ratelimit accepts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// 1 s.
    #[serde(alias = "SECOND", alias = "Second")]
    Second,
    /// 60 s.
    #[serde(alias = "MINUTE", alias = "Minute")]
    Minute,
    /// 3600 s.
    #[serde(alias = "HOUR", alias = "Hour")]
    Hour,
    /// 86 400 s.
    #[serde(alias = "DAY", alias = "Day")]
    Day,
    /// 7 days.
    #[serde(alias = "WEEK", alias = "Week")]
    Week,
    /// 30 days (as envoyproxy/ratelimit counts a month).
    #[serde(alias = "MONTH", alias = "Month")]
    Month,
    /// 365 days.
    #[serde(alias = "YEAR", alias = "Year")]
    Year,
}

impl Unit {
    /// The unit's length in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
        }
    }

    /// The Envoy enum value (`RateLimitResponse.RateLimit.Unit`).
    pub fn envoy(self) -> i32 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 2,
            Unit::Hour => 3,
            Unit::Day => 4,
            Unit::Month => 5,
            Unit::Year => 6,
            Unit::Week => 7,
        }
    }

    /// From the Envoy enum value (`RateLimitUnit`); `None` for unknown.
    pub fn from_envoy(v: i32) -> Option<Unit> {
        Some(match v {
            1 => Unit::Second,
            2 => Unit::Minute,
            3 => Unit::Hour,
            4 => Unit::Day,
            5 => Unit::Month,
            6 => Unit::Year,
            7 => Unit::Week,
            _ => return None,
        })
    }

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }
}

// ---- The YAML, as written. Every check that can fail is made while
// deserializing, so errors carry the file's line and the field's path.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlRoot {
    domain: NonEmpty,
    #[serde(default)]
    descriptors: Descriptors,
}

#[derive(Deserialize, Default)]
#[serde(try_from = "Vec<YamlDescriptor>")]
struct Descriptors(Vec<YamlDescriptor>);

impl TryFrom<Vec<YamlDescriptor>> for Descriptors {
    type Error = String;
    fn try_from(list: Vec<YamlDescriptor>) -> Result<Self, String> {
        let mut seen = std::collections::HashSet::new();
        for d in &list {
            if !seen.insert(d.final_key()) {
                return Err(format!(
                    "duplicate descriptor '{}' in one list (each key/value once per level)",
                    d.final_key()
                ));
            }
        }
        Ok(Descriptors(list))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlDescriptor {
    key: NonEmpty,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    rate_limit: Option<YamlRateLimit>,
    #[serde(default)]
    descriptors: Descriptors,
    #[serde(default)]
    shadow_mode: bool,
    // Accepted for compatibility, ignored (see the module's documentation).
    #[serde(default)]
    #[allow(dead_code)]
    detailed_metric: bool,
    #[serde(default)]
    #[allow(dead_code)]
    value_to_metric: bool,
    #[serde(default)]
    share_threshold: bool,
    #[serde(default)]
    #[allow(dead_code)]
    quota_mode: bool,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<serde_yaml_ng::Value>,
}

impl YamlDescriptor {
    fn final_key(&self) -> String {
        match self.value.as_deref() {
            Some(v) if !v.is_empty() => format!("{}_{v}", self.key.0),
            _ => self.key.0.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(try_from = "RawRateLimit")]
struct YamlRateLimit {
    limit: Quota,
    name: Option<String>,
    replaces: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    #[serde(default)]
    unit: Option<Unit>,
    #[serde(default)]
    requests_per_unit: Option<u32>,
    #[serde(default)]
    unlimited: bool,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    replaces: Vec<Replace>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Replace {
    name: NonEmpty,
}

impl TryFrom<RawRateLimit> for YamlRateLimit {
    type Error = String;
    fn try_from(r: RawRateLimit) -> Result<Self, String> {
        let limit = match (r.unlimited, r.unit, r.requests_per_unit) {
            (true, None, None) => Quota::Unlimited,
            (true, _, _) => {
                return Err("unlimited: true takes neither unit nor requests_per_unit".to_owned());
            }
            (false, Some(unit), Some(n)) => Quota::Limited { n, unit },
            (false, None, _) => {
                return Err(
                    "unit is required (second, minute, hour, day, week, month or year)".to_owned(),
                );
            }
            (false, _, None) => {
                return Err(
                    "requests_per_unit is required (an integer in 0..=4294967295)".to_owned(),
                );
            }
        };
        let replaces: Vec<String> = r.replaces.into_iter().map(|x| x.name.0).collect();
        if let Some(name) = &r.name
            && replaces.contains(name)
        {
            return Err(format!("replaces must not name the rule itself ({name:?})"));
        }
        Ok(YamlRateLimit {
            limit,
            name: r.name.filter(|n| !n.is_empty()),
            replaces,
        })
    }
}

/// A string that must not be empty.
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct NonEmpty(String);

impl TryFrom<String> for NonEmpty {
    type Error = &'static str;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.is_empty() {
            Err("must not be empty")
        } else {
            Ok(NonEmpty(s))
        }
    }
}

// ---- The loaded configuration.

/// What a rule allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Quota {
    /// `unlimited: true`: always OK, not counted in the store.
    Unlimited,
    /// `requests_per_unit` per `unit` (0: every request is over the limit).
    Limited {
        /// `requests_per_unit`.
        n: u32,
        /// `unit`.
        unit: Unit,
    },
}

/// One `rate_limit` of the configuration.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The rule's full key, as envoyproxy/ratelimit names it in metrics:
    /// `domain.key_value.key...`.
    pub full_key: String,
    /// The domain.
    pub domain: String,
    /// What it allows.
    pub quota: Quota,
    /// `rate_limit.name`.
    pub name: Option<String>,
    /// The names of the rules it replaces.
    pub replaces: Vec<String>,
    /// `shadow_mode`: counted, never enforced.
    pub shadow: bool,
    /// The drip bucket it decides in, and its policy (limited rules with
    /// `requests_per_unit` > 0 only).
    pub bucket: Option<(String, Policy)>,
    /// The file it came from.
    pub file: PathBuf,
}

/// One node of a domain's descriptor tree.
#[derive(Clone, Debug, Default)]
pub struct Node {
    /// Children by `key_value` or bare `key`.
    children: BTreeMap<String, Node>,
    /// The children whose value has `*`: their `key_value` and its parts.
    wildcards: Vec<(String, Vec<String>)>,
    /// The rule at this node (index into [`RlsConfig::rules`]).
    rule: Option<usize>,
    /// `share_threshold` on a wildcard descriptor: every value it matches
    /// counts under its pattern.
    share: bool,
}

/// What a descriptor matched: the rule, and for each of its entries that
/// came through a `share_threshold` wildcard, that wildcard's `key_value`
/// pattern, which stands for the entry's own `key_value` in the counter
/// key (every matching value then shares one counter).
#[derive(Debug)]
pub struct Matched<'a> {
    /// The rule.
    pub rule: &'a Rule,
    /// Per entry, the shared pattern, if any.
    pub shared: Vec<Option<&'a str>>,
}

/// Every loaded domain and rule.
#[derive(Clone, Debug, Default)]
pub struct RlsConfig {
    /// The domains' descriptor trees.
    pub domains: BTreeMap<String, Node>,
    /// Every rule, in load order.
    pub rules: Vec<Rule>,
    /// The files read.
    pub files: Vec<PathBuf>,
}

impl RlsConfig {
    /// Reads every `.yaml`/`.yml` file under `paths` (files, or directories
    /// read one level deep, in name order). Errors name the file, line and
    /// field.
    pub fn load(paths: &[PathBuf]) -> anyhow::Result<RlsConfig> {
        let mut config = RlsConfig::default();
        for file in files_of(paths)? {
            let text = std::fs::read_to_string(&file).with_context(|| {
                format!("{}: cannot read the RLS configuration", file.display())
            })?;
            config.add(&file, &text)?;
        }
        Ok(config)
    }

    /// Adds one file's text.
    pub fn add(&mut self, file: &Path, text: &str) -> anyhow::Result<()> {
        let root: YamlRoot = parse(file, text)?;
        let domain = root.domain.0;
        if self.domains.contains_key(&domain) {
            bail!(
                "{}: domain: duplicate domain {domain:?} (already loaded from another file)",
                file.display()
            );
        }
        let mut node = Node::default();
        self.add_list(file, &domain, &domain, &mut node, root.descriptors.0)?;
        self.domains.insert(domain, node);
        self.files.push(file.to_path_buf());
        Ok(())
    }

    fn add_list(
        &mut self,
        file: &Path,
        domain: &str,
        parent: &str,
        node: &mut Node,
        list: Vec<YamlDescriptor>,
    ) -> anyhow::Result<()> {
        for d in list {
            let key = d.final_key();
            let full_key = format!("{parent}.{key}");
            if d.share_threshold && !key.contains('*') {
                bail!(
                    "{}: {full_key}: share_threshold can only be used with a wildcard value (one with `*`)",
                    file.display()
                );
            }
            let mut child = Node {
                share: d.share_threshold,
                ..Node::default()
            };
            if let Some(rl) = d.rate_limit {
                let bucket = match rl.limit {
                    Quota::Limited { n, unit } if n > 0 => {
                        let policy = rule_policy(n, unit)
                            .with_context(|| format!("{}: {full_key}", file.display()))?;
                        Some((format!("{BUCKET_PREFIX}{full_key}"), policy))
                    }
                    _ => None,
                };
                child.rule = Some(self.rules.len());
                self.rules.push(Rule {
                    full_key: full_key.clone(),
                    domain: domain.to_owned(),
                    quota: rl.limit,
                    name: rl.name,
                    replaces: rl.replaces,
                    shadow: d.shadow_mode,
                    bucket,
                    file: file.to_path_buf(),
                });
            }
            self.add_list(file, domain, &full_key, &mut child, d.descriptors.0)?;
            if key.contains('*') {
                let parts = key.split('*').map(str::to_owned).collect();
                node.wildcards.push((key.clone(), parts));
            }
            node.children.insert(key, child);
        }
        Ok(())
    }

    /// The rule a descriptor (its entries in order) matches in `domain`,
    /// as envoyproxy/ratelimit's `GetLimit` finds it.
    pub fn rule_for(&self, domain: &str, entries: &[(&str, &str)]) -> Option<&Rule> {
        self.matching(domain, entries).map(|m| m.rule)
    }

    /// [`rule_for`](Self::rule_for), with the entries that share a
    /// wildcard's counter.
    pub fn matching(&self, domain: &str, entries: &[(&str, &str)]) -> Option<Matched<'_>> {
        let mut node = self.domains.get(domain)?;
        let mut shared = vec![None; entries.len()];
        let mut found = None;
        for (i, (key, value)) in entries.iter().enumerate() {
            let with_value = format!("{key}_{value}");
            let wildcard = || {
                node.wildcards
                    .iter()
                    .find(|(_, parts)| wildcard_match(parts, &with_value))
                    .and_then(|(k, _)| node.children.get_key_value(k))
            };
            let next = match node.children.get(&with_value) {
                Some(exact) => Some(exact),
                None => match wildcard() {
                    Some((pattern, child)) => {
                        if child.share {
                            shared[i] = Some(pattern.as_str());
                        }
                        Some(child)
                    }
                    None => node.children.get(*key),
                },
            };
            let Some(next) = next else { break };
            if i == entries.len() - 1 {
                found = next.rule;
            }
            if next.children.is_empty() {
                break;
            }
            node = next;
        }
        found.map(|i| Matched {
            rule: &self.rules[i],
            shared,
        })
    }

    /// The buckets every limited rule decides in, with their policies.
    pub fn buckets(&self) -> impl Iterator<Item = (&str, &Policy)> {
        self.rules
            .iter()
            .filter_map(|r| r.bucket.as_ref().map(|(b, p)| (b.as_str(), p)))
    }
}

/// Whether `value` matches a pattern split on `*` (each `*` matches zero
/// or more characters), as envoyproxy/ratelimit's `wildcardMatch`.
fn wildcard_match(parts: &[String], value: &str) -> bool {
    let [first, middle @ .., last] = parts else {
        return parts.first().is_some_and(|p| p == value);
    };
    if !value.starts_with(first.as_str()) || !value.ends_with(last.as_str()) {
        return false;
    }
    if value.len() < parts.iter().map(String::len).sum() {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for part in middle {
        match rest.find(part.as_str()) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// The drip policy of `n` per `unit`: an exact rolling window of `n` per
/// unit (approximate above [`EXACT_MAX`]: it admits at most `n`, possibly
/// less), ANDed with a bucket of capacity `n` that leaks at least `n` per
/// unit, which never refuses what the window admits (its water is what
/// came in during the last unit, at most what the window counts) and only
/// gives the policy the leaky bucket every drip policy has. The bucket's
/// rate is a whole number per millisecond, so it stays exact on Redis.
pub fn rule_policy(n: u32, unit: Unit) -> anyhow::Result<Policy> {
    let period = Duration::from_secs(unit.seconds());
    let n64 = u64::from(n);
    let per_ms = (n64 * 1_000).div_ceil(unit.seconds() * 1_000_000).max(1);
    let rate = Rate::new(per_ms, Duration::from_millis(1))?;
    let window = if n <= EXACT_MAX {
        Window::new(n64, period)?
    } else {
        Window::approximate(n64, period, APPROX_SLOTS)?
    };
    Ok(Policy::police(Limit::new(rate, n64)?).with_window(window)?)
}

/// Parses one file, naming the file, line and field on error.
fn parse<T: serde::de::DeserializeOwned>(file: &Path, text: &str) -> anyhow::Result<T> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = inner
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        let field = if path == "." {
            String::new()
        } else {
            format!(" {path}:")
        };
        // The YAML error's own text ends with its location: keep the message only.
        let message = inner.to_string();
        let mut message = message.split(" at line ").next().unwrap_or(&message);
        // ...and without its own copy of the path (`descriptors[0]: ...`).
        if let Some((head, rest)) = message.split_once(": ")
            && !head.contains(' ')
        {
            message = rest;
        }
        anyhow::anyhow!("{}{at}:{field} {message}", file.display())
    })
}

/// The configuration files under `paths`: each file itself, each
/// directory's `.yaml`/`.yml` files in name order.
pub fn files_of(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p)
            .with_context(|| format!("--rls-config {}: no such file or directory", p.display()))?;
        if meta.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("--rls-config {}: cannot list", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> anyhow::Result<RlsConfig> {
        let mut c = RlsConfig::default();
        c.add(Path::new("t.yaml"), text)?;
        Ok(c)
    }

    #[test]
    fn matching_follows_envoyproxy_ratelimit() {
        let c = load(
            "domain: d\ndescriptors:\n\
             - key: remote_address\n  rate_limit: {unit: second, requests_per_unit: 10}\n\
             - key: remote_address\n  value: 50.0.0.5\n  rate_limit: {unit: second, requests_per_unit: 0}\n\
             - key: path\n  value: /api/*/action\n  rate_limit: {unit: minute, requests_per_unit: 20}\n\
             - key: m\n  value: marketing\n  descriptors:\n  - key: to\n    rate_limit: {unit: day, requests_per_unit: 5}\n",
        )
        .unwrap();
        let key = |e: &[(&str, &str)]| c.rule_for("d", e).map(|r| r.full_key.clone());
        assert_eq!(
            key(&[("remote_address", "1.2.3.4")]).unwrap(),
            "d.remote_address"
        );
        assert_eq!(
            key(&[("remote_address", "50.0.0.5")]).unwrap(),
            "d.remote_address_50.0.0.5"
        );
        assert_eq!(
            key(&[("path", "/api/7/action")]).unwrap(),
            "d.path_/api/*/action"
        );
        assert_eq!(key(&[("path", "/api/7/other")]), None);
        assert_eq!(
            key(&[("m", "marketing"), ("to", "1")]).unwrap(),
            "d.m_marketing.to"
        );
        assert_eq!(
            key(&[("m", "marketing")]),
            None,
            "no limit at the first level"
        );
        assert_eq!(
            key(&[("remote_address", "1"), ("x", "y")]),
            None,
            "deeper than the tree"
        );
        assert_eq!(
            c.rule_for("other", &[("m", "x")]).map(|r| r.domain.clone()),
            None
        );
    }

    #[test]
    fn share_threshold_marks_the_wildcard_entries() {
        let c = load(
            "domain: d\ndescriptors:\n\
             - key: files\n  value: files/*\n  share_threshold: true\n  rate_limit: {unit: minute, requests_per_unit: 2}\n\
             - key: user\n  value: u*\n  rate_limit: {unit: minute, requests_per_unit: 2}\n\
             - key: team\n  value: t*\n  share_threshold: true\n  descriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unit: 2}\n",
        )
        .unwrap();
        let shared = |e: &[(&str, &str)]| c.matching("d", e).map(|m| m.shared);
        assert_eq!(
            shared(&[("files", "files/a.pdf")]),
            Some(vec![Some("files_files/*")])
        );
        assert_eq!(shared(&[("user", "u1")]), Some(vec![None]), "not shared");
        assert_eq!(
            shared(&[("team", "t9"), ("user", "x")]),
            Some(vec![Some("team_t*"), None]),
            "a shared level above the rule"
        );
        let e = load("domain: d\ndescriptors:\n- key: a\n  value: b\n  share_threshold: true\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("d.a_b") && e.contains("share_threshold can only be used with a wildcard"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = load("domain: d\ndescriptors:\n- key: a\n  rate_limit:\n    unit: fortnight\n    requests_per_unit: 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.yaml:5:"), "{e}");
        assert!(e.contains("descriptors[0].rate_limit.unit"), "{e}");
        assert!(e.contains("fortnight"), "{e}");
        let e = load("domain: d\ndescriptors:\n- key: a\n  rate_limit: {unit: second}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.yaml:3:") && e.contains("requests_per_unit is required"),
            "{e}"
        );
        let e = load("domain: d\ndescriptors:\n- key: a\n  colour: red\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.yaml:4:") && e.contains("colour"), "{e}");
        let e = load("domain: ''\n").unwrap_err().to_string();
        assert!(
            e.contains("domain") && e.contains("must not be empty"),
            "{e}"
        );
    }

    #[test]
    fn policies_are_exact_windows_up_to_the_threshold() {
        let p = rule_policy(500, Unit::Second).unwrap();
        assert!(p.windows()[0].is_exact());
        assert_eq!(p.windows()[0].limit(), 500);
        assert_eq!(p.limit().capacity(), 500);
        let p = rule_policy(1_000_000, Unit::Day).unwrap();
        assert!(!p.windows()[0].is_exact());
        assert_eq!(p.max_cost(), 1_000_000);
        assert!(rule_policy(u32::MAX, Unit::Year).is_ok());
    }
}
