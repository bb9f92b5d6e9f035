//! `migros bench`: perftest-like benchmarks over migros devices.
//!
//! As with perftest, a server (`migros bench write-bw -d devA`) waits on a
//! TCP port for a client (`migros bench write-bw -d devB SERVER`); they
//! exchange QP information as JSON lines ([`exchange`]), use the connection
//! as start and stop barrier, and both print the results. The server adopts
//! the client's parameters (size, iterations, QPs, …). `--pair devA devB`
//! runs both ends in this process, over a loopback connection; the first
//! device is the server's end. `--migrate-to` moves this end's context to
//! another daemon while traffic runs; the end that stays then reports the
//! steady state around the move ([`steady`]).

mod bw;
mod endpoint;
mod exchange;
mod lat;
mod report;
mod side;
pub(crate) mod steady;
mod verify;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::cli::{BenchArgs, Test};
use endpoint::Endpoint;
use exchange::{Ctrl, Hello, Msg, Params};
use report::Report;
use side::{Migrator, Roles, Side};

/// How long the setup steps wait for the peer.
const SETUP_WAIT: Duration = Duration::from_secs(60);
/// How long a client retries connecting to its server.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

pub fn run(a: BenchArgs) -> Result<()> {
    let params = params(&a)?;
    let report = if let Some(pair) = &a.pair {
        run_pair(&a, params, &pair[0], &pair[1])?
    } else {
        let dev = a.device.clone().context("-d DEVICE is needed")?;
        let migrate = a.migrate_to.clone().map(|to| (to, a.migrate_at));
        if let Some(server) = a.server {
            let stream = connect(SocketAddr::new(server, a.port))?;
            run_end(false, &dev, stream, params, a.mtu, migrate)?
        } else {
            let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, a.port))
                .with_context(|| format!("listening on tcp port {}", a.port))?;
            eprintln!(
                "waiting for a client on tcp port {} ({})",
                a.port,
                a.test.name()
            );
            let (stream, peer) = listener.accept().context("accepting the client")?;
            eprintln!("client {peer} connected");
            run_end(true, &dev, stream, params, a.mtu, migrate)?
        }
    };
    if a.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    if report.verified == Some(false) {
        bail!(
            "verification failed: {}",
            report.verify_error.as_deref().unwrap_or("unknown")
        );
    }
    Ok(())
}

/// The parameters of a run from the command line, checked.
fn params(a: &BenchArgs) -> Result<Params> {
    let p = Params {
        test: a.test,
        size: a.size(),
        iters: a.iters(),
        duration: a.duration,
        qps: a.qps,
        bidir: a.bidirectional,
        tx_depth: a.tx_depth,
        verify: a.verify,
    };
    check_params(&p)?;
    Ok(p)
}

fn check_params(p: &Params) -> Result<()> {
    if p.size == 0 {
        bail!("size must be at least 1 byte");
    }
    if p.size > 1 << 30 {
        bail!("size must be at most 1 GiB");
    }
    if p.qps == 0 || p.qps > 1024 {
        bail!("qps must be 1 to 1024");
    }
    if p.tx_depth == 0 || p.tx_depth > 8192 {
        bail!("tx depth must be 1 to 8192");
    }
    if p.iters == 0 {
        bail!("iterations must be at least 1");
    }
    if p.duration.is_some_and(|d| !(d > 0.0 && d < 1e6)) {
        bail!("duration must be positive");
    }
    if p.test.is_latency() && p.qps != 1 {
        bail!("latency tests use one qp");
    }
    if p.test.is_latency() && p.bidir {
        bail!("latency tests are bidirectional by nature; -b is for bandwidth tests");
    }
    Ok(())
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let deadline = Instant::now() + CONNECT_WAIT;
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("connecting to the bench server {addr}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn run_pair(a: &BenchArgs, params: Params, dev_a: &str, dev_b: &str) -> Result<Report> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a loopback port")?;
    let addr = listener.local_addr()?;
    let migrate = a.migrate_to.clone().map(|to| (to, a.migrate_at));
    let (sp, sdev, smtu) = (params.clone(), dev_a.to_string(), a.mtu);
    let server = std::thread::spawn(move || -> Result<Report> {
        let (stream, _) = listener.accept().context("accepting the pair's client")?;
        run_end(true, &sdev, stream, sp, smtu, migrate)
    });
    let client = connect(addr).and_then(|s| run_end(false, dev_b, s, params, a.mtu, None));
    let server = server
        .join()
        .map_err(|_| anyhow::anyhow!("the server thread panicked"))?;
    match (server, client) {
        (Ok(r), Ok(_)) => Ok(r),
        (Err(s), Ok(_)) => Err(s.context(format!("server end ({dev_a})"))),
        (Ok(_), Err(c)) => Err(c.context(format!("client end ({dev_b})"))),
        (Err(s), Err(c)) => bail!("server end ({dev_a}): {s:#}; client end ({dev_b}): {c:#}"),
    }
}

