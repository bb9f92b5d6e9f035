//! What a migration touches besides its engine, the same for every engine:
//! the nodes' daemons, here or over ssh (the RDMA identifier check before anything freezes,
//! the tombstones after) and the container records. [`Cluster`] is the
//! seam: [`Local`] reaches the daemons' admin sockets (through `Node::admin`) and writes the
//! records under `/run/migros/state`; tests use their own.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use migros_proto::admin::{AdminRequest, AdminResponse, CmIds, SessionIds};

use crate::container::Container;
use crate::engine::Move;
use crate::node::Node;

/// The nodes' daemons and the records, as a migration uses them.
pub trait Cluster {
    /// The RDMA sessions of process `pid` on `node`'s daemon (`None`: the
    /// daemon cannot tell).
    fn identifiers(&self, node: &Node, pid: i32) -> Result<Option<Vec<SessionIds>>>;
    /// Fails unless `node`'s daemon can take these identifiers.
    fn check_identifiers(&self, node: &Node, sessions: &[SessionIds]) -> Result<()>;
    /// The connection-manager state of process `pid`'s librdmacm
    /// connections on `node`'s daemon (`None`: the daemon cannot tell).
    fn cm_identifiers(&self, node: &Node, pid: i32) -> Result<Option<Vec<CmIds>>>;
    /// Fails unless `node`'s connection manager can take these.
    fn check_cm_identifiers(&self, node: &Node, cm: &[CmIds]) -> Result<()>;
    /// The QPNs with a tombstone on `node`'s daemon (`None`: it does not say).
    fn tombstones(&self, node: &Node) -> Option<Vec<u32>>;
    /// Tells `node`'s daemon that these QPs now live at `to`.
    fn forward_tombstones(&self, node: &Node, qpns: &[u32], to: IpAddr) -> Result<()>;
    /// Writes a container's record.
    fn save(&self, record: &Container) -> Result<()>;
}

/// The nodes of this machine: admin sockets, record files.
pub struct Local;

impl Cluster for Local {
    fn identifiers(&self, node: &Node, pid: i32) -> Result<Option<Vec<SessionIds>>> {
        let req = AdminRequest::Identifiers { pid: pid as u32 };
        let resp = node.admin(&req).with_context(|| {
            format!(
                "asking node {}'s daemon for pid {pid}'s identifiers",
                node.name
            )
        })?;
        match resp {
            AdminResponse::Error { errno, .. } if errno == nix::errno::Errno::ENOSYS as i32 => {
                Ok(None)
            }
            AdminResponse::Error { errno, message } => bail!(
                "node {}: Identifiers for pid {pid}: {message} (errno {errno})",
                node.name
            ),
            AdminResponse::Identifiers(ids) => Ok(Some(ids)),
            r => bail!("node {}: unexpected answer {r:?} to Identifiers", node.name),
        }
    }

    fn check_identifiers(&self, node: &Node, sessions: &[SessionIds]) -> Result<()> {
        admin_ok(
            node,
            &AdminRequest::CheckIdentifiers(sessions.to_vec()),
            "CheckIdentifiers",
        )
    }

    fn cm_identifiers(&self, node: &Node, pid: i32) -> Result<Option<Vec<CmIds>>> {
        let req = AdminRequest::CmIdentifiers { pid: pid as u32 };
        // A daemon that predates the request cannot decode it: it answers
        // an error or closes the connection.
        match node.admin(&req) {
            Ok(AdminResponse::CmIdentifiers(ids)) => Ok(Some(ids)),
            Ok(AdminResponse::Error { errno, .. }) if errno != nix::errno::Errno::ENOENT as i32 => {
                Ok(None)
            }
            Ok(AdminResponse::Error { errno, message }) => bail!(
                "node {}: CmIdentifiers for pid {pid}: {message} (errno {errno})",
                node.name
            ),
            Ok(r) => bail!(
                "node {}: unexpected answer {r:?} to CmIdentifiers",
                node.name
            ),
            Err(_) => Ok(None),
        }
    }

    fn check_cm_identifiers(&self, node: &Node, cm: &[CmIds]) -> Result<()> {
        admin_ok(
            node,
            &AdminRequest::CheckCmIdentifiers(cm.to_vec()),
            "CheckCmIdentifiers",
        )
    }

    fn tombstones(&self, node: &Node) -> Option<Vec<u32>> {
        match node.admin(&AdminRequest::Status).ok()? {
            AdminResponse::Status(s) => Some(s.tombstones),
            _ => None,
        }
    }

    fn forward_tombstones(&self, node: &Node, qpns: &[u32], to: IpAddr) -> Result<()> {
        let req = AdminRequest::ForwardTombstones {
            qpns: qpns.to_vec(),
            to,
        };
        match node.admin(&req)? {
            AdminResponse::Error { errno, message } => bail!("{message} (errno {errno})"),
            _ => Ok(()),
        }
    }

    fn save(&self, record: &Container) -> Result<()> {
        record.save()
    }
}

