//! The plugin's files in CRIU's image directory.
//!
//! - `migros-session-<session hex>.img`: a daemon's [`SessionImage`] of one
//!   session (its objects, the bytes queued for its sockets).
//! - `migros-cm-<owner hex>.img`: a daemon's [`CmImage`] of one librdmacm
//!   connection (its connection-manager state, the bytes queued for it).
//! - `migros-sk-<inode>.img`: a [`SocketFile`], one per claimed socket
//!   (the session connection, a completion channel connection or a
//!   librdmacm connection).
//!
//! Each file is a 20-byte header, then a postcard body: an 8-byte magic
//! naming the kind of file, the format version (u32 LE), the body length
//! (u32 LE) and its CRC-32 (u32 LE). Reading checks all four, so a
//! truncated, corrupt or foreign file is a clear error, never a panic.

use std::ffi::{c_int, CString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;

use migros_proto::admin::{CmImage, SessionImage};
use migros_proto::msg::ChannelId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Version of the files written here; others are refused.
pub const FORMAT_VERSION: u32 = 1;
const SESSION_MAGIC: [u8; 8] = *b"MIGRSESS";
const SOCKET_MAGIC: [u8; 8] = *b"MIGRSOCK";
const CM_MAGIC: [u8; 8] = *b"MIGRCMST";
const HEADER: usize = 20;

/// Which connection of a session a claimed socket was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SocketKind {
    Session,
    Channel(ChannelId),
    /// A librdmacm connection (`session` is its CM owner id).
    Cm,
}

/// What the plugin records of one claimed socket at dump, and needs to
/// reopen it at restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketFile {
    pub kind: SocketKind,
    pub session: u64,
    pub device: String,
    /// The daemon socket the process had connected to, as it saw it.
    pub path: String,
    /// `fcntl(F_GETFL)`: O_NONBLOCK and friends.
    pub status_flags: i32,
    /// `fcntl(F_GETFD)`: FD_CLOEXEC.
    pub fd_flags: i32,
    /// What the process had not read yet: the socket's receive queue, then
    /// what the daemon still held for it.
    pub replay: Vec<u8>,
}

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("{0}: not a migros image (bad magic)")]
    Magic(String),
    #[error("{file}: format version {found}, this plugin reads version {FORMAT_VERSION}")]
    Version { file: String, found: u32 },
    #[error("{file}: truncated ({len} bytes, the header says {want})")]
    Truncated {
        file: String,
        len: usize,
        want: usize,
    },
    #[error("{0}: checksum mismatch (corrupt image)")]
    Checksum(String),
    #[error("{file}: malformed body: {err}")]
    Malformed { file: String, err: postcard::Error },
    #[error("{file}: {err}")]
    Io { file: String, err: std::io::Error },
}

/// The file name of session `session`'s image.
pub fn session_file_name(session: u64) -> String {
    format!("migros-session-{session:016x}.img")
}

/// The file name of librdmacm connection `owner`'s image.
pub fn cm_file_name(owner: u64) -> String {
    format!("migros-cm-{owner:016x}.img")
}

pub fn encode_cm(image: &CmImage) -> Vec<u8> {
    encode(CM_MAGIC, image)
}

pub fn decode_cm(file: &str, bytes: &[u8]) -> Result<CmImage, ImageError> {
    decode(CM_MAGIC, file, bytes)
}

/// The file name of the socket with inode `inode`.
pub fn socket_file_name(inode: u64) -> String {
    format!("migros-sk-{inode}.img")
}

pub fn encode_session(image: &SessionImage) -> Vec<u8> {
    encode(SESSION_MAGIC, image)
}

pub fn decode_session(file: &str, bytes: &[u8]) -> Result<SessionImage, ImageError> {
    decode(SESSION_MAGIC, file, bytes)
}

pub fn encode_socket(sk: &SocketFile) -> Vec<u8> {
    encode(SOCKET_MAGIC, sk)
}

pub fn decode_socket(file: &str, bytes: &[u8]) -> Result<SocketFile, ImageError> {
    decode(SOCKET_MAGIC, file, bytes)
}

fn encode<T: Serialize>(magic: [u8; 8], value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&magic);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    // Serializing plain structs of integers, strings and byte vectors into
    // a Vec cannot fail.
    let mut out = postcard::to_extend(value, out).expect("postcard into a Vec");
    let len = (out.len() - HEADER) as u32;
    let crc = crc32fast::hash(&out[HEADER..]);
    out[12..16].copy_from_slice(&len.to_le_bytes());
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode<T: DeserializeOwned>(magic: [u8; 8], file: &str, bytes: &[u8]) -> Result<T, ImageError> {
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if bytes.len() < 8 || bytes[..8] != magic {
        return Err(ImageError::Magic(file.to_owned()));
    }
    if bytes.len() < HEADER {
        return Err(ImageError::Truncated {
            file: file.to_owned(),
            len: bytes.len(),
            want: HEADER,
        });
    }
    let version = u32_at(8);
    if version != FORMAT_VERSION {
        return Err(ImageError::Version {
            file: file.to_owned(),
            found: version,
        });
    }
    let want = HEADER + u32_at(12) as usize;
    if bytes.len() != want {
        return Err(ImageError::Truncated {
            file: file.to_owned(),
            len: bytes.len(),
            want,
        });
    }
    if crc32fast::hash(&bytes[HEADER..]) != u32_at(16) {
        return Err(ImageError::Checksum(file.to_owned()));
    }
    postcard::from_bytes(&bytes[HEADER..]).map_err(|err| ImageError::Malformed {
        file: file.to_owned(),
        err,
    })
}

