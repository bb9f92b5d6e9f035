//! migrosd: the migros device daemon (see the library's docs).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use migros_transport::Mtu;
use migrosd::config::parse_mtu;
use migrosd::fault::FaultSpec;
use migrosd::{Config, Daemon};

/// A software RoCE v2 device whose QPs can migrate with their process.
#[derive(Debug, Parser)]
#[command(name = "migrosd", version)]
struct Args {
    /// Device name (`<name>.sock` in the socket directory).
    #[arg(long)]
    name: String,
    /// Address to bind UDP 4791 on (the device's GID).
    #[arg(long)]
    addr: IpAddr,
    /// Active MTU in bytes: 256, 512, 1024, 2048 or 4096.
    #[arg(long, default_value = "1024", value_parser = parse_mtu)]
    mtu: Mtu,
    /// Socket directory (default: $MIGROS_SOCKET_DIR or /run/migros).
    #[arg(long)]
    socket_dir: Option<PathBuf>,
    /// Test only: faults on the transmit path, e.g. drop=0.01,reorder=0.01,dup=0.01,seed=1.
    #[arg(long)]
    fault: Option<FaultSpec>,
    /// How long a paused QP waits for its partner, in milliseconds.
    #[arg(long)]
    pause_timeout_ms: Option<u64>,
    /// How long a process paused for a checkpoint may run unfrozen (CRIU
    /// died between its hooks) before its QPs resume, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    checkpoint_hold_ms: u64,
    /// A quota as KIND=SESSION,UID (kinds: pds, mrs, cqs, srqs, qps,
    /// channels): what one session and all sessions of one uid may hold.
    /// Repeatable.
    #[arg(long)]
    quota: Vec<String>,
    /// How long one access into client memory may run before the
    /// watchdog ends it (aborting the FUSE connection it waits on) or
    /// reports it, in milliseconds; 0 turns the watchdog off.
    #[arg(long, default_value_t = 2_000)]
    memory_stall_ms: u64,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let mut cfg = Config::new(
        args.name,
        args.addr,
        args.socket_dir
            .unwrap_or_else(migros_proto::paths::socket_dir),
    );
    cfg.mtu = args.mtu;
    cfg.fault = args.fault;
    cfg.pause_timeout = args.pause_timeout_ms.map(Duration::from_millis);
    cfg.checkpoint_hold = Duration::from_millis(args.checkpoint_hold_ms);
    cfg.memory_stall = Duration::from_millis(args.memory_stall_ms);
    for q in &args.quota {
        cfg.quotas.apply(q).map_err(anyhow::Error::msg)?;
    }
    if cfg.fault.is_some() {
        tracing::warn!(
            "fault injection is on: this daemon drops, reorders or duplicates datagrams"
        );
    }
    let node = migrosd::devnode::path(&cfg.name);
    let mut daemon = Daemon::new(cfg).context("cannot start the device")?;
    // After Daemon::new: a daemon that cannot start (its name taken) must
    // not touch the node of the one that runs.
    if let Err(e) = migrosd::devnode::DevNode::ensure(node.clone()) {
        tracing::warn!(
            "cannot make {}: {e} (UCX will not list this device)",
            node.display()
        );
    }
    daemon.run().context("the event loop failed")?;
    Ok(())
}
