//! A client session: one connection's process, the verbs objects it owns,
//! and where it is in a CRIU migration.

use migros_transport::{OwnerId, Qpn};

use super::{Objects, SessionId};

/// A client session: a process's set of verbs objects.
///
/// Its identity (id, owner) and its objects change only through the
/// [`super::Registry`], which keeps its index of identifiers in step.
#[derive(Debug)]
pub struct Session {
    pub(super) id: SessionId,
    pub(super) owner: OwnerId,
    pub(super) objects: Objects,
    /// Token of its connection.
    pub conn: usize,
    pub pid: i32,
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

impl Session {
    /// A session owning nothing yet, on connection `conn` of process `pid`.
    pub fn new(id: SessionId, owner: OwnerId, conn: usize, pid: i32, hold: Hold) -> Session {
        Session {
            id,
            owner,
            objects: Objects::default(),
            conn,
            pid,
            path: String::new(),
            inode: 0,
            tombstones: Vec::new(),
            checkpointed: false,
            hold,
            seen_running: false,
        }
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The transport owner of its objects (the key of its process memory).
    pub fn owner(&self) -> OwnerId {
        self.owner
    }

    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    /// Whether writes into the process's memory are held back.
    pub fn memory_held(&self) -> bool {
        self.hold != Hold::Running
    }

    pub(super) fn holder(&self) -> Holder {
        Holder {
            session: self.id,
            owner: self.owner,
            hold: self.hold,
        }
    }
}

/// Who holds an object, as the data path needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub session: SessionId,
    pub owner: OwnerId,
    pub hold: Hold,
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
