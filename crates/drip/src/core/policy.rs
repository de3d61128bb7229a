//! What a bucket enforces: a mode, one leaky-bucket limit, and optional
//! rolling windows. Every constructor validates; a `Policy` that exists is
//! within range, so the decision code never has to check again.

use std::time::Duration;

use super::quota::Quota;
use super::rate::{MAX_EXACT, Nanos, Rate};
use crate::error::ConfigError;

/// Largest capacity a bucket may have (the server contract's range).
pub const MAX_CAPACITY: u64 = u32::MAX as u64;

/// Longest span a bucket may take to drain from full (`capacity * T`) and
/// longest rolling window: 100 years. Keeps every tick sum far from overflow.
pub const MAX_SPAN_NS: u64 = 100 * 365_250 * 86_400 * 1_000_000;

/// How a bucket treats a request that arrives while it holds water.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Leaky bucket as a meter: a request that fits goes now, one that does
    /// not is rejected with a `retry_after` (token-bucket users' semantics).
    #[default]
    Police,
    /// Leaky bucket as a queue: a request that fits waits its turn
    /// (`wait`, `queue_position`); one that does not is rejected (queue full).
    Shape,
}

impl Mode {
    /// `"police"` or `"shape"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Police => "police",
            Mode::Shape => "shape",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Mode, ConfigError> {
        match s {
            "police" => Ok(Mode::Police),
            "shape" => Ok(Mode::Shape),
            _ => Err(ConfigError::new(
                "mode",
                format!("mode must be \"police\" or \"shape\", not {s:?}"),
            )),
        }
    }
}

/// A leaky bucket: it leaks at `rate` and holds `capacity` units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limit {
    rate: Rate,
    capacity: u64,
}

impl Limit {
    /// A bucket of `capacity` units (also the largest burst) leaking at `rate`.
    pub fn new(rate: Rate, capacity: u64) -> Result<Limit, ConfigError> {
        if !(1..=MAX_CAPACITY).contains(&capacity) {
            return Err(ConfigError::new(
                "capacity",
                format!("capacity must be an integer in 1..={MAX_CAPACITY}"),
            ));
        }
        let span = rate.cost_ticks(capacity) / rate.amount() as u128;
        if span > MAX_SPAN_NS as u128 {
            return Err(ConfigError::new(
                "capacity",
                "capacity / leak_rate (the time a full bucket takes to drain) must be at most 100 years",
            ));
        }
        Ok(Limit { rate, capacity })
    }

    /// The leak rate.
    #[inline]
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Units the bucket holds.
    #[inline]
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

/// An exact rolling limit: at most `limit` units admitted in any window of
/// length `period`.
///
/// Each key keeps a log of (admission time, cost) for the last `period`, so
/// memory per key is bounded by `min(limit, admissions in one period)`
/// entries. [`Window::approximate`] bounds it by a slot count instead, at the
/// price of admitting slightly *less* than the exact limit, never more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    limit: u64,
    period_ns: Nanos,
    granularity_ns: Nanos,
}

impl Window {
    /// At most `limit` units in any window of `period`, exactly.
    pub fn new(limit: u64, period: Duration) -> Result<Window, ConfigError> {
        if !(1..=MAX_EXACT).contains(&limit) {
            return Err(ConfigError::new(
                "limit",
                format!("limit must be an integer in 1..={MAX_EXACT}"),
            ));
        }
        let period_ns = u64::try_from(period.as_nanos())
            .ok()
            .filter(|p| (1..=MAX_SPAN_NS).contains(p))
            .ok_or_else(|| {
                ConfigError::new("period_s", "period_s must be between 1 ns and 100 years")
            })?;
        Ok(Window {
            limit,
            period_ns,
            granularity_ns: 1,
        })
    }

    /// An approximate window for very large limits: an admission less than
    /// `period / slots` after the previous logged one is merged into it and
    /// counted at the later time, so it stays in the window slightly longer
    /// than it should. Memory per key is at most `slots + 1` entries; the
    /// window admits at most the exact limit, and may admit less.
    pub fn approximate(limit: u64, period: Duration, slots: u32) -> Result<Window, ConfigError> {
        let mut w = Window::new(limit, period)?;
        if slots == 0 {
            return Err(ConfigError::new("slots", "slots must be at least 1"));
        }
        w.granularity_ns = w.period_ns.div_ceil(slots as u64);
        Ok(w)
    }

