//! Fault injection for crash tests: with `FERRY_CNI_TEST_PAUSE_AT=<stage>`
//! in its environment, ADD announces `ferry-cni: paused at <stage>` on
//! stderr and sleeps at that point, so a test can SIGKILL it exactly
//! there. Without the variable nothing happens. A pause is all it can do,
//! so leaving it in release builds costs one environment lookup per stage.

use std::time::Duration;

/// The variable that selects the stage.
pub const PAUSE_ENV: &str = "FERRY_CNI_TEST_PAUSE_AT";

/// How long a paused plugin sleeps before carrying on.
const PAUSE: Duration = Duration::from_secs(120);

/// The points ADD can be paused at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The address is reserved and the store lock is still held.
    IpamLocked,
    /// The address is reserved and the lock released; no veth yet.
    IpamReserved,
    /// The veth pair exists; the container side is not configured yet.
    VethCreated,
}

impl Stage {
    /// The name used in [`PAUSE_ENV`].
    pub fn name(self) -> &'static str {
        match self {
            Stage::IpamLocked => "ipam-locked",
            Stage::IpamReserved => "ipam-reserved",
            Stage::VethCreated => "veth-created",
        }
    }
}

/// Pauses here if the environment asks for this stage.
pub fn pause_point(stage: Stage) {
    if std::env::var(PAUSE_ENV).is_ok_and(|wanted| wanted == stage.name()) {
        eprintln!("ferry-cni: paused at {}", stage.name());
        std::thread::sleep(PAUSE);
    }
}