/// Writes `bytes` as file `name` of directory `dir` (replacing it).
pub fn write_at(dir: c_int, name: &str, bytes: &[u8]) -> Result<(), ImageError> {
    let io = |err| ImageError::Io {
        file: name.to_owned(),
        err,
    };
    let mut f = open_at(dir, name, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC).map_err(io)?;
    f.write_all(bytes).map_err(io)
}

/// Reads file `name` of directory `dir`; `None` if there is none.
pub fn read_at(dir: c_int, name: &str) -> Result<Option<Vec<u8>>, ImageError> {
    let io = |err| ImageError::Io {
        file: name.to_owned(),
        err,
    };
    let mut f = match open_at(dir, name, libc::O_RDONLY) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(io)?;
    Ok(Some(bytes))
}

fn open_at(dir: c_int, name: &str, flags: c_int) -> std::io::Result<File> {
    let cname = CString::new(name).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: openat with a valid C string; the result is checked.
    let fd = unsafe { libc::openat(dir, cname.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use migros_proto::admin::ChannelImage;

    fn session() -> SessionImage {
        SessionImage {
            session: 0xfeed_beef,
            device: "rxe0".into(),
            path: "/run/migros/rxe0.sock".into(),
            inode: 4242,
            channels: vec![ChannelImage {
                channel: 3,
                inode: 4343,
                outbox: vec![1, 2, 3],
            }],
            objects: vec![7; 1000],
            outbox: vec![9; 10],
            qpns: vec![0x11, 0x12],
        }
    }

    fn socket() -> SocketFile {
        SocketFile {
            kind: SocketKind::Channel(3),
            session: 0xfeed_beef,
            device: "rxe0".into(),
            path: "/run/migros/rxe0.sock".into(),
            status_flags: libc::O_RDWR | libc::O_NONBLOCK,
            fd_flags: libc::FD_CLOEXEC,
            replay: vec![5; 77],
        }
    }

    #[test]
    fn round_trips() {
        let s = session();
        assert_eq!(decode_session("f", &encode_session(&s)).unwrap(), s);
        let k = socket();
        assert_eq!(decode_socket("f", &encode_socket(&k)).unwrap(), k);
        assert_eq!(
            session_file_name(0xab),
            "migros-session-00000000000000ab.img"
        );
        assert_eq!(socket_file_name(12), "migros-sk-12.img");
    }

    #[test]
    fn every_corruption_is_an_error() {
        let good = encode_socket(&socket());
        // Every single-bit flip and every truncation is refused.
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                assert!(decode_socket("f", &bad).is_err(), "flip at {i}.{bit}");
            }
        }
        for len in 0..good.len() {
            assert!(decode_socket("f", &good[..len]).is_err(), "cut at {len}");
        }
        // The other kind of file is refused by its magic.
        let err = decode_session("x.img", &good).unwrap_err();
        assert_eq!(err.to_string(), "x.img: not a migros image (bad magic)");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let mut bad = encode_session(&session());
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(
            decode_session("s.img", &bad).unwrap_err().to_string(),
            "s.img: checksum mismatch (corrupt image)"
        );
        let mut v2 = encode_session(&session());
        v2[8] = 2;
        assert_eq!(
            decode_session("s.img", &v2).unwrap_err().to_string(),
            "s.img: format version 2, this plugin reads version 1"
        );
    }

    #[test]
    fn files_in_a_directory_fd() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let d = File::open(dir.path()).unwrap();
        assert!(read_at(d.as_raw_fd(), "none.img").unwrap().is_none());
        write_at(d.as_raw_fd(), "a.img", b"first, longer").unwrap();
        write_at(d.as_raw_fd(), "a.img", b"second").unwrap();
        assert_eq!(read_at(d.as_raw_fd(), "a.img").unwrap().unwrap(), b"second");
    }

    proptest::proptest! {
        /// Any bytes, with or without a valid header: an error or a value,
        /// never a panic.
        #[test]
        fn decoding_anything_never_panics(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            framed in proptest::bool::ANY,
        ) {
            let bytes = if framed {
                let mut b = SOCKET_MAGIC.to_vec();
                b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
                b.extend_from_slice(&(body.len() as u32).to_le_bytes());
                b.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
                b.extend_from_slice(&body);
                b
            } else {
                body
            };
            let _ = decode_socket("f", &bytes);
            let _ = decode_session("f", &bytes);
        }
    }
}