    /// The most units admitted in any window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The window length.
    pub fn period(&self) -> Duration {
        Duration::from_nanos(self.period_ns)
    }

    /// The window length in nanoseconds.
    pub fn period_ns(&self) -> Nanos {
        self.period_ns
    }

    /// How finely admission times are kept: 1 ns for an exact window.
    pub fn granularity_ns(&self) -> Nanos {
        self.granularity_ns
    }

    /// True for an exact window (see [`Window::approximate`]).
    pub fn is_exact(&self) -> bool {
        self.granularity_ns == 1
    }
}

/// Longest counter retention a policy may have: 30 days.
pub const MAX_COUNTER_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// Most rolling windows one policy may have.
pub const MAX_WINDOWS: usize = 8;

/// A named bucket's configuration: its mode, its leaky bucket, and rolling
/// windows ANDed with it. A decision admits only if every limit admits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    mode: Mode,
    limit: Limit,
    windows: Vec<Window>,
    /// How long a key's counters outlive its last request, in ms (0: they
    /// go with the water, as soon as the key is idle).
    counter_retention_ms: u64,
    /// Shape mode: keep the list of queued requests (see
    /// [`Policy::with_track_queue`]).
    track_queue: bool,
    /// What a response needs, computed whenever the limits change (a
    /// function of the fields above, so equality is unchanged).
    quota: Quota,
}

impl Policy {
    /// A policy with one leaky bucket and no windows.
    pub fn new(mode: Mode, limit: Limit) -> Policy {
        let mut p = Policy {
            mode,
            limit,
            windows: Vec::new(),
            counter_retention_ms: 0,
            track_queue: false,
            quota: Quota::default(),
        };
        p.quota = Quota::of(&p);
        p
    }

    /// Police mode: rejects what does not fit now.
    pub fn police(limit: Limit) -> Policy {
        Policy::new(Mode::Police, limit)
    }

    /// Shape mode: queues what fits, rejects what does not.
    pub fn shape(limit: Limit) -> Policy {
        Policy::new(Mode::Shape, limit)
    }

    /// Adds a rolling window (at most [`MAX_WINDOWS`]).
    pub fn with_window(mut self, window: Window) -> Result<Policy, ConfigError> {
        if self.windows.len() >= MAX_WINDOWS {
            return Err(ConfigError::new(
                "windows",
                format!("at most {MAX_WINDOWS} windows per bucket"),
            ));
        }
        // One window per period: a window's log is found by its period when
        // a policy changes, and of two such windows only the tighter matters.
        if let Some(i) = self
            .windows
            .iter()
            .position(|w| w.period_ns == window.period_ns)
        {
            let n = self.windows.len();
            return Err(ConfigError::new(
                format!("windows[{n}].period_s"),
                format!(
                    "windows[{n}].period_s repeats the period of windows[{i}]; give each window its own period"
                ),
            ));
        }
        self.windows.push(window);
        self.quota = Quota::of(&self);
        Ok(self)
    }

    /// Keeps each key's counters (allowed, rejected, processed) for
    /// `retention` after its last request, even once its bucket is empty,
    /// so a drained queue still reports what it processed. Zero (the
    /// default) lets them go with the water. At most
    /// [`MAX_COUNTER_RETENTION`]; whole milliseconds (rounded up).
    pub fn with_counter_retention(mut self, retention: Duration) -> Result<Policy, ConfigError> {
        if retention > MAX_COUNTER_RETENTION {
            return Err(ConfigError::new(
                "counter_retention_s",
                format!(
                    "counter_retention_s must be between 0 and {} seconds",
                    MAX_COUNTER_RETENTION.as_secs()
                ),
            ));
        }
        self.counter_retention_ms = retention.as_nanos().div_ceil(1_000_000) as u64;
        Ok(self)
    }

    /// How long a key's counters outlive its last request.
    #[inline]
    pub fn counter_retention(&self) -> Duration {
        Duration::from_millis(self.counter_retention_ms)
    }

