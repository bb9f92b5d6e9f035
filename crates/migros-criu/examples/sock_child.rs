//! Test program for `tests/mock.rs`: a process holding a session
//! connection to a (fake) daemon, reading what the daemon sends only when
//! the test allows it, so that some of it waits in the socket across a
//! checkpoint.
//!
//! `sock_child <socket> <workdir>`: connects, says Hello (path and socket
//! inode), then for n = 0, 1, …: waits until `<workdir>/allow` holds a
//! number greater than n, reads one frame (a `Response::Error` whose errno
//! is n), appends n to `<workdir>/got` and acknowledges with a doorbell
//! frame (`pi` = n). A frame whose message is "last" ends it (exit 0).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use migros_proto::frame;
use migros_proto::msg::{Request, Response, PROTOCOL_VERSION};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (sock, work) = (&args[1], Path::new(&args[2]));
    let mut s = UnixStream::connect(sock).expect("connect");
    let inode = migros_criu::sock::inode(s.as_raw_fd()).expect("fstat");
    frame::write(
        &mut s,
        &Request::Hello {
            version: PROTOCOL_VERSION,
            path: sock.clone(),
            inode,
        },
    )
    .expect("hello");
    match frame::read::<Response>(&mut s).expect("welcome") {
        Response::Welcome { session, .. } => println!("session {session:#x}, socket {inode}"),
        other => panic!("unexpected {other:?}"),
    }
    for n in 0u32.. {
        while allowed(work) <= n {
            std::thread::sleep(Duration::from_millis(5));
        }
        let (errno, message) = match frame::read::<Response>(&mut s).expect("read") {
            Response::Error { errno, message } => (errno, message),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(errno as u32, n, "frame out of order");
        let mut got = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(work.join("got"))
            .expect("got");
        writeln!(got, "{n}").expect("write got");
        drop(got);
        frame::write(&mut s, &Request::SqDoorbell { qpn: 0, pi: n }).expect("ack");
        println!("frame {n} ({message})");
        if message == "last" {
            return;
        }
    }
}

fn allowed(work: &Path) -> u32 {
    std::fs::read_to_string(work.join("allow"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}
