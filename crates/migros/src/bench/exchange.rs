//! The TCP side channel of a benchmark, as perftest's: one JSON object per
//! line. The client sends its [`Hello`] (parameters and QPs), the server
//! answers with its own, both say [`Msg::Ready`] (the start barrier), a
//! requester says [`Msg::Finished`] with how many operations it did, and
//! both end with [`Msg::Done`] carrying their [`Summary`] (the stop barrier).
//! [`Msg::Progress`] tells a passive end that is to migrate that the
//! moment has come.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::cli::Test;

/// What both ends must agree on (the client's choice; the server adopts it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub test: Test,
    pub size: u32,
    pub iters: u64,
    pub duration: Option<f64>,
    pub qps: u32,
    pub bidir: bool,
    pub tx_depth: u32,
    pub verify: bool,
}

/// How to reach one QP and its target buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QpInfo {
    pub qpn: u32,
    pub psn: u32,
    pub rkey: u32,
    pub addr: u64,
    pub len: u64,
    pub gid: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub params: Params,
    /// This end's path MTU in bytes (`-m`, else the device's); both use the smaller.
    pub mtu: u32,
    pub qps: Vec<QpInfo>,
    /// This end migrates at this fraction of the run.
    pub migrate_at: Option<f64>,
}

/// One direction of bandwidth traffic, as measured by its requester.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Direction {
    pub ops: u64,
    pub bytes: u64,
    pub secs: f64,
    pub peak_gbps: f64,
}

/// Latency statistics in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatStats {
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub avg: f64,
    pub stdev: f64,
    pub p99: f64,
    pub p999: f64,
}

/// What a migration took (from `Context::migrate_to`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationInfo {
    pub from: String,
    pub to: String,
    pub downtime_ms: f64,
    pub image_bytes: usize,
    pub qpns: Vec<u32>,
}

/// One end's results, exchanged at the end so that both can print all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub requester: Option<Direction>,
    pub lat: Option<LatStats>,
    /// Longest gap between consecutive completions this end saw (ms).
    pub max_gap_ms: Option<f64>,
    /// `None`: this end checked nothing.
    pub verified: Option<bool>,
    /// Whether this end's role is to check data (the receiver of SENDs and
    /// verified WRITEs, the requester of READs and atomics, both ends of a
    /// SEND or WRITE latency run): such an end that checked nothing makes
    /// the run unverified.
    #[serde(default)]
    pub verify_expected: bool,
    pub verify_error: Option<String>,
    pub retransmits: u64,
    /// Duplicate requests this end's QPs received (a duplicated or resent
    /// packet), and requests they dropped as out of sequence (a loss or a
    /// reordering before them).
    #[serde(default)]
    pub duplicates: u64,
    #[serde(default)]
    pub out_of_sequence: u64,
    pub migration: Option<MigrationInfo>,
    /// The steady state around the peer's migration, from this end's
    /// counters (an end that stayed while its peer moved).
    #[serde(default)]
    pub steady: Option<super::steady::Steady>,
    /// Why that end could not tell the steady state.
    #[serde(default)]
    pub steady_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum Msg {
    Hello(Hello),
    Ready,
    Progress,
    /// A requester is done: operations it completed per QP.
    Finished {
        ops: Vec<u64>,
    },
    Done(Box<Summary>),
}

/// The side channel: JSON lines over a TCP stream.
pub struct Ctrl {
    stream: TcpStream,
    buf: Vec<u8>,
    queue: VecDeque<Msg>,
}

impl Ctrl {
    pub fn new(stream: TcpStream) -> Result<Ctrl> {
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        Ok(Ctrl {
            stream,
            buf: Vec::new(),
            queue: VecDeque::new(),
        })
    }

    pub fn send(&mut self, msg: &Msg) -> Result<()> {
        let mut line = serde_json::to_vec(msg)?;
        line.push(b'\n');
        self.stream
            .write_all(&line)
            .context("writing to the bench peer")
    }