/// One end of a run, from the TCP connection to the merged report.
fn run_end(
    server: bool,
    device: &str,
    stream: TcpStream,
    mine: Params,
    mtu: Option<u32>,
    migrate: Option<(String, f64)>,
) -> Result<Report> {
    let mut ctrl = Ctrl::new(stream)?;
    let migrate_at = migrate.as_ref().map(|(_, at)| *at);
    let hello = |ep: &Endpoint, params: &Params| Hello {
        params: params.clone(),
        mtu: mtu.unwrap_or(u32::MAX).min(ep.device_mtu()),
        qps: ep.infos(),
        migrate_at,
    };
    let (params, ep, peer) = if server {
        let peer = ctrl.recv_hello(SETUP_WAIT)?;
        if peer.params.test != mine.test {
            bail!(
                "the client runs {}, this server {}",
                peer.params.test.name(),
                mine.test.name()
            );
        }
        check_params(&peer.params)?;
        let params = peer.params.clone();
        let ep = Endpoint::open(device, &params)?;
        ctrl.send(&Msg::Hello(hello(&ep, &params)))?;
        (params, ep, peer)
    } else {
        let ep = Endpoint::open(device, &mine)?;
        ctrl.send(&Msg::Hello(hello(&ep, &mine)))?;
        let peer = ctrl.recv_hello(SETUP_WAIT)?;
        if peer.params != mine {
            bail!(
                "the server answered with other parameters: {:?}",
                peer.params
            );
        }
        (mine, ep, peer)
    };
    let path_mtu = mtu.unwrap_or(u32::MAX).min(ep.device_mtu()).min(peer.mtu);
    ep.connect(&peer.qps, path_mtu)?;
    ep.post_initial_recvs(params.test)?;
    let roles = Roles::of(&params, server);
    let peer_roles = Roles::of(&params, !server);
    let mig = Migrator {
        to: migrate.as_ref().map(|(to, _)| to.clone()),
        at: migrate_at.unwrap_or(1.0),
        self_driven: roles.self_driven(),
        done: None,
        tell_peer_at: peer.migrate_at.filter(|_| !peer_roles.self_driven()),
        told: false,
    };
    let peer_migrates = peer.migrate_at.is_some() && migrate.is_none();
    let mut side = Side::new(params.clone(), server, ep, peer.qps, ctrl, mig);
    if peer_migrates && !params.test.is_latency() {
        side.sampler = Some(steady::Sampler::new());
    }
    if matches!(params.test, Test::ReadBw | Test::ReadLat) {
        bw::fill_targets(&mut side);
    }
    side.ctrl.barrier(SETUP_WAIT)?;
    let local = if params.test.is_latency() {
        lat::run(&mut side, server)?
    } else {
        bw::run(&mut side)?
    };
    let (local, peer) = side.done(local)?;
    Ok(Report::merge(&params, path_mtu, &local, &peer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn bench(args: &[&str]) -> BenchArgs {
        let mut v = vec!["migros", "bench"];
        v.extend_from_slice(args);
        match crate::cli::Cli::try_parse_from(v).unwrap().command {
            crate::cli::Command::Bench(b) => b,
            _ => panic!("not bench"),
        }
    }

    #[test]
    fn params_from_args() {
        let p = params(&bench(&["send-lat", "-d", "a"])).unwrap();
        assert_eq!((p.size, p.iters, p.qps, p.tx_depth), (2, 1000, 1, 128));
        assert!(params(&bench(&["send-lat", "-d", "a", "-q", "2"])).is_err());
        assert!(params(&bench(&["write-lat", "-d", "a", "-b"])).is_err());
        assert!(params(&bench(&["write-bw", "-d", "a", "-s", "0"])).is_err());
        assert!(params(&bench(&["write-bw", "-d", "a", "-t", "0"])).is_err());
        assert!(params(&bench(&["write-bw", "-d", "a", "-D", "0"])).is_err());
        let p = params(&bench(&["atomic-bw", "-d", "a", "-q", "3", "-b"])).unwrap();
        assert_eq!((p.size, p.qps, p.bidir), (8, 3, true));
    }
}
