//! CPU time and memory of a process from Linux `/proc`, sampled at phase
//! boundaries.

use std::fmt;
use std::time::Instant;

/// One reading of a process.
#[derive(Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    /// utime + stime of all threads, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; None if the process
/// is gone or the files cannot be parsed.
pub fn sample(pid: u32) -> Option<Sample> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces;
    // the fields after it start with the state (field 3).
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some(Sample {
        at,
        cpu_ticks: utime + stime,
        rss_kib: kib("VmRSS:")?,
        hwm_kib: kib("VmHWM:")?,
    })
}

/// CPU used between two samples of the same process.
pub struct CpuUse {
    pub seconds: f64,
    /// Of one core, over the wall time between the samples.
    pub percent: f64,
}

impl CpuUse {
    pub fn between(before: &Sample, after: &Sample, clock_ticks: u64) -> CpuUse {
        let seconds = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / clock_ticks as f64;
        let wall = after.at.duration_since(before.at).as_secs_f64();
        CpuUse {
            seconds,
            percent: if wall > 0.0 {
                100.0 * seconds / wall
            } else {
                0.0
            },
        }
    }
}

impl fmt::Display for CpuUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2} s ({:.0}% of a core)", self.seconds, self.percent)
    }
}

/// KiB shown as MiB.
pub struct Mib(pub u64);

impl fmt::Display for Mib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1} MiB", self.0 as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
    }
}