    /// The next message, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<Msg> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.queue.pop_front() {
                return Ok(m);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("bench peer sent nothing for {timeout:?}");
            }
            self.stream.set_read_timeout(Some(left))?;
            self.fill(false)?;
        }
    }

    /// The next message if one has arrived.
    pub fn try_recv(&mut self) -> Result<Option<Msg>> {
        if self.queue.is_empty() {
            self.stream.set_nonblocking(true)?;
            let r = self.fill(true);
            self.stream.set_nonblocking(false)?;
            r?;
        }
        Ok(self.queue.pop_front())
    }

    /// Reads once and queues every complete line.
    fn fill(&mut self, nonblocking: bool) -> Result<()> {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => bail!("bench peer closed the connection"),
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock && nonblocking => return Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(())
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e).context("reading from the bench peer"),
        }
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let msg = serde_json::from_slice(&line[..pos])
                .map_err(|e| anyhow!("bad message from the bench peer: {e}"))?;
            self.queue.push_back(msg);
        }
        Ok(())
    }

    pub fn recv_hello(&mut self, timeout: Duration) -> Result<Hello> {
        match self.recv(timeout)? {
            Msg::Hello(h) => Ok(h),
            m => bail!("expected hello from the bench peer, got {m:?}"),
        }
    }

    /// The start barrier.
    pub fn barrier(&mut self, timeout: Duration) -> Result<()> {
        self.send(&Msg::Ready)?;
        match self.recv(timeout)? {
            Msg::Ready => Ok(()),
            m => bail!("expected ready from the bench peer, got {m:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (Ctrl, Ctrl) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (Ctrl::new(s).unwrap(), Ctrl::new(c).unwrap())
    }

    fn hello() -> Hello {
        Hello {
            params: Params {
                test: Test::WriteBw,
                size: 65536,
                iters: 5000,
                duration: None,
                qps: 2,
                bidir: false,
                tx_depth: 128,
                verify: true,
            },
            mtu: 4096,
            qps: vec![QpInfo {
                qpn: 0x123456,
                psn: 77,
                rkey: 0xdeadbeef,
                addr: 0x7f00_0000_1000,
                len: 1 << 20,
                gid: "127.0.0.2".parse().unwrap(),
            }],
            migrate_at: Some(0.5),
        }
    }

    #[test]
    fn exchange_over_loopback() {
        let (mut s, mut c) = pair();
        let t = std::thread::spawn(move || {
            let h = s.recv_hello(Duration::from_secs(5)).unwrap();
            s.send(&Msg::Hello(h.clone())).unwrap();
            s.barrier(Duration::from_secs(5)).unwrap();
            // Finished may come at any time; try_recv sees it eventually.
            let deadline = Instant::now() + Duration::from_secs(5);
            let fin = loop {
                if let Some(m) = s.try_recv().unwrap() {
                    break m;
                }
                assert!(Instant::now() < deadline);
                std::thread::sleep(Duration::from_millis(1));
            };
            assert_eq!(
                fin,
                Msg::Finished {
                    ops: vec![5000, 5000]
                }
            );
            s.send(&Msg::Done(Box::default())).unwrap();
            h
        });
        c.send(&Msg::Hello(hello())).unwrap();
        assert_eq!(c.recv_hello(Duration::from_secs(5)).unwrap(), hello());
        c.barrier(Duration::from_secs(5)).unwrap();
        assert!(c.try_recv().unwrap().is_none());
        c.send(&Msg::Finished {
            ops: vec![5000, 5000],
        })
        .unwrap();
        assert_eq!(
            c.recv(Duration::from_secs(5)).unwrap(),
            Msg::Done(Box::default())
        );
        assert_eq!(t.join().unwrap(), hello());
    }

    #[test]
    fn messages_are_json_lines() {
        let line = serde_json::to_string(&Msg::Finished { ops: vec![3] }).unwrap();
        assert_eq!(line, r#"{"msg":"finished","ops":[3]}"#);
        let h = serde_json::to_value(Msg::Hello(hello())).unwrap();
        assert_eq!(h["msg"], "hello");
        assert_eq!(h["params"]["test"], "write-bw");
        assert_eq!(h["qps"][0]["qpn"], 0x123456);
        assert_eq!(h["qps"][0]["gid"], "127.0.0.2");
    }

    #[test]
    fn timeouts_and_closed_peers_are_errors() {
        let (mut s, c) = pair();
        assert!(s.recv(Duration::from_millis(50)).is_err());
        drop(c);
        assert!(s.recv(Duration::from_secs(2)).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        let (mut s, mut c) = pair();
        c.stream.write_all(b"not json\n").unwrap();
        assert!(s.recv(Duration::from_secs(2)).is_err());
    }
}
