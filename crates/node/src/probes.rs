//! Probe bookkeeping, as kubelet's prober workers keep it: thresholds of
//! consecutive results flip a probe's result; periods and initial delays
//! decide when the next attempt is due. Pure: the worker runs the attempts.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Probe;

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    /// As in kubelet's messages (`Liveness probe failed: ...`).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// Timing and thresholds of a probe, with Kubernetes' defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(probe: &Probe) -> Timing {
        let secs = |v: Option<i32>, default: u64| {
            Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
        };
        let count = |v: Option<i32>, default: u32| {
            v.and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        Timing {
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// One probe of one running container.
#[derive(Clone, Debug)]
pub struct ProbeState {
    pub kind: Kind,
    pub timing: Timing,
    /// Current result: readiness and startup start unknown (false),
    /// liveness starts successful.
    pub result: bool,
    successes: u32,
    failures: u32,
    next_at: Instant,
}

impl ProbeState {
    /// A probe for a container that started at `started`.
    pub fn new(kind: Kind, timing: Timing, started: Instant) -> ProbeState {
        ProbeState {
            kind,
            timing,
            result: kind == Kind::Liveness,
            successes: 0,
            failures: 0,
            next_at: started + timing.initial_delay,
        }
    }

    /// When the next attempt is due.
    pub fn next_at(&self) -> Instant {
        self.next_at
    }

    /// Whether an attempt is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_at
    }

    /// Records an attempt made at `now`; returns the new result when it
    /// flips.
    pub fn record(&mut self, ok: bool, now: Instant) -> Option<bool> {
        self.next_at = now + self.timing.period;
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.result && self.successes >= self.timing.success_threshold {
                self.result = true;
                return Some(true);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            // Startup and liveness "fail" (restart) once the threshold is
            // reached, even though their initial result differs.
            let flips = match self.kind {
                Kind::Readiness => self.result,
                Kind::Liveness | Kind::Startup => true,
            };
            if flips && self.failures >= self.timing.failure_threshold {
                self.result = false;
                self.failures = 0;
                return Some(false);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(success: u32, failure: u32) -> Timing {
        Timing {
            initial_delay: Duration::from_secs(5),
            period: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn defaults_follow_kubernetes() {
        let t = Timing::of(&Probe::default());
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
        assert_eq!(t.initial_delay, Duration::ZERO);
    }

    #[test]
    fn initial_delay_and_period() {
        let t0 = Instant::now();
        let mut p = ProbeState::new(Kind::Readiness, timing(1, 3), t0);
        assert!(!p.due(t0));
        assert!(p.due(t0 + Duration::from_secs(5)));
        p.record(true, t0 + Duration::from_secs(5));
        assert!(!p.due(t0 + Duration::from_secs(6)));
        assert!(p.due(t0 + Duration::from_secs(7)));
    }

    #[test]
    fn readiness_needs_successes_and_failures_in_a_row() {
        let now = Instant::now();
        let mut p = ProbeState::new(Kind::Readiness, timing(2, 2), now);
        assert!(!p.result);
        assert_eq!(p.record(true, now), None);
        assert_eq!(p.record(false, now), None, "a failure resets the successes");
        assert_eq!(p.record(true, now), None);
        assert_eq!(p.record(true, now), Some(true));
        assert_eq!(p.record(false, now), None);
        assert_eq!(p.record(false, now), Some(false));
        assert_eq!(p.record(false, now), None, "already failed");
    }

    #[test]
    fn liveness_fails_after_the_threshold_every_time() {
        let now = Instant::now();
        let mut p = ProbeState::new(Kind::Liveness, timing(1, 3), now);
        assert!(p.result);
        assert_eq!(p.record(false, now), None);
        assert_eq!(p.record(false, now), None);
        assert_eq!(p.record(false, now), Some(false));
        let mut s = ProbeState::new(Kind::Startup, timing(1, 2), now);
        assert_eq!(s.record(false, now), None);
        assert_eq!(s.record(false, now), Some(false));
        let mut s = ProbeState::new(Kind::Startup, timing(1, 2), now);
        assert_eq!(s.record(true, now), Some(true));
    }
}
