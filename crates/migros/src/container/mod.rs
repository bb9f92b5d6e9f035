//! Containers as migros records them, whatever engine runs them.
//!
//! A container `<name>` keeps its state in `/run/migros/state/containers/<name>/`:
//! `container.json` (its [`Container`] record, which names its engine),
//! `lib/` (its own copy of migros' libibverbs, see [`snapshot_lib`]) and
//! whatever its engine keeps there (see `engine::runc`, `engine::docker`).
//! The record is read once per command and opened with its engine
//! ([`crate::engine::open`]); the commands themselves (`migros
//! run|ps|logs|wait|rm`) are in [`commands`].

pub mod commands;
mod volume;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

pub use volume::Volume;

use crate::engine::EngineKind;
use crate::sys;

/// What `run` recorded (and migrations update).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    /// What runs it (records written before engines had a field: runc).
    #[serde(default)]
    pub engine: EngineKind,
    pub node: String,
    pub ip: Ipv4Addr,
    pub args: Vec<String>,
    pub env: Vec<String>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// The current incarnation (0 at `run`, +1 per migration).
    pub gen: u32,
    pub state: State,
    /// Docker: its image and network (`None`: migros-base, migros-dock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// Where a container is in its life, as far as migrations go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Started (or starting, or exited: its engine says which).
    Active,
    /// A migration is under way.
    Migrating,
    /// A migration failed after the checkpoint: the image is kept here.
    Lost { image: PathBuf, error: String },
}

/// What `ps` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Starting,
    Running(i32),
    Exited(i32),
    Failed(String),
    Migrating,
    Lost(String),
}

impl Status {
    pub fn label(&self) -> String {
        match self {
            Status::Starting => "starting".into(),
            Status::Running(_) => "running".into(),
            Status::Exited(c) => format!("exited({c})"),
            Status::Failed(_) => "failed".into(),
            Status::Migrating => "migrating".into(),
            Status::Lost(_) => "lost".into(),
        }
    }

    /// What the record alone says (`None`: ask the engine).
    pub fn from_state(state: &State) -> Option<Status> {
        match state {
            State::Active => None,
            State::Migrating => Some(Status::Migrating),
            State::Lost { error, .. } => Some(Status::Lost(error.clone())),
        }
    }
}

pub fn dir(name: &str) -> PathBuf {
    sys::state_dir().join("containers").join(name)
}

fn record_path(name: &str) -> PathBuf {
    dir(name).join("container.json")
}

impl Container {
    pub fn save(&self) -> Result<()> {
        sys::write_json(&record_path(&self.name), self)
    }

    /// The same record in another state.
    pub fn with_state(&self, state: State) -> Container {
        Container {
            state,
            ..self.clone()
        }
    }
}

pub fn load(name: &str) -> Result<Container> {
    let p = record_path(name);
    if !p.exists() {
        bail!("container {name} not found (see `migros ps`)");
    }
    sys::read_json(&p)
}

/// Every container, sorted by name.
pub fn all() -> Vec<Container> {
    sys::read_records(&sys::state_dir().join("containers"), "container.json")
}

/// The container's own copy of migros' libibverbs directory (hard links
/// where possible), made once: a rebuild of `target/ibverbs` replaces the
/// files, and CRIU cannot dump a process mapping a deleted library.
/// `None` when the library is not built.
pub fn snapshot_lib(name: &str) -> Result<Option<PathBuf>> {
    let snap = dir(name).join("lib");
    if snap.is_dir() {
        return Ok(Some(snap));
    }
    let Some(src) = crate::env::lib_dir() else {
        return Ok(None);
    };
    let tmp = dir(name).join("lib.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    for e in std::fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))? {
        let e = e?;
        if !e.file_type()?.is_file() {
            continue;
        }
        let to = tmp.join(e.file_name());
        if std::fs::hard_link(e.path(), &to).is_err() {
            std::fs::copy(e.path(), &to)
                .with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    std::fs::rename(&tmp, &snap)?;
    Ok(Some(snap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_without_an_engine_are_runc() {
        let old = r#"{"name":"srv","node":"a","ip":"198.19.1.1","args":["sleep","1"],
            "env":[],"gen":2,"state":"active"}"#;
        let c: Container = serde_json::from_str(old).unwrap();
        assert_eq!(
            (c.engine, c.gen, &c.state),
            (EngineKind::Runc, 2, &State::Active)
        );
        let lost = c.with_state(State::Lost {
            image: "/i".into(),
            error: "e".into(),
        });
        let back: Container = serde_json::from_str(&serde_json::to_string(&lost).unwrap()).unwrap();
        assert_eq!(back, lost);
        assert_eq!(
            Status::from_state(&back.state).map(|s| s.label()),
            Some("lost".to_string())
        );
    }
}
