//! A checkpointed session socket of this process, replaced by hand as the
//! CRIU plugin would (for the CRIU tests and `examples/restore_time.rs`).

use nix::sys::socket::{recv, MsgFlags};

/// This process's descriptor of the socket with inode `inode`.
pub fn fd_of_inode(inode: u64) -> Option<i32> {
    let want = format!("socket:[{inode}]");
    std::fs::read_dir("/proc/self/fd")
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == want))
        .and_then(|e| e.file_name().to_str()?.parse().ok())
}

/// What the restored session replays: what the process had not read yet
/// from its old socket `old` (peeked, left in place), then what the
/// daemon still held (`outbox`).
pub fn unread_then_outbox(old: i32, outbox: &[u8]) -> Vec<u8> {
    let mut replay = vec![0u8; 1 << 20];
    let n = recv(
        old,
        &mut replay,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    )
    .unwrap_or(0);
    replay.truncate(n);
    replay.extend_from_slice(outbox);
    replay
}
