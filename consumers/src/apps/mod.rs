//! The four stream-processing consumers, each a handler on the runtime with its
//! state in Redis under its own key namespace, plus its HTTP read model.

pub mod clock;
pub mod diagnostics;
pub mod feedback;
pub mod forecasts;
pub mod recommendations;
