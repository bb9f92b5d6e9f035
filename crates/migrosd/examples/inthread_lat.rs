//! Prototype for the data path in the application's own threads (issue
//! 17): how fast is migros when the transport runs where the application
//! polls, with no daemon between them?
//!
//! Two processes (this one and a copy of it started with `--peer`) each own
//! a `migros_transport::Device` with one RC QP, registered memory that is
//! the process's own (the engines copy from and to it directly: no
//! process_vm calls, no rings, no hand-off to another thread), and a
//! non-blocking UDP socket on port 4791 that the thread busy-polls. The
//! QPs are connected after exchanging QPN, PSN, address and rkey over the
//! peer's stdin/stdout; then they ping-pong 64-byte SENDs (`--op send`, as
//! `migros bench send-lat`) or WRITEs polled in memory (`--op write`, as
//! `write-lat`), and this process prints the one-way latency (half the
//! round trip) p50/p99/min. Every packet is a real RoCE v2 datagram with
//! its ICRC, checked on receipt, and every message is acknowledged as RC
//! requires.
//!
//! `--steer`: both processes bind the same address and port with
//! SO_REUSEPORT, and a classic BPF program attached to the group picks the
//! socket by the low bit of the destination QPN in the BTH (the process
//! bound first gets the even QPNs). This is how several processes of one
//! node would share its RoCE address; the device counters printed at the
//! end show that no datagram reached the wrong process.
//!
//! `cargo run --release -p migrosd --example inthread_lat -- -n 100000`;
//! `scripts/figures-inthread.sh` runs it beside the UDP floor and the
//! daemon path. Not the production data path: the daemon is unchanged.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant as StdInstant};

use anyhow::{bail, ensure, Context as _, Result};
use clap::{Parser, ValueEnum};
use migros_test_support::rc::{cap, rc_qp_init, RcParams};
use migros_transport::{
    Access, Device, DeviceConfig, DeviceEvent, Instant, Memory, MemoryFault, MrSpec, Mtu, OwnerId,
    Qpn, RecvWr, SendData, SendFlags, SendWr, Sge, WcOpcode, WcStatus, WorkCompletion, WrOpcode,
};
use migros_wire::ROCE_V2_PORT;

/// The only owner of every object: this process.
const OWNER: OwnerId = 1;
const PD: u32 = 1;
const CQ: u32 = 1;
/// Receive WRs kept posted (SEND ping-pong) and send slots in turn.
const SLOTS: usize = 64;
/// Idle polls after which a starved poller yields its core once (two
/// busy pollers on a loaded 2-core machine otherwise wait for a tick).
const YIELD_AFTER: u32 = 20_000;
/// How long a side waits for its peer before giving up.
const PEER_SILENCE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Op {
    Send,
    Write,
}

