//! Rates kept as exact fractions, and the tick arithmetic built on them.
//!
//! A rate of `amount` units per `period_ns` nanoseconds has the emission
//! interval `T = period_ns / amount`. To keep `T` exact, bucket state is kept
//! in *ticks* of `1 / amount` nanoseconds: one unit then costs exactly
//! `period_ns` ticks and a time `t` (ns) is `t * amount` ticks. All tick
//! arithmetic is `u128` and saturating, so no input can overflow or panic.

use std::fmt;
use std::time::Duration;

use crate::error::ConfigError;

/// Time on a store's clock, in nanoseconds.
pub type Nanos = u64;

/// Nanoseconds in one second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Largest integer that doubles (JSON, Lua) hold exactly: 2^53 - 1.
pub const MAX_EXACT: u64 = (1 << 53) - 1;

/// Smallest and largest decimal rates accepted by [`Rate::per_second_f64`].
pub const MIN_RATE_PER_SEC: f64 = 1e-9;
/// See [`MIN_RATE_PER_SEC`].
pub const MAX_RATE_PER_SEC: f64 = 1e15;

/// A rate: `amount` units per `period`, kept as a reduced exact fraction.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    amount: u64,
    period_ns: u64,
}

impl Rate {
    /// `amount` units per `period` (for example 1000 per hour).
    pub fn new(amount: u64, period: Duration) -> Result<Rate, ConfigError> {
        if amount == 0 {
            return Err(ConfigError::new("rate", "rate amount must be at least 1"));
        }
        let period_ns = u64::try_from(period.as_nanos())
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| {
                ConfigError::new("rate", "rate period must be between 1 ns and 584 years")
            })?;
        Ok(Rate::reduced(amount, period_ns))
    }

    /// `n` units per second.
    pub fn per_second(n: u64) -> Result<Rate, ConfigError> {
        Rate::new(n, Duration::from_secs(1))
    }

    /// `n` units per minute.
    pub fn per_minute(n: u64) -> Result<Rate, ConfigError> {
        Rate::new(n, Duration::from_secs(60))
    }

    /// `n` units per hour.
    pub fn per_hour(n: u64) -> Result<Rate, ConfigError> {
        Rate::new(n, Duration::from_secs(3600))
    }

    /// `n` units per day.
    pub fn per_day(n: u64) -> Result<Rate, ConfigError> {
        Rate::new(n, Duration::from_secs(86_400))
    }

    /// A decimal number of units per second such as `0.5` or `12.5`.
    ///
    /// Up to nine decimal places are kept exactly (`12.5` is 1 per 80 ms);
    /// a value with more is rounded to the nearest nano-unit per second.
    pub fn per_second_f64(units_per_second: f64) -> Result<Rate, ConfigError> {
        let x = units_per_second;
        if !x.is_finite() || !(MIN_RATE_PER_SEC..=MAX_RATE_PER_SEC).contains(&x) {
            return Err(ConfigError::new(
                "leak_rate",
                format!(
                    "leak_rate must be a positive number of units per second in \
                     {MIN_RATE_PER_SEC:e}..={MAX_RATE_PER_SEC:e}"
                ),
            ));
        }
        // Find the fewest decimal places that represent x; stop before the
        // scaled value leaves the range where f64 integers are exact.
        let mut best: Option<(u64, u64)> = None;
        let mut scale: u64 = 1;
        for _ in 0..=9 {
            let scaled = x * scale as f64;
            if scaled > MAX_EXACT as f64 {
                break;
            }
            let rounded = scaled.round();
            if rounded >= 1.0 {
                best = Some((rounded as u64, scale));
                if (scaled - rounded).abs() <= 1e-9 * scaled.max(1.0) {
                    break;
                }
            }
            scale *= 10;
        }
        let (amount, scale) = best
            .ok_or_else(|| ConfigError::new("leak_rate", "leak_rate is too small to represent"))?;
        Ok(Rate::reduced(amount, scale * NANOS_PER_SEC))
    }

    fn reduced(amount: u64, period_ns: u64) -> Rate {
        let g = gcd(amount, period_ns);
        Rate {
            amount: amount / g,
            period_ns: period_ns / g,
        }
    }

    /// Units per period, after reduction (1 for 12.5/s, whose period is 80 ms).
    #[inline]
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// The period in nanoseconds, after reduction.
    #[inline]
    pub fn period_ns(&self) -> u64 {
        self.period_ns
    }

    /// Units per second as a decimal (for display; the limiter never uses it).
    pub fn per_second_decimal(&self) -> f64 {
        self.amount as f64 * NANOS_PER_SEC as f64 / self.period_ns as f64
    }

    /// The emission interval `T` (time one unit takes to leak), rounded up to
    /// whole nanoseconds.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.ceil_ns(self.period_ns as u128))
    }

    // ---- tick arithmetic (ticks are 1/amount ns) ----

    /// A time in ns, as ticks.
    #[inline]
    pub(crate) fn ticks(&self, t: Nanos) -> u128 {
        t as u128 * self.amount as u128
    }

    /// The ticks `cost` units take to leak: `cost * T`.
    #[inline]
    pub(crate) fn cost_ticks(&self, cost: u64) -> u128 {
        cost as u128 * self.period_ns as u128
    }

    /// Ticks rounded up to whole nanoseconds (saturating at `u64::MAX`).
    #[inline]
    pub(crate) fn ceil_ns(&self, ticks: u128) -> Nanos {
        u64::try_from(div_ceil(ticks, self.amount)).unwrap_or(u64::MAX)
    }

    /// Units held by `excess` ticks of water: `excess / T`, rounded down.
    #[inline]
    pub(crate) fn floor_units(&self, excess: u128) -> u128 {
        div_floor(excess, self.period_ns)
    }

    /// Units held by `excess` ticks of water, rounded up.
    #[inline]
    pub(crate) fn ceil_units(&self, excess: u128) -> u128 {
        div_ceil(excess, self.period_ns)
    }
}

