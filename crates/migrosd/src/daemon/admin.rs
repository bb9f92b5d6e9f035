//! The admin socket's requests (root only; see `migros_proto::admin`).
//!
//! Status, counters and shutdown are answered here; the requests that act
//! on a client process by pid (the CRIU plugin's Pause, Checkpoint,
//! Resume, and Identifiers / CheckIdentifiers / ForwardTombstones /
//! ReleaseTombstones for `migros migrate`) are dispatched to
//! [`super::criu`]. A pid with no session here is answered with zero
//! sessions, never an error: the plugin asks every daemon.

use migros_proto::admin::{
    AdminRequest, AdminResponse, DaemonStatus, QpStats, SessionInfo, ADMIN_PROTOCOL_VERSION,
};

use crate::conn::ConnKind;
use crate::daemon::Daemon;

impl Daemon {
    pub(super) fn on_admin(&mut self, req: AdminRequest) -> AdminResponse {
        match req {
            AdminRequest::Status => AdminResponse::Status(self.status()),
            AdminRequest::Stats => AdminResponse::Stats {
                device: self.link_counters(),
                qps: self.qp_stats(),
            },
            AdminRequest::Shutdown => {
                tracing::info!("shutdown requested on the admin socket");
                self.shutdown = true;
                AdminResponse::Ok
            }
            AdminRequest::Pause { pid } => self.pause_pid(pid),
            AdminRequest::Checkpoint { pid } => self.checkpoint_pid(pid),
            AdminRequest::Resume { pid } => self.resume_pid(pid),
            AdminRequest::Identifiers { pid } => self.identifiers_of_pid(pid),
            AdminRequest::CheckIdentifiers(list) => self.check_identifiers(&list),
            AdminRequest::ForwardTombstones { qpns, to } => {
                self.forward_tombstones_admin(&qpns, to)
            }
            AdminRequest::ReleaseTombstones { qpns } => self.release_tombstones(&qpns),
            AdminRequest::CheckpointCm { pid } => self.checkpoint_cm_pid(pid),
            AdminRequest::CmIdentifiers { pid } => self.cm_identifiers_of_pid(pid),
            AdminRequest::CheckCmIdentifiers(list) => self.check_cm_identifiers(&list),
        }
    }

    fn status(&self) -> DaemonStatus {
        let sessions = self
            .reg
            .sessions()
            .map(|s| SessionInfo {
                session: s.id(),
                pid: u32::try_from(s.pid).unwrap_or(0),
                owner: s.owner(),
                qps: count(s.objects().qps()),
                cqs: count(s.objects().cqs()),
                mrs: count(s.objects().mrs()),
                channels: count(self.conns.values().filter(
                    |c| matches!(c.kind, ConnKind::Channel { session, .. } if session == s.id()),
                )),
                checkpointed: s.checkpointed,
            })
            .collect();
        DaemonStatus {
            version: ADMIN_PROTOCOL_VERSION,
            device: self.info.clone(),
            pid: std::process::id(),
            uptime_secs: self.uptime().as_secs(),
            sessions,
            counters: self.link_counters(),
            tombstones: self.device.tombstones(),
        }
    }

    fn qp_stats(&self) -> Vec<QpStats> {
        self.device
            .qpns()
            .into_iter()
            .filter_map(|qpn| {
                let counters = self.device.qp_counters(qpn)?;
                let attr = self.device.query_qp(qpn).ok()?;
                let (owner, pid) = self.reg.qp(qpn).map_or((0, 0), |(s, _)| {
                    (s.owner(), u32::try_from(s.pid).unwrap_or(0))
                });
                Some(QpStats {
                    qpn,
                    owner,
                    pid,
                    state: attr.qp_state,
                    dest: attr.dest_addr.map(|a| (a, attr.dest_qp_num)),
                    counters,
                })
            })
            .collect()
    }
}

fn count<T>(it: impl Iterator<Item = T>) -> u32 {
    u32::try_from(it.count()).unwrap_or(u32::MAX)
}
