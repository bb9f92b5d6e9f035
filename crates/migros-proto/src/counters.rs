//! Counters, per device and per QP, as `rdma statistic` shows them.

use serde::{Deserialize, Serialize};

/// Per-QP counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QpCounters {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Request packets sent again (go-back-N after a timeout or NAK).
    pub retransmits: u64,
    /// Retransmission timeouts that fired.
    pub timeouts: u64,
    pub naks_sent: u64,
    pub naks_received: u64,
    pub rnr_naks_sent: u64,
    pub rnr_naks_received: u64,
    /// Duplicate requests seen by the responder.
    pub duplicates: u64,
    /// Requests dropped because they arrived out of sequence.
    pub out_of_sequence: u64,
    /// Packets dropped for another reason (wrong Q_Key, no UD receive posted).
    pub rx_dropped: u64,
    pub pauses: u64,
    pub resumes: u64,
    /// Time this QP spent paused by its partner's migration, in
    /// nanoseconds, summed over the pauses that ended (pause NAK received
    /// to RESUME received): the pause the peer of a migration observes.
    #[serde(default)]
    pub paused_nanos: u64,
    /// The most recent of those pauses, in nanoseconds.
    #[serde(default)]
    pub last_pause_nanos: u64,
}

/// Per-device counters (datagrams that never reached a QP count here).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCounters {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_icrc_errors: u64,
    pub rx_malformed: u64,
    pub rx_unknown_qp: u64,
    pub rx_tombstone: u64,
    pub retransmits: u64,
    /// RESUME-opcode packets refused: malformed, unauthenticated (no or a
    /// wrong connection key), out of the PSN window, in a state that takes
    /// none, or a UD redirect from an address the QP never sent to.
    #[serde(default)]
    pub rx_resume_refused: u64,
    /// The QPs' counters of the same names, summed over every QP the
    /// device had (as the kernel's `send_rnr_err`, `rcvd_rnr_err`,
    /// `duplicate_request`, `out_of_seq_request` are device-wide): they
    /// outlive the QPs that counted them.
    pub naks_sent: u64,
    pub naks_received: u64,
    pub rnr_naks_sent: u64,
    pub rnr_naks_received: u64,
    pub duplicates: u64,
    pub out_of_sequence: u64,
    pub rx_dropped: u64,
    /// Tombstones dropped before they were released: expired (nobody
    /// needed them for `TOMBSTONE_TTL`) or pushed out at `MAX_TOMBSTONES`;
    /// the connection manager's tombstones of migrated connections count
    /// here too (`migros_cm::tombstone`).
    #[serde(default)]
    pub tombstones_dropped: u64,
    /// Accesses into client memory the daemon's watchdog found running
    /// longer than its bound (`--memory-stall-ms`; a FUSE file mapped over
    /// registered memory whose server does not answer), each counted once.
    #[serde(default)]
    pub watchdog_stalls: u64,
    /// FUSE connections the watchdog aborted to end such an access.
    #[serde(default)]
    pub watchdog_aborts: u64,
}
