//! The daemon's configuration (what the command line says).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use migros_transport::Mtu;

use crate::fault::FaultSpec;

/// Everything the daemon needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Device name (`<name>.sock`, the ibverbs device name).
    pub name: String,
    /// Address to bind UDP 4791 on; the device's GID.
    pub addr: IpAddr,
    /// Active MTU (and the largest path MTU accepted).
    pub mtu: Mtu,
    /// Directory of the sockets.
    pub socket_dir: PathBuf,
    /// Test-only faults on the transmit path.
    pub fault: Option<FaultSpec>,
    /// How long a paused QP waits for its partner to come back.
    pub pause_timeout: Option<Duration>,
    /// UDP port (4791; other values are for tests that cannot use it).
    pub port: u16,
    /// How long a session paused for a checkpoint stays paused while its
    /// process runs (CRIU died before freezing or after thawing it).
    pub checkpoint_hold: Duration,
    /// What one session and one uid may hold.
    pub quotas: crate::limits::Quotas,
    /// How long one access into client memory may run before the
    /// watchdog acts on it ([`crate::watchdog`]); zero: no watchdog.
    pub memory_stall: Duration,
}

impl Config {
    pub fn new(name: impl Into<String>, addr: IpAddr, socket_dir: impl Into<PathBuf>) -> Config {
        Config {
            name: name.into(),
            addr,
            mtu: Mtu::Mtu1024,
            socket_dir: socket_dir.into(),
            fault: None,
            pause_timeout: None,
            port: migros_wire::ROCE_V2_PORT,
            checkpoint_hold: Duration::from_secs(30),
            quotas: crate::limits::Quotas::default(),
            memory_stall: crate::watchdog::DEFAULT_STALL,
        }
    }
}

/// Parses an MTU given in bytes (256, 512, 1024, 2048 or 4096).
pub fn parse_mtu(s: &str) -> Result<Mtu, String> {
    let bytes: u32 = s
        .parse()
        .map_err(|_| format!("mtu {s:?} is not a number"))?;
    match Mtu::fitting(bytes) {
        Some(m) if m.bytes() == bytes => Ok(m),
        _ => Err(format!(
            "mtu {bytes} is not one of 256, 512, 1024, 2048, 4096"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtus() {
        assert_eq!(parse_mtu("4096"), Ok(Mtu::Mtu4096));
        assert_eq!(parse_mtu("256"), Ok(Mtu::Mtu256));
        assert!(parse_mtu("1500").is_err());
        assert!(parse_mtu("x").is_err());
    }
}