impl fmt::Debug for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rate({}/{}ns)", self.amount, self.period_ns)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", self.per_second_decimal())
    }
}

// Divisions on the hot path: the values are relative (water, waits) and
// almost always fit in 64 bits, where division is several times cheaper
// than the 128-bit routine.

#[inline]
fn div_floor(x: u128, d: u64) -> u128 {
    // Whole-nanosecond rates have amount 1 (and >= 1e9/s, period 1): no
    // division at all.
    if d == 1 {
        return x;
    }
    match u64::try_from(x) {
        Ok(x) => (x / d) as u128,
        Err(_) => x / d as u128,
    }
}

#[inline]
fn div_ceil(x: u128, d: u64) -> u128 {
    if d == 1 {
        return x;
    }
    match u64::try_from(x) {
        Ok(x) => x.div_ceil(d) as u128,
        Err(_) => x.div_ceil(d as u128),
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `ceil(x * num / den)` without overflow for `x < 2^128`, `num, den < 2^64`,
/// saturating when the result itself does not fit.
pub(crate) fn mul_div_ceil(x: u128, num: u64, den: u64) -> u128 {
    let (num, den) = (num as u128, den as u128);
    let q = (x / den).saturating_mul(num);
    let r = x % den * num; // < den * num < 2^128
    q.saturating_add(r / den + u128::from(r % den != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_rates_are_exact_fractions() {
        let r = Rate::per_second_f64(12.5).unwrap();
        assert_eq!((r.amount(), r.period_ns()), (1, 80_000_000)); // 1 per 80 ms
        let r = Rate::per_second_f64(0.5).unwrap();
        assert_eq!((r.amount(), r.period_ns()), (1, 2 * NANOS_PER_SEC));
        let r = Rate::per_second_f64(10.0).unwrap();
        assert_eq!((r.amount(), r.period_ns()), (1, 100_000_000));
        let r = Rate::per_second_f64(0.001).unwrap();
        assert_eq!((r.amount(), r.period_ns()), (1, 1000 * NANOS_PER_SEC));
    }

    #[test]
    fn gibibyte_per_second_and_one_per_day_stay_exact() {
        let r = Rate::per_second(1 << 30).unwrap();
        // T = 1e9 / 2^30 = 1953125 / 2^21 ns
        assert_eq!((r.amount(), r.period_ns()), (1 << 21, 1_953_125));
        let r = Rate::per_day(1).unwrap();
        assert_eq!((r.amount(), r.period_ns()), (1, 86_400 * NANOS_PER_SEC));
    }

    #[test]
    fn bad_rates_name_the_field() {
        for x in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e16, 1e-12] {
            let e = Rate::per_second_f64(x).unwrap_err();
            assert_eq!(e.field, "leak_rate", "{x}");
        }
        assert!(Rate::per_second(0).is_err());
        assert!(Rate::new(1, Duration::ZERO).is_err());
        assert!(Rate::new(1, Duration::MAX).is_err());
    }

    #[test]
    fn mul_div_ceil_is_exact_and_saturates() {
        assert_eq!(mul_div_ceil(10, 3, 4), 8);
        assert_eq!(mul_div_ceil(12, 3, 4), 9);
        assert_eq!(mul_div_ceil(u128::MAX, u64::MAX, 1), u128::MAX);
        assert_eq!(mul_div_ceil(u128::MAX, 1, 1), u128::MAX);
    }
}
