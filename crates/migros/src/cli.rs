//! The command line's shape (clap derive): every subcommand and option,
//! with the defaults perftest users expect.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::EngineKind;

/// migros: software RoCE v2 devices whose queue pairs live-migrate.
#[derive(Debug, Parser)]
#[command(name = "migros", version, about)]
pub struct Cli {
    /// Socket directory of the devices (default: $MIGROS_SOCKET_DIR, else /run/migros).
    #[arg(long, global = true, value_name = "DIR")]
    pub socket_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add, remove and inspect devices (one migrosd daemon each).
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
    /// Device and per-QP counters.
    Stat(StatArgs),
    /// perftest-like benchmarks (send/write/read/atomic, bandwidth and latency).
    Bench(BenchArgs),
    /// Prints the environment lines that make clients find the devices.
    Env,
    /// Nodes: a network namespace with a migrosd each, on bridge migros-br0 (root).
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Simulated machines on this one (tests, `demo --swarm`): network,
    /// mount and UTS namespaces with their own dockerd and sshd (root).
    Host {
        #[command(subcommand)]
        command: HostCommand,
    },
    /// Runs a container (runc, or Docker with --engine docker) on a node.
    Run(RunArgs),
    /// Lists the containers.
    Ps {
        #[arg(long)]
        json: bool,
    },
    /// Prints a container's output.
    Logs { name: String },
    /// Waits for a container to exit; exits with its exit status.
    Wait {
        name: String,
        /// Give up after this many seconds.
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Removes a container (-f: kills it first).
    Rm {
        #[arg(short, long)]
        force: bool,
        name: String,
    },
    /// Live-migrates a container to another node (runc or Docker, + CRIU).
    Migrate(MigrateArgs),
    /// The seed experiment: ib_send_bw between containers on two of three
    /// local nodes, the server live-migrated mid-run; writes a bandwidth plot.
    Demo(crate::demo::DemoArgs),
    /// Internal: what `migros` does on an ssh node's machine for the CLI.
    #[command(name = "__remote", hide = true)]
    Remote {
        #[command(subcommand)]
        command: RemoteCommand,
    },
    /// Internal: supervises one incarnation of a container.
    #[command(name = "__supervise", hide = true)]
    Supervise {
        name: String,
        gen: u32,
        #[arg(long)]
        restore: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Creates a node: netns migros-NAME, an address on migros-br0, a migrosd.
    Add(NodeAddArgs),
    /// Lists the nodes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stops a node's daemon and removes its namespace.
    Del { name: String },
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Creates a host: its namespaces and directories, dockerd, sshd.
    Add(HostAddArgs),
    /// Removes a host: its containers, processes, namespaces and files.
    Del { name: String },
    /// Lists the hosts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Joins hosts in a Docker Swarm as the seed's experiment does: the
    /// first initialises it, the others join; the attachable overlay
    /// rdma-net; the seed's image built here and loaded on each over ssh.
    Swarm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Runs a command inside a host.
    Exec {
        name: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct HostAddArgs {
    pub name: String,
    /// Its address, in 198.18.64.0/24 (198.18.64.1 is this machine's).
    #[arg(long)]
    pub addr: Ipv4Addr,
}

#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Starts the machine's migrosd under a supervisor; prints its pid.
    Start {
        #[arg(long)]
        dev: String,
        #[arg(long)]
        addr: Ipv4Addr,
        #[arg(long)]
        mtu: Option<u32>,
    },
    /// Stops it (admin Shutdown: the supervisor does not restart it).
    Stop {
        #[arg(long)]
        dev: String,
    },
    /// Exits 0 when it answers; prints its pid.
    Status {
        #[arg(long)]
        dev: String,
    },
    /// One admin request (JSON) to it; prints the answer (JSON).
    Admin {
        #[arg(long)]
        dev: String,
        request: String,
    },
    /// Prints the device's QP counters as one JSON line every EVERY_MS
    /// milliseconds until its output closes.
    Watch {
        #[arg(long)]
        dev: String,
        #[arg(long, default_value_t = 100)]
        every_ms: u64,
    },
    /// One step of the runc engine on this machine (JSON in, JSON out;
    /// `engine::runc::ssh`).
    Runc { op: String },
    /// The supervisor: runs migrosd, restarts it when it dies abnormally.
    Keep {
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct NodeAddArgs {
    pub name: String,
    /// The node's address: in 198.18.0.0/16 for a local node (also its
    /// device's GID); for an ssh node, the machine's address its device
    /// uses (default: the ssh host, when it is an address).
    #[arg(long, required_unless_present = "ssh")]
    pub addr: Option<Ipv4Addr>,
    /// Another machine, reached with ssh as root: `[user@]HOST[:PORT]`;
    /// its migrosd runs there, supervised, sockets in its /run/migros.
    #[arg(long, value_name = "[USER@]HOST[:PORT]")]
    pub ssh: Option<String>,
    /// An ssh configuration file (`ssh -F`) for that machine.
    #[arg(long, value_name = "FILE", requires = "ssh")]
    pub ssh_config: Option<PathBuf>,
    /// The device the node's migrosd plays.
    #[arg(long, default_value = "rxe0")]
    pub dev: String,
    /// Active MTU in bytes (256, 512, 1024, 2048 or 4096).
    #[arg(long, value_parser = parse_mtu)]
    pub mtu: Option<u32>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The node to run on.
    #[arg(long)]
    pub node: String,
    /// The container's name.
    #[arg(long)]
    pub name: String,
    /// Its overlay address in 198.19.0.0/16 (default: the first free one).
    #[arg(long)]
    pub ip: Option<Ipv4Addr>,
    /// KEY=VALUE added to its environment.
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Bind-mounts a host directory or file (`:ro` read-only).
    #[arg(short, long = "volume", value_name = "HOST:DEST[:ro]")]
    pub volume: Vec<String>,
    /// The container engine.
    #[arg(long, value_enum, default_value_t = EngineKind::Runc)]
    pub engine: EngineKind,
    /// Docker: the image (default migros-base, which runs the host's /usr
    /// with migros' libibverbs mounted; another image brings its own).
    #[arg(long)]
    pub image: Option<String>,
    /// Docker: the network, with --ip fixed on it (default migros-dock;
    /// across machines an attachable overlay, as the seed's rdma-net).
    #[arg(long)]
    pub network: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    pub name: String,
    /// The destination node.
    #[arg(long)]
    pub to: String,
    /// Pre-copy rounds (CRIU pre-dumps) before the final checkpoint.
    #[arg(long, default_value_t = 0)]
    pub pre_copy: u32,
    /// Keep the source (frozen) until the restore succeeded; a failed
    /// restore lets it continue.
    #[arg(long)]
    pub leave_running: bool,
    /// The container's engine, if you want it checked (its record says
    /// which it is: runc or docker).
    #[arg(long, value_enum)]
    pub engine: Option<EngineKind>,
    /// Keep the image directory after a successful migration.
    #[arg(long)]
    pub keep_image: bool,
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Starts a device daemon (like `rdma link add NAME type rxe`).
    Add(DevAddArgs),
    /// Stops a device daemon.
    Del { name: String },
    /// Lists the devices of the socket directory.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Shows one device (like `ibv_devinfo -v`).
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct DevAddArgs {
    pub name: String,
    /// The device's address (its RoCE v2 GID); UDP port 4791 on it.
    #[arg(long)]
    pub addr: IpAddr,
    /// Active MTU in bytes (256, 512, 1024, 2048 or 4096).
    #[arg(long, value_parser = parse_mtu)]
    pub mtu: Option<u32>,
    /// Test-only faults on the daemon's transmit path:
    /// `drop=P,reorder=P,dup=P[,seed=N]` (any subset, P in 0..=1).
    #[arg(long, value_name = "SPEC")]
    pub fault: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatArgs {
    /// One device (default: all).
    pub name: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// The benchmarks, named as perftest's programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Test {
    SendBw,
    WriteBw,
    ReadBw,
    AtomicBw,
    SendLat,
    WriteLat,
    ReadLat,
}

impl Test {
    pub fn name(self) -> &'static str {
        match self {
            Test::SendBw => "send-bw",
            Test::WriteBw => "write-bw",
            Test::ReadBw => "read-bw",
            Test::AtomicBw => "atomic-bw",
            Test::SendLat => "send-lat",
            Test::WriteLat => "write-lat",
            Test::ReadLat => "read-lat",
        }
    }

    pub fn is_latency(self) -> bool {
        matches!(self, Test::SendLat | Test::WriteLat | Test::ReadLat)
    }
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    pub test: Test,
    /// Server to connect to (client side); without it, wait for a client.
    pub server: Option<IpAddr>,
    /// Device to use.
    #[arg(short = 'd', long = "ib-dev", required_unless_present = "pair")]
    pub device: Option<String>,
    /// Run both ends in this process: the first device is the server's end.
    #[arg(long, num_args = 2, value_names = ["DEV_A", "DEV_B"], conflicts_with_all = ["device", "server"])]
    pub pair: Option<Vec<String>>,
    /// TCP port of the exchange.
    #[arg(short = 'p', long, default_value_t = 18515)]
    pub port: u16,
    /// Message size in bytes (default 65536 for bandwidth, 2 for latency; 8 for atomics).
    #[arg(short = 's', long)]
    pub size: Option<u32>,
    /// Iterations (default 5000 for bandwidth, 1000 for latency).
    #[arg(short = 'n', long, conflicts_with = "duration")]
    pub iters: Option<u64>,
    /// Run for this many seconds instead of a number of iterations.
    #[arg(short = 'D', long)]
    pub duration: Option<f64>,
    /// Queue pairs.
    #[arg(short = 'q', long, default_value_t = 1)]
    pub qps: u32,
    /// Traffic in both directions.
    #[arg(short = 'b', long)]
    pub bidirectional: bool,
    /// Path MTU in bytes (default: the device's MTU).
    #[arg(short = 'm', long, value_parser = parse_mtu)]
    pub mtu: Option<u32>,
    /// Outstanding work requests per QP.
    #[arg(short = 't', long, default_value_t = 128)]
    pub tx_depth: u32,
    /// Check every byte received, written or read, and atomics' exactly-once.
    #[arg(long)]
    pub verify: bool,
    /// One JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Move this end's context to this device's daemon while traffic runs.
    #[arg(long, value_name = "DEV")]
    pub migrate_to: Option<String>,
    /// Fraction of the iterations (or of the duration) after which to migrate.
    #[arg(long, default_value_t = 0.5, value_parser = parse_fraction)]
    pub migrate_at: f64,
}

impl BenchArgs {
    pub fn size(&self) -> u32 {
        match (self.test, self.size) {
            (Test::AtomicBw, _) => 8,
            (_, Some(s)) => s,
            (t, None) if t.is_latency() => 2,
            _ => 65536,
        }
    }

    pub fn iters(&self) -> u64 {
        match self.iters {
            Some(n) => n,
            None if self.test.is_latency() => 1000,
            None => 5000,
        }
    }
}

fn parse_mtu(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|e| format!("{e}"))?;
    match v {
        256 | 512 | 1024 | 2048 | 4096 => Ok(v),
        _ => Err("mtu must be 256, 512, 1024, 2048 or 4096".into()),
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err("fraction must be between 0 and 1".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).expect("arguments parse")
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bench_defaults_follow_perftest() {
        let Command::Bench(b) = parse(&["migros", "bench", "write-bw", "-d", "a"]).command else {
            panic!("not bench");
        };
        assert_eq!(b.test, Test::WriteBw);
        assert_eq!(
            (b.size(), b.iters(), b.qps, b.tx_depth, b.port),
            (65536, 5000, 1, 128, 18515)
        );
        assert!(b.server.is_none() && !b.verify && !b.bidirectional && b.mtu.is_none());

        let Command::Bench(b) =
            parse(&["migros", "bench", "send-lat", "-d", "a", "127.0.0.1"]).command
        else {
            panic!("not bench");
        };
        assert_eq!((b.size(), b.iters()), (2, 1000));
        assert_eq!(b.server, Some("127.0.0.1".parse().unwrap()));

        let Command::Bench(b) =
            parse(&["migros", "bench", "atomic-bw", "-d", "a", "-s", "4096"]).command
        else {
            panic!("not bench");
        };
        assert_eq!(b.size(), 8);
    }

    #[test]
    fn bench_options() {
        let cli = parse(&[
            "migros",
            "--socket-dir",
            "/tmp/x",
            "bench",
            "read-bw",
            "--pair",
            "a",
            "b",
            "-s",
            "4096",
            "-D",
            "2.5",
            "-q",
            "4",
            "-b",
            "-m",
            "1024",
            "-t",
            "16",
            "--verify",
            "--json",
            "--migrate-to",
            "c",
            "--migrate-at",
            "0.25",
            "-p",
            "2000",
        ]);
        assert_eq!(cli.socket_dir, Some(PathBuf::from("/tmp/x")));
        let Command::Bench(b) = cli.command else {
            panic!("not bench")
        };
        assert_eq!(b.pair, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(
            (b.size(), b.duration, b.qps, b.mtu, b.tx_depth, b.port),
            (4096, Some(2.5), 4, Some(1024), 16, 2000)
        );
        assert!(b.bidirectional && b.verify && b.json);
        assert_eq!((b.migrate_to.as_deref(), b.migrate_at), (Some("c"), 0.25));
    }

    #[test]
    fn bench_rejects_bad_combinations() {
        for bad in [
            &["migros", "bench", "write-bw"][..],
            &["migros", "bench", "write-bw", "-d", "a", "--pair", "a", "b"],
            &[
                "migros", "bench", "write-bw", "-d", "a", "-n", "5", "-D", "1",
            ],
            &["migros", "bench", "write-bw", "-d", "a", "-m", "1000"],
            &[
                "migros",
                "bench",
                "write-bw",
                "-d",
                "a",
                "--migrate-at",
                "1.5",
            ],
            &["migros", "bench", "nope", "-d", "a"],
        ] {
            assert!(
                Cli::try_parse_from(bad).is_err(),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn node_run_migrate() {
        let Command::Node {
            command: NodeCommand::Add(a),
        } = parse(&["migros", "node", "add", "a", "--addr", "198.18.1.1"]).command
        else {
            panic!("not node add");
        };
        assert_eq!(
            (a.name.as_str(), a.dev.as_str(), a.mtu),
            ("a", "rxe0", None)
        );
        let Command::Run(r) = parse(&[
            "migros", "run", "--node", "a", "--name", "srv", "-e", "X=1", "--", "sh", "-c",
            "echo hi",
        ])
        .command
        else {
            panic!("not run");
        };
        assert_eq!(r.cmd, ["sh", "-c", "echo hi"]);
        assert_eq!((r.env.as_slice(), r.ip), (&["X=1".to_string()][..], None));
        let Command::Migrate(m) = parse(&[
            "migros",
            "migrate",
            "srv",
            "--to",
            "c",
            "--pre-copy",
            "2",
            "--leave-running",
        ])
        .command
        else {
            panic!("not migrate");
        };
        assert_eq!((m.to.as_str(), m.pre_copy, m.leave_running), ("c", 2, true));
        assert!(Cli::try_parse_from(["migros", "run", "--node", "a", "--name", "x"]).is_err());
        assert!(Cli::try_parse_from(["migros", "node", "add", "a", "--addr", "::1"]).is_err());
    }

    #[test]
    fn dev_add() {
        let Command::Dev {
            command: DevCommand::Add(a),
        } = parse(&[
            "migros",
            "dev",
            "add",
            "d0",
            "--addr",
            "127.0.0.2",
            "--mtu",
            "4096",
            "--fault",
            "drop=0.01,dup=0.001",
        ])
        .command
        else {
            panic!("not dev add");
        };
        assert_eq!(a.name, "d0");
        assert_eq!(a.addr, "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(a.mtu, Some(4096));
        assert_eq!(a.fault.as_deref(), Some("drop=0.01,dup=0.001"));
    }
}
