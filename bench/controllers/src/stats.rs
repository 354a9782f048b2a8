//! Latency summaries: percentiles by nearest rank over a sorted sample
//! (the same as bench/apiserver's). Samples are kept whole, so no
//! histogram crate is needed and the figures are exact.

use std::fmt;

/// Latencies in microseconds.
#[derive(Default, Clone)]
pub struct Latencies {
    micros: Vec<u32>,
}

impl Latencies {
    pub fn with_capacity(n: usize) -> Self {
        Latencies {
            micros: Vec::with_capacity(n),
        }
    }

    pub fn record_micros(&mut self, micros: u64) {
        self.micros.push(u32::try_from(micros).unwrap_or(u32::MAX));
    }

    pub fn record(&mut self, d: std::time::Duration) {
        self.record_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn merge(&mut self, other: Latencies) {
        self.micros.extend(other.micros);
    }

    pub fn summary(&self) -> Summary {
        let mut sorted = self.micros.clone();
        sorted.sort_unstable();
        let s = &sorted;
        let rank = |q: f64| -> u32 {
            if s.is_empty() {
                return 0;
            }
            // Nearest rank: the smallest value with at least q of the
            // sample at or below it.
            let r = (q * s.len() as f64).ceil() as usize;
            s[r.clamp(1, s.len()) - 1]
        };
        let mean = if s.is_empty() {
            0.0
        } else {
            s.iter().map(|&v| f64::from(v)).sum::<f64>() / s.len() as f64
        };
        Summary {
            mean_micros: mean,
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: s.last().copied().unwrap_or(0),
        }
    }
}

/// Percentiles of one sample, in microseconds.
#[derive(Clone, Copy)]
pub struct Summary {
    pub mean_micros: f64,
    pub p50: u32,
    pub p90: u32,
    pub p99: u32,
    pub max: u32,
}

/// Microseconds shown as milliseconds with two decimals.
pub struct Millis(pub u32);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2} ms", f64::from(self.0) / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut l = Latencies::default();
        for v in 1..=100 {
            l.record_micros(v);
        }
        let s = l.summary();
        assert_eq!((s.p50, s.p90, s.p99, s.max), (50, 90, 99, 100));
        assert_eq!(Latencies::default().summary().p99, 0);
    }
}
