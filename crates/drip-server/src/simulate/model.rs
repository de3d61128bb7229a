//! The simulation itself: random packets on a simulated clock, each decided by
//! the core's own [`decide`](drip::core::decide), with the bucket's fill traced
//! exactly between arrivals.

use std::collections::VecDeque;

use drip::Policy;
use drip::core::{self, Nanos, Request, State};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};

/// How packets arrive.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arrivals {
    /// One packet every `interval` ns, the first at t = 0.
    Every(Nanos),
    /// A Poisson process of `rate` packets per second (exponential gaps), the
    /// first at t = 0.
    Poisson(f64),
}

/// What the simulation needs, all checked.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The bucket: capacity and leak rate in bytes, police or shape.
    pub policy: Policy,
    /// Packets sent.
    pub packets: u64,
    /// Smallest packet, bytes.
    pub min_size: u64,
    /// Largest packet, bytes (inclusive).
    pub max_size: u64,
    /// When packets arrive.
    pub arrivals: Arrivals,
    /// Seed of the random generator (ChaCha8): the same seed, the same run.
    pub seed: u64,
}

/// One packet and what the bucket made of it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Packet {
    /// Arrival time, ns since the start.
    pub at: Nanos,
    /// Size in bytes (the request's cost).
    pub size: u64,
    /// Admitted (police: sent now; shape: queued, sent after `wait`).
    pub allowed: bool,
    /// Shape mode: time until it leaves; 0 otherwise.
    pub wait: Nanos,
    /// Bytes in the bucket just before the packet.
    pub level_before: f64,
    /// Bytes in the bucket just after the decision.
    pub level_after: f64,
    /// Shape mode: packets admitted and not yet left, after the decision.
    pub queue_after: u64,
}

/// A whole run: the packets in order and the traced fill level.
#[derive(Clone, Debug)]
pub struct Run {
    /// Every packet, in arrival order.
    pub packets: Vec<Packet>,
    /// The fill level as an exact polyline: (t ns, bytes).
    pub level: Vec<(Nanos, f64)>,
    /// Shape mode: the queue length in packets as a step line (t ns, packets).
    pub queue: Vec<(Nanos, u64)>,
}

impl Run {
    /// Bytes admitted.
    pub fn allowed_bytes(&self) -> u64 {
        self.packets
            .iter()
            .filter(|p| p.allowed)
            .map(|p| p.size)
            .sum()
    }

    /// Bytes denied.
    pub fn denied_bytes(&self) -> u64 {
        self.packets
            .iter()
            .filter(|p| !p.allowed)
            .map(|p| p.size)
            .sum()
    }

    /// When the last packet arrived, ns.
    pub fn end(&self) -> Nanos {
        self.packets.last().map_or(0, |p| p.at)
    }
}

/// The packets of `setup` (arrival time, size), drawn from its seed. Sizes
/// are drawn before gaps for each packet, so a run is reproducible from the
/// seed alone.
pub fn packets(setup: &Setup) -> Vec<(Nanos, u64)> {
    let mut rng = ChaCha8Rng::seed_from_u64(setup.seed);
    let exp = match setup.arrivals {
        Arrivals::Poisson(rate) => Exp::new(rate).ok(),
        Arrivals::Every(_) => None,
    };
    let mut at: Nanos = 0;
    let mut out = Vec::with_capacity(setup.packets as usize);
    for i in 0..setup.packets {
        let size = rng.random_range(setup.min_size..=setup.max_size);
        if i > 0 {
            let gap = match (setup.arrivals, &exp) {
                (Arrivals::Every(d), _) => d,
                (Arrivals::Poisson(_), Some(exp)) => {
                    let secs: f64 = exp.sample(&mut rng);
                    (secs * 1e9).round() as Nanos
                }
                (Arrivals::Poisson(_), None) => 0,
            };
            at = at.saturating_add(gap);
        }
        out.push((at, size));
    }
    out
}