    /// Shape mode: keeps, with each key's state and in the same atomic
    /// step as each decision, the list of requests admitted and not yet
    /// departed (their ids, when they came and when their turn is), for
    /// [`Store::queue`](crate::Store::queue), and lets a cancelled request
    /// give its place back ([`Store::cancel`](crate::Store::cancel)).
    /// Off by default: it costs each decision of the bucket (the memory
    /// store decides such keys under their shard's write lock, SQLite
    /// writes a row, Redis a list entry; BENCHMARKS.md). Ignored in police
    /// mode, where nothing waits.
    pub fn with_track_queue(mut self, track: bool) -> Policy {
        self.track_queue = track;
        self
    }

    /// True when the bucket keeps the list of its queued requests (shape
    /// mode with [`with_track_queue`](Self::with_track_queue)).
    #[inline]
    pub fn tracks_queue(&self) -> bool {
        self.track_queue && self.mode == Mode::Shape
    }

    /// Whether [`with_track_queue`](Self::with_track_queue) was asked (even
    /// in police mode, where it has no effect).
    #[inline]
    pub fn track_queue(&self) -> bool {
        self.track_queue
    }

    /// Builds a policy from the server's terms: `capacity` units leaking at
    /// `leak_rate` units per second, and `(limit, period_s)` windows.
    pub fn from_parts(
        mode: Mode,
        capacity: u64,
        leak_rate: f64,
        windows: &[(u64, f64)],
    ) -> Result<Policy, ConfigError> {
        let limit = Limit::new(Rate::per_second_f64(leak_rate)?, capacity)?;
        let mut policy = Policy::new(mode, limit);
        for (i, &(n, period_s)) in windows.iter().enumerate() {
            let period = Duration::try_from_secs_f64(period_s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    ConfigError::new("period_s", "period_s must be a positive number of seconds")
                        .within(&format!("windows[{i}]"))
                })?;
            let w = Window::new(n, period).map_err(|e| e.within(&format!("windows[{i}]")))?;
            policy = policy.with_window(w)?;
        }
        Ok(policy)
    }

    /// Police or shape.
    #[inline]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The leaky bucket.
    #[inline]
    pub fn limit(&self) -> &Limit {
        &self.limit
    }

    /// The rolling windows.
    #[inline]
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// The summary every decision under this policy carries.
    #[inline]
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// The largest single request this policy can ever admit.
    pub fn max_cost(&self) -> u64 {
        self.windows
            .iter()
            .map(Window::limit)
            .fold(self.limit.capacity, u64::min)
    }
}

/// The compact text form stores keep a policy in (SQLite row, Redis hash):
/// `shape rate=1/100000000 capacity=10 window=1000/3600000000000/1`, with
/// the rate as `amount/period_ns` and each window as
/// `limit/period_ns/granularity_ns`. [`Policy::decode`] reads it back
/// through the same validating constructors.
impl Policy {
    /// The policy as its stored text form.
    pub fn encode(&self) -> String {
        let r = self.limit.rate;
        let mut s = format!(
            "{} rate={}/{} capacity={}",
            self.mode.as_str(),
            r.amount(),
            r.period_ns(),
            self.limit.capacity
        );
        for w in &self.windows {
            s.push_str(&format!(
                " window={}/{}/{}",
                w.limit, w.period_ns, w.granularity_ns
            ));
        }
        if self.counter_retention_ms > 0 {
            s.push_str(&format!(" retention_ms={}", self.counter_retention_ms));
        }
        if self.track_queue {
            s.push_str(" track_queue=1");
        }
        s
    }