#[derive(Debug, Clone, Parser)]
#[command(
    about = "Ping-pong between two processes that each run the transport in their own thread"
)]
struct Args {
    /// SEND/RECV both ways, or WRITE both ways polled in memory.
    #[arg(long, value_enum, default_value = "send")]
    op: Op,
    /// Message size in bytes (one packet at most: up to the path MTU, 4096).
    #[arg(short, long, default_value_t = 64)]
    size: usize,
    /// Measured round trips.
    #[arg(short = 'n', long, default_value_t = 100_000)]
    iters: u64,
    /// Round trips before measuring.
    #[arg(long, default_value_t = 2_000)]
    warmup: u64,
    /// This process's device address.
    #[arg(long, default_value = "127.0.0.91")]
    addr: IpAddr,
    /// The peer process's device address (unused with --steer).
    #[arg(long, default_value = "127.0.0.92")]
    peer_addr: IpAddr,
    /// Share one address (--addr) between both processes, steered by QPN.
    #[arg(long)]
    steer: bool,
    /// Check every message byte for byte.
    #[arg(long)]
    verify: bool,
    /// Send ACKs as soon as the device has them, before the application's
    /// answer (by default they wait for it, see `Endpoint::flush`).
    #[arg(long)]
    acks_first: bool,
    /// Print one JSON object instead of a line.
    #[arg(long)]
    json: bool,
    /// Internal: run as the answering process (spawned by the first).
    #[arg(long, hide = true)]
    peer: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        (1..=4096).contains(&args.size),
        "size must be 1 to 4096 bytes (one packet)"
    );
    if args.peer {
        return peer_main(&args);
    }
    // Bind first: with --steer this socket is index 0 of the group.
    let mut ep = Endpoint::new(args.addr, 0x100, &args)?;
    let mut child = PeerProcess::spawn(&args)?;
    let peer = child.exchange(&ep.hello())?;
    ep.connect(&peer)?;
    let samples = ep.ping_pong(Role::Client, &args)?;
    ep.linger(|| child.exited())?;
    child.finish()?;
    let stats = Stats::of(samples);
    let c = ep.dev.counters();
    if args.json {
        println!(
            "{{\"op\":\"{:?}\",\"size\":{},\"iters\":{},\"steer\":{},\"verified\":{},\
             \"lat_us\":{{\"p50\":{:.3},\"p99\":{:.3},\"min\":{:.3}}},\
             \"rx_unknown_qp\":{},\"rx_icrc_errors\":{},\"tx_packets\":{},\"rx_packets\":{}}}",
            args.op,
            args.size,
            args.iters,
            args.steer,
            args.verify,
            stats.p50,
            stats.p99,
            stats.min,
            c.rx_unknown_qp,
            c.rx_icrc_errors,
            c.tx_packets,
            c.rx_packets
        );
    } else {
        println!(
            "in-thread {:?} {} B, {} iters{}: one-way p50 {:.2} us p99 {:.2} us min {:.2} us \
             (tx {} rx {} packets, unknown qp {}, icrc errors {})",
            args.op,
            args.size,
            args.iters,
            if args.steer { ", steered by qpn" } else { "" },
            stats.p50,
            stats.p99,
            stats.min,
            c.tx_packets,
            c.rx_packets,
            c.rx_unknown_qp,
            c.rx_icrc_errors
        );
    }
    Ok(())
}

/// The spawned process: answers every message, then says how it went.
fn peer_main(args: &Args) -> Result<()> {
    let addr = if args.steer {
        args.addr
    } else {
        args.peer_addr
    };
    let mut ep = Endpoint::new(addr, 0x101, args)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", ep.hello().line())?;
    out.flush()?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the first process's hello")?;
    ep.connect(&Hello::parse(&line)?)?;
    ep.ping_pong(Role::Server, args)?;
    let c = ep.dev.counters();
    writeln!(out, "done {} {}", c.rx_unknown_qp, c.rx_icrc_errors)?;
    out.flush()?;
    Ok(())
}

/// The answering process, killed if this one fails first.
struct PeerProcess {
    child: Child,
    reader: BufReader<std::process::ChildStdout>,
}

