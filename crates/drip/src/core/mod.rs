//! The pure core: rates, limits, policies and the decision. No I/O, no
//! clock, no async: every function takes `now` as an argument.

mod decide;
mod joint;
mod policy;
mod quota;
mod rate;
mod window;
mod word;

pub use decide::{Decision, Level, Outcome, Request, Verdict, carry_over, decide, is_idle, level};
// A key's state, as stores keep it: public for stores and tests outside
// the crate, not part of the documented API.
#[doc(hidden)]
pub use decide::State;
#[doc(hidden)]
pub use window::WindowLog;
// The 64-bit fast path: an implementation detail of the memory store.
#[cfg(test)]
pub(crate) use decide::decide_tat;
pub use joint::{JointDecision, decide_joint, unconsumed};
pub use policy::{
    Limit, MAX_CAPACITY, MAX_COUNTER_RETENTION, MAX_SPAN_NS, MAX_WINDOWS, Mode, Policy, Window,
};
pub use quota::Quota;
pub use rate::{MAX_EXACT, MAX_RATE_PER_SEC, MIN_RATE_PER_SEC, NANOS_PER_SEC, Nanos, Rate};
pub(crate) use word::Answer;
pub(crate) use word::WordPolicy;
