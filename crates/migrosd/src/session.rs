//! A client session: one connection's process and the verbs objects it
//! owns, and where it is in a CRIU migration.

use migros_transport::{OwnerId, Qpn};

/// A client session: a process's set of verbs objects.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: u64,
    /// Token of its connection.
    pub conn: usize,
    pub pid: i32,
    pub owner: OwnerId,
    /// The socket path the client connected to, as it sees it.
    pub path: String,
    /// Inode of the client's end of the session socket.
    pub inode: u64,
    /// QPs this session checkpointed away (tombstones it may forward).
    pub tombstones: Vec<Qpn>,
    pub checkpointed: bool,
    /// Where the session is in a CRIU migration.
    pub hold: Hold,
    /// The watchdog saw the checkpointed process running once.
    pub seen_running: bool,
}

/// A session's part in a CRIU migration (admin requests by pid). While it
/// is not [`Hold::Running`] the daemon writes nothing into the process's
/// memory (completions, consumer indices); while paused or checkpointed
/// it also writes nothing to its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hold {
    #[default]
    Running,
    /// Admin Pause: QPs stopped.
    Paused,
    /// Admin Checkpoint: snapshot taken, objects kept (stopped) until the
    /// connection closes (then tombstones) or the process runs again
    /// (then rolled back).
    Checkpointed,
    /// Recreated by RestoreSession, waiting for the admin Resume.
    Restored,
}

impl Hold {
    /// Whether socket output is held back.
    pub fn holds_output(self) -> bool {
        matches!(self, Hold::Paused | Hold::Checkpointed)
    }
}