impl PeerProcess {
    fn spawn(args: &Args) -> Result<PeerProcess> {
        let exe = std::env::current_exe().context("finding this program")?;
        let mut cmd = Command::new(exe);
        cmd.arg("--peer")
            .arg("--op")
            .arg(format!("{:?}", args.op).to_lowercase())
            .args(["--size", &args.size.to_string()])
            .args(["--iters", &args.iters.to_string()])
            .args(["--warmup", &args.warmup.to_string()])
            .args(["--addr", &args.addr.to_string()])
            .args(["--peer-addr", &args.peer_addr.to_string()]);
        if args.steer {
            cmd.arg("--steer");
        }
        if args.verify {
            cmd.arg("--verify");
        }
        if args.acks_first {
            cmd.arg("--acks-first");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the peer process")?;
        let stdout = child.stdout.take().context("the peer's stdout")?;
        Ok(PeerProcess {
            child,
            reader: BufReader::new(stdout),
        })
    }

    fn exchange(&mut self, mine: &Hello) -> Result<Hello> {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .context("reading the peer's hello")?;
        let peer = Hello::parse(&line)?;
        let stdin = self.child.stdin.as_mut().context("the peer's stdin")?;
        writeln!(stdin, "{}", mine.line())?;
        stdin.flush()?;
        Ok(peer)
    }

    /// Whether the peer process has exited.
    fn exited(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }

    /// Reads the peer's last line and reaps it.
    fn finish(&mut self) -> Result<()> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = self.child.wait()?;
        ensure!(status.success(), "the peer process failed: {status}");
        let f: Vec<&str> = line.split_whitespace().collect();
        ensure!(
            f.len() == 3 && f[0] == "done",
            "the peer ended without its summary: {line:?}"
        );
        ensure!(
            f[1] == "0" && f[2] == "0",
            "the peer dropped datagrams: unknown qp {}, icrc errors {}",
            f[1],
            f[2]
        );
        Ok(())
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        // Already reaped when `finish` succeeded; otherwise do not leave
        // a busy-polling process behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What one side tells the other to connect: as `ibv_rc_pingpong`'s
/// exchange (QPN, PSN, GID) plus the buffer a WRITE lands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hello {
    addr: IpAddr,
    qpn: Qpn,
    psn: u32,
    rkey: u32,
    target: u64,
}

impl Hello {
    fn line(&self) -> String {
        format!(
            "{} {:#x} {:#x} {:#x} {:#x}",
            self.addr, self.qpn, self.psn, self.rkey, self.target
        )
    }

