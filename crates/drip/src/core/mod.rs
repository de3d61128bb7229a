//! The pure core: rates, limits, policies and the decision. No I/O, no
//! clock, no async: every function takes `now` as an argument.

mod decide;
mod policy;
mod quota;
mod rate;
mod window;
mod word;

pub use decide::{
    Decision, Level, Outcome, Request, State, Verdict, carry_over, decide, decide_tat, is_idle,
    level,
};
pub use policy::{Limit, MAX_CAPACITY, MAX_SPAN_NS, MAX_WINDOWS, Mode, Policy, Window};
pub use quota::Quota;
pub use rate::{MAX_EXACT, MAX_RATE_PER_SEC, MIN_RATE_PER_SEC, NANOS_PER_SEC, Nanos, Rate};
pub use window::WindowLog;
pub(crate) use word::Answer;
pub use word::WordPolicy;