/// Runs the simulation: every packet is one `decide` on one state, as a store
/// would do it.
pub fn simulate(setup: &Setup) -> Run {
    let policy = &setup.policy;
    let bytes_per_ns = policy.limit().rate().per_second_decimal() / 1e9;
    let mut state = State::default();
    let mut departures: VecDeque<Nanos> = VecDeque::new();
    let mut run = Run {
        packets: Vec::new(),
        level: Vec::new(),
        queue: Vec::new(),
    };
    for (at, size) in packets(setup) {
        let before = core::level(policy, &state, at).level;
        // The bucket empties between arrivals: mark where the line meets 0.
        if let Some(&(t0, l0)) = run.level.last()
            && l0 > 0.0
            && before == 0.0
        {
            let empty_at = t0 + (l0 / bytes_per_ns).round() as Nanos;
            if empty_at < at {
                run.level.push((empty_at.max(t0), 0.0));
            }
        }
        let d = core::decide(policy, &mut state, at, Request::check(size));
        let after = core::level(policy, &state, at).level;
        // Shape: a packet is queued until its turn to leave.
        while departures.front().is_some_and(|&t| t <= at) {
            let t = departures.pop_front().unwrap_or(at);
            run.queue.push((t, departures.len() as u64));
        }
        if d.allowed() && policy.mode() == drip::Mode::Shape && d.wait > 0 {
            departures.push_back(at + d.wait);
            run.queue.push((at, departures.len() as u64));
        }
        run.level.push((at, before));
        run.level.push((at, after));
        run.packets.push(Packet {
            at,
            size,
            allowed: d.allowed(),
            wait: d.wait,
            level_before: before,
            level_after: after,
            queue_after: departures.len() as u64,
        });
    }
    // Let the last water drain, so the plot shows the bucket empty again.
    if let Some(&(t0, l0)) = run.level.last()
        && l0 > 0.0
    {
        run.level
            .push((t0 + (l0 / bytes_per_ns).round() as Nanos, 0.0));
    }
    while let Some(t) = departures.pop_front() {
        run.queue.push((t, departures.len() as u64));
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;
    use drip::{Limit, Rate};

    fn setup(mode: drip::Mode, seed: u64) -> Setup {
        Setup {
            policy: Policy::new(
                mode,
                Limit::new(Rate::per_second(100).unwrap(), 200).unwrap(),
            ),
            packets: 40,
            min_size: 10,
            max_size: 100,
            arrivals: Arrivals::Every(100_000_000),
            seed,
        }
    }

    #[test]
    fn same_seed_same_run_other_seed_other_run() {
        let a = simulate(&setup(drip::Mode::Police, 7));
        let b = simulate(&setup(drip::Mode::Police, 7));
        let c = simulate(&setup(drip::Mode::Police, 8));
        assert_eq!(a.packets, b.packets);
        assert_ne!(a.packets, c.packets);
    }

    #[test]
    fn never_over_capacity_and_both_outcomes_happen() {
        let run = simulate(&setup(drip::Mode::Police, 1));
        assert!(run.level.iter().all(|&(_, l)| l <= 200.0 + 1e-9));
        assert!(run.packets.iter().any(|p| p.allowed));
        assert!(run.packets.iter().any(|p| !p.allowed));
        assert_eq!(
            run.allowed_bytes() + run.denied_bytes(),
            run.packets.iter().map(|p| p.size).sum::<u64>()
        );
    }

    #[test]
    fn shape_queue_counts_packets_waiting() {
        let run = simulate(&setup(drip::Mode::Shape, 1));
        assert!(run.packets.iter().any(|p| p.queue_after > 0));
        // After the run every queued packet has left.
        assert_eq!(run.queue.last().map(|q| q.1), Some(0));
    }

    #[test]
    fn poisson_gaps_vary() {
        let mut s = setup(drip::Mode::Police, 3);
        s.arrivals = Arrivals::Poisson(10.0);
        let p = packets(&s);
        let gaps: Vec<_> = p.windows(2).map(|w| w[1].0 - w[0].0).collect();
        assert!(gaps.iter().any(|&g| g != gaps[0]));
        let mean = p.last().unwrap().0 as f64 / gaps.len() as f64 / 1e9;
        assert!((0.05..0.2).contains(&mean), "mean gap {mean} s");
    }
}