    /// Reads a policy written by [`Policy::encode`].
    pub fn decode(text: &str) -> Result<Policy, ConfigError> {
        let bad = || ConfigError::new("policy", format!("policy text {text:?} is not valid"));
        let num = |s: &str| s.parse::<u64>().map_err(|_| bad());
        let mut parts = text.split_whitespace();
        let mode: Mode = parts.next().ok_or_else(bad)?.parse()?;
        let (mut rate, mut capacity, mut windows) = (None, None, Vec::new());
        let mut retention_ms = 0;
        let mut track = false;
        for part in parts {
            let (name, value) = part.split_once('=').ok_or_else(bad)?;
            let nums = value.split('/').map(num).collect::<Result<Vec<_>, _>>()?;
            match (name, nums.as_slice()) {
                ("rate", &[amount, period]) => {
                    rate = Some(Rate::new(amount, Duration::from_nanos(period))?)
                }
                ("capacity", &[c]) => capacity = Some(c),
                ("retention_ms", &[ms]) => retention_ms = ms,
                ("track_queue", &[t @ (0 | 1)]) => track = t == 1,
                ("window", &[limit, period, granularity]) => {
                    let mut w = Window::new(limit, Duration::from_nanos(period))?;
                    if !(1..=period).contains(&granularity) {
                        return Err(bad());
                    }
                    w.granularity_ns = granularity;
                    windows.push(w);
                }
                _ => return Err(bad()),
            }
        }
        let limit = Limit::new(rate.ok_or_else(bad)?, capacity.ok_or_else(bad)?)?;
        windows
            .into_iter()
            .try_fold(Policy::new(mode, limit), Policy::with_window)?
            .with_counter_retention(Duration::from_millis(retention_ms))
            .map(|p| p.with_track_queue(track))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_limits_name_the_field_and_range() {
        let r = Rate::per_second(10).unwrap();
        let e = Limit::new(r, 0).unwrap_err();
        assert_eq!(e.field, "capacity");
        assert!(e.message.contains("1..=4294967295"), "{e}");
        assert!(Limit::new(r, MAX_CAPACITY + 1).is_err());
        let slow = Rate::per_day(1).unwrap();
        assert!(Limit::new(slow, 36_500).is_ok());
        assert_eq!(Limit::new(slow, 40_000).unwrap_err().field, "capacity");
        assert_eq!(
            Window::new(0, Duration::from_secs(1)).unwrap_err().field,
            "limit"
        );
        assert_eq!(
            Window::new(1, Duration::ZERO).unwrap_err().field,
            "period_s"
        );
    }

    #[test]
    fn encode_decode_round_trips() {
        let p = Policy::from_parts(Mode::Shape, 10, 12.5, &[(1000, 3600.0), (5, 0.25)])
            .unwrap()
            .with_window(Window::approximate(1 << 40, Duration::from_secs(86_400), 64).unwrap())
            .unwrap();
        let text = p.encode();
        assert_eq!(
            text,
            "shape rate=1/80000000 capacity=10 window=1000/3600000000000/1 \
             window=5/250000000/1 window=1099511627776/86400000000000/1350000000000"
        );
        assert_eq!(Policy::decode(&text).unwrap(), p);
        let kept = p.with_counter_retention(Duration::from_secs(60)).unwrap();
        assert!(kept.encode().ends_with(" retention_ms=60000"));
        assert_eq!(Policy::decode(&kept.encode()).unwrap(), kept);
        let tracked = kept.with_track_queue(true);
        assert!(
            tracked
                .encode()
                .ends_with(" retention_ms=60000 track_queue=1")
        );
        assert_eq!(Policy::decode(&tracked.encode()).unwrap(), tracked);
        assert!(tracked.tracks_queue());
        for bad in [
            "",
            "queue rate=1/1 capacity=1",
            "police rate=0/1 capacity=1",
            "police capacity=1",
            "police rate=1/1 capacity=1 window=1/1/2",
            "police rate=1/x capacity=1",
            "shape rate=1/1 capacity=1 track_queue=2",
        ] {
            assert!(Policy::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn from_parts_reports_nested_fields() {
        let e = Policy::from_parts(Mode::Police, 10, 5.0, &[(10, 1.0), (0, 3600.0)]).unwrap_err();
        assert_eq!(e.field, "windows[1].limit");
        assert!(
            e.to_string()
                .starts_with("windows[1].limit must be an integer in 1..="),
            "{e}"
        );
        let e = Policy::from_parts(Mode::Police, 10, 5.0, &[(10, 60.0), (20, 60.0)]).unwrap_err();
        assert_eq!(e.field, "windows[1].period_s");
        let e = Policy::from_parts(Mode::Police, 10, 5.0, &[(10, f64::NAN)]).unwrap_err();
        assert_eq!(e.field, "windows[0].period_s");
        let e = Policy::from_parts(Mode::Police, 10, -5.0, &[]).unwrap_err();
        assert_eq!(e.field, "leak_rate");
        let p = Policy::from_parts(Mode::Shape, 10, 5.0, &[(1000, 3600.0)]).unwrap();
        assert_eq!(p.max_cost(), 10);
        assert_eq!(p.windows()[0].period_ns(), 3_600_000_000_000);
    }
}
