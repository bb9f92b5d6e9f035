//! `migros`: the command line of migros devices.
//!
//! - `migros dev add|del|list|show` starts and stops `migrosd` daemons (one
//!   per device) and shows them as `ibv_devinfo` does;
//! - `migros stat` prints counters, as `rdma statistic`;
//! - `migros bench …` runs perftest-like benchmarks, with byte-exact
//!   verification and live migration of one end while traffic runs;
//! - `migros env` prints the environment clients need;
//! - `migros node add|list|del` makes nodes (a network namespace with a
//!   migrosd each), `migros run|ps|logs|wait|rm` runs containers on them
//!   (`container`) with an engine, runc or Docker (`engine`: one trait
//!   whose methods are the container operations and the steps of a
//!   migration), and `migros migrate` live-migrates a container to another
//!   node with CRIU (`migration`: the steps in order, the RDMA checks every
//!   engine shares, rollback, the timeline);
//! - nodes may be other machines (`node add --ssh`: `remote`, the machine
//!   a node lives on; `agent`, what `migros __remote` does there);
//!   `migros host add|del|list|exec|swarm` makes simulated machines on
//!   this one (`host`) and the seed's swarm on them (`swarm`);
//! - `migros demo` runs the seed experiment on three nodes and plots the
//!   client's bandwidth with the pause marked (`demo.rs`, `plot.rs`);
//!   `--swarm` runs it as the seed set it up, on three hosts (`swarm`).
//!
//! The socket directory comes from `--socket-dir`, else `MIGROS_SOCKET_DIR`,
//! else `/run/migros`; the chosen one is exported to this process's
//! environment so the verbs library finds the same devices.

mod admin;
mod agent;
mod bench;
mod cli;
mod container;
mod daemon;
mod demo;
mod dev;
mod engine;
mod env;
mod host;
mod migration;
mod node;
mod plot;
mod remote;
mod stat;
mod swarm;
mod sys;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, Command};

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("migros: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Some(dir) = &cli.socket_dir {
        // Single-threaded here: no other thread reads the environment yet.
        std::env::set_var(migros_proto::paths::SOCKET_DIR_ENV, dir);
    }
    let dir = migros_proto::paths::socket_dir();
    match cli.command {
        Command::Dev { command } => dev::run(&dir, command),
        Command::Stat(a) => stat::run(&dir, a),
        Command::Bench(a) => bench::run(a),
        Command::Env => {
            for l in env::lines(&dir, env::lib_dir().as_deref()) {
                println!("{l}");
            }
            Ok(())
        }
        Command::Node { command } => node::run(command),
        Command::Host { command } => host::run(command),
        Command::Remote { command } => agent::run(command),
        Command::Run(a) => container::commands::run(&a),
        Command::Ps { json } => container::commands::ps(json),
        Command::Logs { name } => container::commands::logs(&name),
        Command::Wait { name, timeout } => {
            let code = container::commands::wait(&name, timeout)?;
            std::process::exit(code)
        }
        Command::Rm { force, name } => container::commands::rm(&name, force),
        Command::Migrate(a) => migration::run(&a),
        Command::Demo(a) => demo::run(&a),
        Command::Supervise { name, gen, restore } => {
            engine::runc::supervise::run(&name, gen, restore)
        }
    }
}