/// The RDMA sessions of a container's processes on the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sessions {
    /// `None`: the source's daemon does not answer `Identifiers`.
    pub found: Option<Vec<SessionIds>>,
    /// How many processes were asked about.
    pub processes: usize,
    /// librdmacm connections (connection-manager owners) checked.
    pub cm: usize,
}

impl Sessions {
    /// Every QPN of every session.
    pub fn qpns(&self) -> Vec<u32> {
        self.found
            .iter()
            .flatten()
            .flat_map(|s| s.qpns.iter().copied())
            .collect()
    }

    /// The timeline's detail of the check.
    pub fn detail(&self, m: &Move) -> String {
        match &self.found {
            None => format!(
                "skipped: node {}'s daemon does not answer Identifiers",
                m.src.name
            ),
            Some(s) if s.is_empty() => {
                format!("no RDMA sessions in {} process(es)", self.processes)
            }
            Some(s) if self.cm > 0 => format!(
                "{} session(s), {} QP(s), {} rdma_cm connection(s) free on {}",
                s.len(),
                self.qpns().len(),
                self.cm,
                m.dst.name
            ),
            Some(s) => format!(
                "{} session(s), {} QP(s) free on {}",
                s.len(),
                self.qpns().len(),
                m.dst.name
            ),
        }
    }
}

/// The RDMA identifiers of `pids` on the source must be free on the
/// destination; checked before anything freezes.
pub fn check_identifiers(cluster: &dyn Cluster, m: &Move, pids: &[i32]) -> Result<Sessions> {
    let mut found = Vec::new();
    for &pid in pids {
        match cluster.identifiers(&m.src, pid)? {
            Some(ids) => found.extend(ids),
            None => {
                return Ok(Sessions {
                    found: None,
                    processes: pids.len(),
                    cm: 0,
                })
            }
        }
    }
    if !found.is_empty() {
        if m.src.dev != m.dst.dev {
            // The plugin reconnects to the same socket path (/run/migros/<dev>.sock).
            bail!(
                "the container uses device {} of node {}, node {} has {}: nothing was frozen",
                m.src.dev,
                m.src.name,
                m.dst.name,
                m.dst.dev
            );
        }
        cluster.check_identifiers(&m.dst, &found).map_err(|e| {
            anyhow!(
                "node {} cannot take the container's RDMA identifiers: {e:#}; nothing was frozen",
                m.dst.name
            )
        })?;
    }
    // The connection managers' identifiers (owners, comm IDs, listeners,
    // port bindings) too: a clash found after the freeze would leave a
    // dumped process that cannot be restored.
    let mut cm = Vec::new();
    for &pid in pids {
        match cluster.cm_identifiers(&m.src, pid)? {
            Some(ids) => cm.extend(ids),
            None => break,
        }
    }
    if !cm.is_empty() {
        if m.src.dev != m.dst.dev {
            bail!(
                "the container uses device {} of node {}, node {} has {}: nothing was frozen",
                m.src.dev,
                m.src.name,
                m.dst.name,
                m.dst.dev
            );
        }
        cluster.check_cm_identifiers(&m.dst, &cm).map_err(|e| {
            anyhow!(
                "node {} cannot take the container's rdma_cm state: {e:#}; nothing was frozen",
                m.dst.name
            )
        })?;
    }
    Ok(Sessions {
        found: Some(found),
        processes: pids.len(),
        cm: cm.len(),
    })
}

/// Tells the source daemon where the moved QPs went: `qpns` (identified
/// before the freeze) and every tombstone that appeared on the source
/// since `before` (the daemon makes them when the dumped process's
/// connection closes, which may take a moment). The timeline's note.
pub fn forward_tombstones(
    cluster: &dyn Cluster,
    m: &Move,
    mut qpns: Vec<u32>,
    before: Option<&[u32]>,
) -> Option<String> {
    if let Some(before) = before {
        for _ in 0..25 {
            let now = cluster.tombstones(&m.src).unwrap_or_default();
            let fresh: Vec<u32> = now.into_iter().filter(|q| !before.contains(q)).collect();
            let complete = qpns.iter().all(|q| fresh.contains(q));
            for q in fresh {
                if !qpns.contains(&q) {
                    qpns.push(q);
                }
            }
            if complete {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if qpns.is_empty() {
        return None;
    }
    let to = IpAddr::V4(m.dst.addr);
    Some(match cluster.forward_tombstones(&m.src, &qpns, to) {
        Ok(()) => format!("{} QP(s) forwarded to {to}", qpns.len()),
        Err(e) => format!("forwarding tombstones failed: {e:#}"),
    })
}

/// Sends `req` (named `what` in errors) to `node`'s daemon, which must
/// answer Ok; its error answer becomes this error.
fn admin_ok(node: &Node, req: &AdminRequest, what: &str) -> Result<()> {
    match node.admin(req)? {
        AdminResponse::Ok => Ok(()),
        AdminResponse::Error { errno, message } => bail!("{message} (errno {errno})"),
        r => bail!("node {}: unexpected answer {r:?} to {what}", node.name),
    }
}