    fn parse(line: &str) -> Result<Hello> {
        let f: Vec<&str> = line.split_whitespace().collect();
        ensure!(f.len() == 5, "a hello has 5 fields, got {line:?}");
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16);
        let num = |i: usize, max: u64| -> Result<u64> {
            let v = hex(f[i]).with_context(|| format!("field {i} of {line:?}"))?;
            ensure!(v <= max, "field {i} of {line:?} is out of range");
            Ok(v)
        };
        Ok(Hello {
            addr: f[0]
                .parse()
                .with_context(|| format!("address in {line:?}"))?,
            qpn: num(1, 0xff_ffff)? as u32,
            psn: num(2, 0xff_ffff)? as u32,
            rkey: num(3, u32::MAX.into())? as u32,
            target: num(4, u64::MAX)?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Sends first and measures.
    Client,
    /// Answers.
    Server,
}

/// Memory that is the process's own: the regions are plain buffers and
/// their addresses are where they lie. What the device reaches in them
/// is decided by its MR table before `read`/`write` is called; this only
/// refuses what lies outside every buffer.
struct OwnMemory {
    regions: Vec<Box<[u8]>>,
}

impl OwnMemory {
    fn base(&self, i: usize) -> u64 {
        self.regions[i].as_ptr() as u64
    }

    fn find(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        self.regions.iter_mut().find_map(|r| {
            let base = r.as_ptr() as u64;
            let off = usize::try_from(addr.checked_sub(base)?).ok()?;
            r.get_mut(off..off.checked_add(len)?)
        })
    }
}

impl Memory for OwnMemory {
    fn read(&mut self, owner: OwnerId, addr: u64, buf: &mut [u8]) -> Result<(), MemoryFault> {
        let fault = MemoryFault {
            owner,
            addr,
            len: buf.len(),
        };
        match self.find(addr, buf.len()) {
            Some(src) if owner == OWNER => {
                buf.copy_from_slice(src);
                Ok(())
            }
            _ => Err(fault),
        }
    }

    fn write(&mut self, owner: OwnerId, addr: u64, data: &[u8]) -> Result<(), MemoryFault> {
        let fault = MemoryFault {
            owner,
            addr,
            len: data.len(),
        };
        match self.find(addr, data.len()) {
            Some(dst) if owner == OWNER => {
                dst.copy_from_slice(data);
                Ok(())
            }
            _ => Err(fault),
        }
    }
}

/// Region indexes in [`OwnMemory`].
const TX: usize = 0;
const RX: usize = 1;
const TX_LKEY: u32 = 0x10;
const RX_LKEY: u32 = 0x20;

/// One process's device, QP, memory and socket, driven by the thread that
/// calls it: what the library would be.
struct Endpoint {
    dev: Device,
    sock: UdpSocket,
    mem: OwnMemory,
    epoch: StdInstant,
    qpn: Qpn,
    psn: u32,
    slot: usize,
    tx_buf: Vec<u8>,
    rx_buf: Vec<u8>,
    wcs: Vec<WorkCompletion>,
    /// Send WRs not completed yet.
    outstanding: usize,
    /// The connected peer.
    peer: Option<Hello>,
    /// When the last datagram came in.
    last_rx: StdInstant,
    /// Whether ACKs go after requests (see `flush`).
    acks_last: bool,
    /// ACKs waiting for the application's next request, and their
    /// buffers once sent.
    held: Vec<(SocketAddr, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
}

impl Endpoint {
    fn new(addr: IpAddr, qpn: Qpn, args: &Args) -> Result<Endpoint> {
        let sock = bind(addr, args.steer)?;
        let mut dev = Device::new(DeviceConfig::new(addr));
        // One slot per message in turn, as the daemon benchmark does.
        let slot = args.size.next_multiple_of(64);
        let mem = OwnMemory {
            regions: vec![
                vec![0u8; slot * SLOTS].into_boxed_slice(),
                vec![0u8; slot * SLOTS].into_boxed_slice(),
            ],
        };
        dev.alloc_pd(OWNER, PD)?;
        dev.create_cq(OWNER, CQ, 4 * SLOTS as u32)?;
        for (i, lkey, access) in [
            (TX, TX_LKEY, Access::LOCAL_WRITE),
            (
                RX,
                RX_LKEY,
                Access(Access::LOCAL_WRITE.0 | Access::REMOTE_WRITE.0),
            ),
        ] {
            let base = mem.base(i);
            dev.reg_mr(MrSpec {
                owner: OWNER,
                pd: PD,
                addr: base,
                length: mem.regions[i].len() as u64,
                iova: base,
                lkey,
                rkey: lkey | 1,
                access,
            })?;
        }
        dev.create_qp(rc_qp_init(
            OWNER,
            qpn,
            PD,
            CQ,
            cap(SLOTS as u32, SLOTS as u32),
        ))?;
        Ok(Endpoint {
            dev,
            sock,
            mem,
            epoch: StdInstant::now(),
            qpn,
            psn: rand::random::<u32>() & 0xff_ffff,
            slot,
            tx_buf: Vec::with_capacity(9000),
            rx_buf: vec![0; 65536],
            wcs: Vec::with_capacity(SLOTS),
            outstanding: 0,
            peer: None,
            acks_last: !args.acks_first,
            last_rx: StdInstant::now(),
            held: Vec::new(),
            spare: Vec::new(),
        })
    }

    fn hello(&self) -> Hello {
        Hello {
            addr: self.dev.config().addr,
            qpn: self.qpn,
            psn: self.psn,
            rkey: RX_LKEY | 1,
            target: self.mem.base(RX),
        }
    }

    /// RESET → RTS towards `peer`, then a receive in every slot.
    fn connect(&mut self, peer: &Hello) -> Result<()> {
        let params = RcParams {
            mtu: Mtu::Mtu4096,
            // 268 ms (perftest and `migros bench` use 67 ms). Loopback
            // loses nothing, but on the loaded 2-core test machine a busy
            // poller loses its core for tens of milliseconds at times, and
            // its datagrams can wait longer still in the loopback backlog
            // for ksoftirqd: seven spurious timeouts in a row at 67 ms
            // ended runs with RETRY_EXC_ERR.
            timeout: 16,
            sq_psn: self.psn,
            rq_psn: peer.psn,
            ..RcParams::new(peer.qpn, peer.addr)
        };
        let now = self.now();
        for (attr, mask) in params.transitions() {
            self.dev.modify_qp(now, self.qpn, &attr, mask)?;
        }
        for slot in 0..SLOTS {
            self.post_recv(slot)?;
        }
        self.peer = Some(*peer);
        Ok(())
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// One pass of the progress engine: every datagram waiting, due
    /// timers, then everything the device has to send. True when a
    /// datagram came in.
    fn progress(&mut self) -> Result<bool> {
        let now = self.now();
        let mut busy = false;
        loop {
            match self.sock.recv_from(&mut self.rx_buf) {
                Ok((n, from)) => {
                    busy = true;
                    self.last_rx = StdInstant::now();
                    self.dev.handle_datagram(
                        now,
                        &mut self.mem,
                        from.ip(),
                        from.port(),
                        &self.rx_buf[..n],
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("receiving"),
            }
        }
        if self.dev.poll_timeout().is_some_and(|t| t <= now) {
            self.dev.handle_timeout(now);
        }
        // After datagrams came in the application may answer at once:
        // hold the ACKs for its request to overtake them; a pass that
        // found nothing sends what is held.
        self.flush(now, busy)?;
        while let Some(ev) = self.dev.poll_event() {
            match ev {
                DeviceEvent::Completion { .. } | DeviceEvent::CommEstablished { .. } => {}
                other => bail!("device event {other:?}"),
            }
        }
        Ok(busy)
    }

    /// Sends what the device has queued (the doorbell, in this thread).
    /// With `hold_acks` (and unless `--acks-first`), ACKs wait in `held`;
    /// otherwise they go after the requests of this call.
    fn flush(&mut self, now: Instant, hold_acks: bool) -> Result<()> {
        while let Some(t) = self.dev.poll_transmit(now, &mut self.mem, &mut self.tx_buf) {
            let to = SocketAddr::new(t.dst, ROCE_V2_PORT);
            if self.acks_last && self.tx_buf.first() == Some(&RC_ACKNOWLEDGE) {
                let spare = self.spare.pop().unwrap_or_default();
                self.held
                    .push((to, std::mem::replace(&mut self.tx_buf, spare)));
                continue;
            }
            send(&self.sock, &self.tx_buf, to)?;
        }
        if !hold_acks {
            for (to, buf) in self.held.drain(..) {
                send(&self.sock, &buf, to)?;
                self.spare.push(buf);
            }
        }
        Ok(())
    }

    fn post_recv(&mut self, slot: usize) -> Result<()> {
        let sge = Sge {
            addr: self.mem.base(RX) + (slot * self.slot) as u64,
            length: self.slot as u32,
            lkey: RX_LKEY,
        };
        self.dev.post_recv(
            self.qpn,
            RecvWr {
                wr_id: slot as u64,
                sges: vec![sge],
            },
        )?;
        Ok(())
    }

    /// Posts message `k` from its send slot and rings the doorbell.
    fn post(&mut self, op: Op, peer: &Hello, size: usize, k: u64) -> Result<()> {
        while self.outstanding + 1 >= SLOTS {
            self.progress()?;
            self.take_completions()?;
        }
        let slot = (k % SLOTS as u64) as usize;
        let base = self.mem.base(TX) + (slot * self.slot) as u64;
        fill(&mut self.mem.regions[TX][slot * self.slot..][..size], op, k);
        let opcode = match op {
            Op::Send => WrOpcode::Send,
            Op::Write => WrOpcode::RdmaWrite {
                remote_addr: peer.target,
                rkey: peer.rkey,
            },
        };
        self.dev.post_send(
            self.qpn,
            SendWr {
                wr_id: k,
                opcode,
                flags: SendFlags::SIGNALED,
                data: SendData::Sges(vec![Sge {
                    addr: base,
                    length: size as u32,
                    lkey: TX_LKEY,
                }]),
                ud: None,
            },
        )?;
        self.outstanding += 1;
        let now = self.now();
        self.flush(now, false)
    }

    /// Keeps answering the peer (ACKs, resent packets) until `done`:
    /// once the application stops calling, nobody else would.
    fn linger(&mut self, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
        let deadline = StdInstant::now() + PEER_SILENCE;
        while !done()? {
            self.progress()?;
            ensure!(StdInstant::now() < deadline, "the peer did not finish");
        }
        Ok(())
    }

    /// Polls the CQ; returns the slot of a receive, if one completed.
    fn take_completions(&mut self) -> Result<Option<(usize, u32)>> {
        self.wcs.clear();
        self.dev.poll_cq(CQ, SLOTS, &mut self.wcs)?;
        let mut received = None;
        for wc in &self.wcs {
            ensure!(
                wc.status == WcStatus::Success,
                "work completion error {:?} ({:?})",
                wc.status,
                wc.opcode
            );
            match wc.opcode {
                WcOpcode::Recv => {
                    ensure!(received.is_none(), "two messages arrived at once");
                    received = Some((wc.wr_id as usize, wc.byte_len));
                }
                _ => self.outstanding -= 1,
            }
        }
        Ok(received)
    }

    /// Waits for the peer's message `k` and checks it.
    fn arrive(&mut self, op: Op, size: usize, k: u64, verify: bool) -> Result<()> {
        let mut idle = 0u32;
        let mut since = StdInstant::now();
        loop {
            let busy = self.progress()?;
            let got = self.take_completions()?;
            match op {
                Op::Send => {
                    if let Some((slot, len)) = got {
                        ensure!(len as usize == size, "message {k}: {len} bytes, not {size}");
                        if verify {
                            let buf = &self.mem.regions[RX][slot * self.slot..][..size];
                            check(buf, op, k).with_context(|| format!("message {k}"))?;
                        }
                        self.post_recv(slot)?;
                        return Ok(());
                    }
                }
                Op::Write => {
                    // As perftest's write_lat: the last byte says the
                    // whole message is there (the device writes it last).
                    let buf = &self.mem.regions[RX][..size];
                    if buf[size - 1] == marker(k) {
                        if verify {
                            check(buf, op, k).with_context(|| format!("write {k}"))?;
                        }
                        return Ok(());
                    }
                }
            }
            if busy {
                idle = 0;
                since = StdInstant::now();
            } else {
                idle += 1;
                if idle.is_multiple_of(YIELD_AFTER) {
                    std::thread::yield_now();
                    ensure!(
                        since.elapsed() < PEER_SILENCE,
                        "the peer said nothing for {PEER_SILENCE:?} (message {k})"
                    );
                }
            }
        }
    }

    /// The ping-pong; the client returns its one-way samples in µs.
    fn ping_pong(&mut self, role: Role, args: &Args) -> Result<Vec<f64>> {
        let r = self.ping_pong_inner(role, args);
        r.with_context(|| {
            format!(
                "{role:?} qp {:#x}, last datagram {:?} ago, started {:?} ago: {:?}, device {:?}",
                self.qpn,
                self.last_rx.elapsed(),
                self.epoch.elapsed(),
                self.dev.qp_counters(self.qpn).unwrap_or_default(),
                self.dev.counters()
            )
        })
    }

    fn ping_pong_inner(&mut self, role: Role, args: &Args) -> Result<Vec<f64>> {
        let peer = self.peer.context("the qp is not connected")?;
        let total = args.warmup + args.iters;
        let mut samples = Vec::with_capacity(args.iters as usize);
        for k in 0..total {
            match role {
                Role::Client => {
                    let t = StdInstant::now();
                    self.post(args.op, &peer, args.size, k)?;
                    self.arrive(args.op, args.size, k, args.verify)?;
                    if k >= args.warmup {
                        samples.push(t.elapsed().as_secs_f64() * 1e6 / 2.0);
                    }
                }
                Role::Server => {
                    self.arrive(args.op, args.size, k, args.verify)?;
                    self.post(args.op, &peer, args.size, k)?;
                }
            }
        }
        // This side's last sends completed, and the ACKs it holds sent.
        let deadline = StdInstant::now() + PEER_SILENCE;
        while self.outstanding > 0 {
            self.progress()?;
            self.take_completions()?;
            ensure!(
                StdInstant::now() < deadline,
                "{} sends never completed",
                self.outstanding
            );
        }
        let now = self.now();
        self.flush(now, false)?;
        Ok(samples)
    }
}

/// The BTH opcode of an RC ACKNOWLEDGE (and of a NAK).
const RC_ACKNOWLEDGE: u8 = 0x11;

/// Sends one datagram, retrying while the socket buffer is full.
fn send(sock: &UdpSocket, buf: &[u8], to: SocketAddr) -> Result<()> {
    loop {
        match sock.send_to(buf, to) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e).context("sending"),
        }
    }
}

/// A non-blocking UDP socket on `addr`:4791; with `steer`, in a
/// SO_REUSEPORT group whose BPF program picks the socket by QPN.
fn bind(addr: IpAddr, steer: bool) -> Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(
        Domain::for_address(SocketAddr::new(addr, 0)),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if steer {
        let on: libc::c_int = 1;
        setsockopt(&sock, libc::SO_REUSEPORT, &on).context("setting SO_REUSEPORT")?;
    }
    sock.bind(&SocketAddr::new(addr, ROCE_V2_PORT).into())
        .with_context(|| format!("binding {addr}:{ROCE_V2_PORT}"))?;
    if steer {
        steer_by_qpn(&sock)?;
    }
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h; the libc crate
/// defines it only for some targets).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// Attaches to the socket's SO_REUSEPORT group a classic BPF program that
/// returns the index of the socket to deliver to: the low bit of the
/// destination QPN. The program sees the UDP payload, whose bytes 4..8
/// are the BTH's reserved byte and 24-bit destination QPN. A datagram too
/// short to hold it makes the load fail, and the program returns 0.
fn steer_by_qpn(sock: &socket2::Socket) -> Result<()> {
    let mut prog = [
        // A = payload[4..8], big endian
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 4,
        },
        // A &= 1
        libc::sock_filter {
            code: (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: 1,
        },
        // return A: the socket's index in the group
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_A) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // `fprog` points at `prog`, alive for the call; the kernel copies it.
    setsockopt(sock, SO_ATTACH_REUSEPORT_CBPF, &fprog).context("attaching the steering program")
}

/// `setsockopt(SOL_SOCKET, name, value)`.
fn setsockopt<T>(sock: &socket2::Socket, name: libc::c_int, value: &T) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `value` is a live `T` of the size passed; the kernel only
    // reads it during the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The byte that ends message `k` of a WRITE (never 0, so a fresh buffer
/// never matches).
fn marker(k: u64) -> u8 {
    (k % 255) as u8 + 1
}

/// Message `k`'s bytes; a WRITE's last byte is its marker.
fn fill(buf: &mut [u8], op: Op, k: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (k as u8).wrapping_mul(31).wrapping_add(i as u8) ^ 0x5a;
    }
    if op == Op::Write {
        if let Some(last) = buf.last_mut() {
            *last = marker(k);
        }
    }
}

fn check(buf: &[u8], op: Op, k: u64) -> Result<()> {
    let mut want = vec![0u8; buf.len()];
    fill(&mut want, op, k);
    match buf.iter().zip(&want).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => bail!("byte {i} is {:#x}, expected {:#x}", buf[i], want[i]),
    }
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    p50: f64,
    p99: f64,
    min: f64,
}

impl Stats {
    fn of(mut samples: Vec<f64>) -> Stats {
        samples.sort_by(f64::total_cmp);
        let at = |q: usize| {
            samples
                .get(samples.len() * q / 100)
                .copied()
                .unwrap_or(f64::NAN)
        };
        Stats {
            p50: at(50),
            p99: at(99),
            min: samples.first().copied().unwrap_or(f64::NAN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two endpoints in two threads of this process, connected as the two
    /// processes are; returns both devices' counters after the run.
    fn run_pair(
        extra: &[&str],
        a: &str,
        b: &str,
    ) -> (Vec<f64>, [migros_transport::DeviceCounters; 2]) {
        let mut argv = vec!["inthread_lat", "-n", "1500", "--warmup", "50", "--verify"];
        argv.extend_from_slice(extra);
        argv.extend_from_slice(&["--addr", a, "--peer-addr", b]);
        let args = Args::parse_from(argv);
        let steer = args.steer;
        // Bound in this order: with --steer the client's socket is index 0.
        let mut client = Endpoint::new(args.addr, 0x100, &args).unwrap();
        let server_addr = if steer { args.addr } else { args.peer_addr };
        let mut server = Endpoint::new(server_addr, 0x101, &args).unwrap();
        let (c, s) = (client.hello(), server.hello());
        client.connect(&s).unwrap();
        server.connect(&c).unwrap();
        let server_args = args.clone();
        let t = std::thread::spawn(move || {
            server.ping_pong(Role::Server, &server_args).unwrap();
            server.dev.counters()
        });
        let samples = client.ping_pong(Role::Client, &args).unwrap();
        client.linger(|| Ok(t.is_finished())).unwrap();
        let server_counters = t.join().unwrap();
        (samples, [client.dev.counters(), server_counters])
    }

    fn assert_clean(samples: &[f64], counters: &[migros_transport::DeviceCounters; 2]) {
        assert_eq!(samples.len(), 1500);
        assert!(samples.iter().all(|s| *s > 0.0));
        for c in counters {
            assert_eq!(c.rx_unknown_qp, 0, "{c:?}");
            assert_eq!(c.rx_icrc_errors, 0, "{c:?}");
            assert_eq!(c.rx_malformed, 0, "{c:?}");
            // Each message and its ACK at least, both ways, warm-up included.
            assert!(c.rx_packets >= 2 * 1550, "{c:?}");
        }
    }

    #[test]
    fn send_ping_pong_arrives_byte_exact() {
        let (samples, counters) =
            run_pair(&["--op", "send", "-s", "64"], "127.0.0.95", "127.0.0.96");
        assert_clean(&samples, &counters);
    }

    #[test]
    fn write_ping_pong_of_a_whole_mtu_arrives_byte_exact() {
        let (samples, counters) =
            run_pair(&["--op", "write", "-s", "4096"], "127.0.0.93", "127.0.0.94");
        assert_clean(&samples, &counters);
    }

    #[test]
    fn steering_by_qpn_delivers_each_datagram_to_its_owner() {
        let (samples, counters) =
            run_pair(&["--op", "send", "--steer"], "127.0.0.97", "127.0.0.97");
        assert_clean(&samples, &counters);
    }

    #[test]
    fn a_hello_round_trips_and_bad_ones_are_refused() {
        let h = Hello {
            addr: "127.0.0.91".parse().unwrap(),
            qpn: 0x101,
            psn: 0xff_fffe,
            rkey: 0x21,
            target: 0x7f00_0000_1000,
        };
        assert_eq!(Hello::parse(&h.line()).unwrap(), h);
        for bad in [
            "",
            "127.0.0.1 0x1 0x2 0x3",
            "x 0x1 0x2 0x3 0x4",
            "127.0.0.1 0x1000000 0x2 0x3 0x4",
        ] {
            assert!(Hello::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stats_take_the_median_and_the_99th_percentile() {
        let s = Stats::of((1..=100).rev().map(f64::from).collect());
        assert_eq!((s.p50, s.p99, s.min), (51.0, 100.0, 1.0));
    }
}
