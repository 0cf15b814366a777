//! The throughput rounds' bookkeeping: each round's rates, the round with
//! the median ratio, and the consumers a round leaves running.

use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::recorder::Recorder;

/// One throughput round's events/s: the baseline's, then ours.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RoundRates {
    pub raw: f64,
    pub opal: f64,
}

impl RoundRates {
    pub fn ratio(&self) -> f64 {
        self.opal / self.raw
    }
}

/// The round with the median ratio, taken out of `rounds`, and every round's
/// rates in order. `rounds` must not be empty.
pub fn median_of<T>(mut rounds: Vec<T>, rates: impl Fn(&T) -> RoundRates) -> (T, Vec<RoundRates>) {
    let all: Vec<RoundRates> = rounds.iter().map(rates).collect();
    let median = rounds.swap_remove(median_round(&all));
    (median, all)
}

/// The index of the round with the median ratio (the upper one of an even count).
fn median_round(rounds: &[RoundRates]) -> usize {
    let mut order: Vec<usize> = (0..rounds.len()).collect();
    order.sort_by(|a, b| rounds[*a].ratio().total_cmp(&rounds[*b].ratio()));
    order[order.len() / 2]
}

/// One round's raw consumer and pipeline (each task with its own
/// cancellation), and their recorders.
pub struct Consumers {
    pub raw: (
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ),
    pub raw_recorder: Arc<Recorder>,
    pub pipeline: (
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<opal_consumers::runtime::RunEnd>>,
    ),
    pub pipe_recorder: Arc<Recorder>,
}

impl Consumers {
    /// Cancels both and waits for them to commit and end.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.raw.0.cancel();
        self.raw.1.await?.context("raw consumer")?;
        self.pipeline.0.cancel();
        self.pipeline.1.await?.context("pipeline")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(raw: f64, opal: f64) -> RoundRates {
        RoundRates { raw, opal }
    }

    #[test]
    fn the_median_round_is_picked_by_ratio_not_by_events_per_second() {
        // Ratios 0.5, 0.9, 0.7: the median is the third round, though the
        // first has the median opal events/s.
        let rounds = [round(100.0, 50.0), round(50.0, 45.0), round(200.0, 140.0)];
        assert_eq!(median_round(&rounds), 2);
    }

    #[test]
    fn the_median_round_is_taken_out_and_every_round_listed_in_order() {
        let rounds = vec![
            (1, round(100.0, 50.0)),
            (2, round(50.0, 45.0)),
            (3, round(200.0, 140.0)),
        ];
        let (picked, all) = median_of(rounds, |(_, rates)| *rates);
        assert_eq!(picked.0, 3);
        let opal: Vec<f64> = all.iter().map(|r| r.opal).collect();
        assert_eq!(opal, [50.0, 45.0, 140.0]);
    }

    #[test]
    fn one_round_is_its_own_median() {
        assert_eq!(median_round(&[round(10.0, 3.0)]), 0);
    }
}
