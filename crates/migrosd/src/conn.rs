//! A connection on one of the daemon's unix sockets: frames in, a write
//! queue out (a slow client never blocks the loop), and what it is for.

use std::io::{self, Read, Write};

use mio::net::UnixStream;
use serde::Serialize;

use migros_proto::frame::{self, FrameError};
use migros_proto::msg::ChannelId;
use migros_proto::FrameReader;

/// Bytes queued for a peer that does not read before it is dropped.
pub const MAX_QUEUED: usize = 64 << 20;
const READ_CHUNK: usize = 64 << 10;

/// What a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// Connected, no Hello or AttachChannel yet.
    New,
    /// A client session (after Hello).
    Session(u64),
    /// A completion channel of a session.
    Channel { session: u64, channel: ChannelId },
    /// An admin connection (peer is root).
    Admin,
    /// A librdmacm connection (after CmHello), owner of its CM objects.
    Cm(u64),
}

/// One unix socket connection.
#[derive(Debug)]
pub struct Conn {
    pub stream: UnixStream,
    pub reader: FrameReader,
    out: Vec<u8>,
    out_pos: usize,
    pub kind: ConnKind,
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    /// The peer's pidfd (`SO_PEERPIDFD`), until a session takes it.
    pub pidfd: Option<std::os::fd::OwnedFd>,
    /// When it was accepted (a new connection must say hello in time).
    pub since: std::time::Instant,
    /// Close once the write queue is empty.
    pub closing: bool,
    /// The peer closed (or failed): drop the connection.
    pub dead: bool,
    /// Nothing is written to the socket (its process is paused for a
    /// checkpoint); output stays queued.
    pub held: bool,
    /// The client's inode of its end of the socket, as it said (CRIU's id
    /// of the socket).
    pub inode: u64,
}

/// Who connected: `SO_PEERCRED` and `SO_PEERPIDFD` at accept.
#[derive(Debug)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    pub pidfd: Option<std::os::fd::OwnedFd>,
}

/// Result of reading what is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadState {
    Open,
    Closed,
}

impl Conn {
    pub fn new(stream: UnixStream, kind: ConnKind, peer: Peer) -> Conn {
        let mut reader = FrameReader::new();
        if peer.uid != 0 {
            // Only root may restore an image, the one first message larger
            // than a session's frames.
            reader.set_limit(crate::limits::SESSION_FRAME_LIMIT);
        }
        Conn {
            stream,
            reader,
            out: Vec::new(),
            out_pos: 0,
            kind,
            pid: peer.pid,
            uid: peer.uid,
            gid: peer.gid,
            pidfd: peer.pidfd,
            since: std::time::Instant::now(),
            closing: false,
            dead: false,
            held: false,
            inode: 0,
        }
    }

    /// Queues one frame.
    pub fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), FrameError> {
        if self.out.len() - self.out_pos > MAX_QUEUED {
            self.dead = true;
            return Err(FrameError::TooLarge(self.out.len()));
        }
        frame::encode(msg, &mut self.out)
    }

    /// Whether bytes wait to be written.
    pub fn has_output(&self) -> bool {
        self.out_pos < self.out.len()
    }

    /// Bytes queued but not yet written.
    pub fn outbox(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// Queues `bytes` verbatim (a restored connection's replay).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Writes what the socket takes; `Ok(true)` when the queue is empty.
    /// A held connection writes nothing.
    pub fn flush(&mut self) -> io::Result<bool> {
        if self.held {
            return Ok(!self.has_output());
        }
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(true)
    }

    /// Reads everything available into the frame reader.
    pub fn fill(&mut self) -> io::Result<ReadState> {
        loop {
            let spare = self.reader.spare(READ_CHUNK);
            let len = spare.len();
            match self.stream.read(spare) {
                Ok(0) => {
                    self.reader.filled(len, 0);
                    return Ok(ReadState::Closed);
                }
                Ok(n) => {
                    self.reader.filled(len, n);
                    if n < len {
                        // Likely drained; the next read would block.
                        continue;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.reader.filled(len, 0);
                    return Ok(ReadState::Open);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.reader.filled(len, 0),
                Err(e) => {
                    self.reader.filled(len, 0);
                    return Err(e);
                }
            }
        }
    }
}
