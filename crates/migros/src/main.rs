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
//!   with runc (or Docker: `--engine docker`, see `docker.rs`), and
//!   `migros migrate` live-migrates a container to another node with CRIU;
//! - `migros demo` runs the seed experiment on three nodes and plots the
//!   client's bandwidth with the pause marked (`demo.rs`, `plot.rs`).
//!
//! The socket directory comes from `--socket-dir`, else `MIGROS_SOCKET_DIR`,
//! else `/run/migros`; the chosen one is exported to this process's
//! environment so the verbs library finds the same devices.

mod admin;
mod bench;
mod cli;
mod container;
mod daemon;
mod demo;
mod dev;
mod docker;
mod env;
mod migrate;
mod node;
mod plot;
mod stat;
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
        Command::Run(a) if a.engine == cli::Engine::Docker => {
            docker::run(&a.node, &a.name, a.ip, &a.env, &a.volume, &a.cmd)
        }
        Command::Run(a) => container::run(&a),
        Command::Ps { json } => {
            container::ps(json)?;
            if !json {
                for l in docker::ps_lines() {
                    println!("{l}");
                }
            }
            Ok(())
        }
        Command::Logs { name } if docker::exists(&name) => docker::logs(&name),
        Command::Logs { name } => container::logs(&name),
        Command::Wait { name, timeout } => {
            let code = if docker::exists(&name) {
                docker::wait(&name, timeout)?
            } else {
                container::wait(&name, timeout)?
            };
            std::process::exit(code)
        }
        Command::Rm { force, name } if docker::exists(&name) => docker::rm(&name, force),
        Command::Rm { force, name } => container::rm(&name, force),
        Command::Migrate(a) => migrate::run(&a),
        Command::Demo(a) => demo::run(&a),
        Command::Supervise { name, gen, restore } => container::supervise::run(&name, gen, restore),
    }
}
