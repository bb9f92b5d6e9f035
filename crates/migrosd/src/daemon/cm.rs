//! librdmacm's connections to the connection manager ([`crate::cm`]): the
//! `CmHello` that opens one, its requests (each answered in order, then
//! the events it caused), the agent's events delivered to their owners,
//! its timers, and the end of a connection (everything its process had in
//! the agent goes, the peers are told).

use migros_proto::admin::{AdminResponse, CmIds, CmImage};
use migros_proto::cm::{CmDown, CmRequest};
use migros_proto::counters::DeviceCounters;
use migros_proto::msg::Response;

use super::Daemon;
use crate::conn::ConnKind;
use crate::errno::ReqError;

impl Daemon {
    /// Connection `token` said `CmHello`: it becomes a librdmacm
    /// connection, the owner of its CM objects.
    pub(super) fn cm_hello(&mut self, token: usize, inode: u64) -> Result<Response, ReqError> {
        let cm = &self.cm;
        let Some(owner) = self.ids.u64(|v| cm.has_owner(v)) else {
            return Err(ReqError::new(libc::ENOMEM, "no free owner id"));
        };
        self.cm.attach(token, owner);
        if let Some(c) = self.conns.get_mut(&token) {
            c.kind = ConnKind::Cm(owner);
            c.inode = inode;
        }
        tracing::info!(owner, inode, "librdmacm connection");
        Ok(Response::Welcome {
            session: owner,
            device: self.info.clone(),
        })
    }

    /// Handles the next whole frame of librdmacm connection `token`;
    /// false when there is none (or the connection must close).
    pub(super) fn cm_frame(&mut self, token: usize, owner: u64) -> bool {
        let Some(conn) = self.conns.get_mut(&token) else {
            return false;
        };
        let req = match conn.reader.next_message::<CmRequest>() {
            Ok(Some(req)) => req,
            Ok(None) => return false,
            Err(e) => {
                tracing::info!(token, error = %e, "malformed frame: disconnecting the client");
                conn.closing = true;
                return false;
            }
        };
        let resp = self.cm.request(self.now, owner, req);
        if let Some(c) = self.conns.get_mut(&token) {
            let _ = c.send(&CmDown::Reply(resp));
        }
        // The events it caused (a REJ to a local REQ, …) follow the
        // answer; what the agent has to send goes out with this turn's
        // transmit.
        self.deliver_cm_events();
        true
    }

    /// Connection `token` of `owner` closed (its process ended, or was
    /// dumped: a checkpointed owner's state moved away).
    pub(super) fn cm_closed(&mut self, token: usize, owner: u64) {
        self.cm.detach(self.now, token, owner);
        self.deliver_cm_events();
    }

    // ---- migration (CRIU) ----

    /// The librdmacm connections of process `pid`: (token, owner).
    fn cm_conns_of(&self, pid: i32) -> Vec<(usize, u64)> {
        self.conns
            .iter()
            .filter(|(_, c)| c.pid == pid && !c.dead)
            .filter_map(|(t, c)| match c.kind {
                ConnKind::Cm(owner) => Some((*t, owner)),
                _ => None,
            })
            .collect()
    }

    /// The sessions of `pid` are held (`held`) or run again: so are its
    /// librdmacm connections (nothing is written to them while held); run
    /// again, a checkpoint of them rolls back.
    pub(super) fn hold_cm_of(&mut self, pid: i32, held: bool) {
        for (token, owner) in self.cm_conns_of(pid) {
            if let Some(c) = self.conns.get_mut(&token) {
                c.held = held;
            }
            if !held && self.cm.is_checkpointed(owner) {
                self.cm.roll_back(self.now, owner);
                tracing::info!(pid, owner, "cm checkpoint rolled back");
            }
        }
    }

    /// Admin CheckpointCm: handles what the frozen process already sent
    /// on its librdmacm connections, then images each (nothing changes
    /// until the connection closes).
    pub(super) fn checkpoint_cm_pid(&mut self, pid: u32) -> AdminResponse {
        let Ok(pid) = i32::try_from(pid) else {
            return AdminResponse::CmCheckpointed(Vec::new());
        };
        let path = self
            .reg
            .of_pid(pid)
            .into_iter()
            .filter_map(|sid| self.reg.get(sid))
            .map(|s| s.path.clone())
            .find(|p| !p.is_empty())
            .unwrap_or_else(|| format!("/run/migros/{}.sock", self.info.name));
        let mut images = Vec::new();
        for (token, owner) in self.cm_conns_of(pid) {
            if self.cm.is_checkpointed(owner) {
                continue;
            }
            if let Some(c) = self.conns.get_mut(&token) {
                c.held = true;
                if c.fill().is_err() {
                    c.dead = true;
                }
            }
            // Requests already sent are answered (into the held output).
            self.process_frames(token);
            let Some(c) = self.conns.get(&token) else {
                return admin_error(libc::ENOENT, format!("cm connection of pid {pid} closed"));
            };
            let inbox = c.reader.unconsumed().to_vec();
            let (inode, outbox) = (c.inode, c.outbox().to_vec());
            let snap = self.cm.checkpoint(self.now, owner);
            let qpns = snap.conns.iter().map(|c| c.local_qpn).collect();
            let conns = snap.conns.len();
            let image = match crate::image::cm::encode(owner, snap, inbox) {
                Ok(i) => i,
                Err(e) => {
                    self.cm.roll_back(self.now, owner);
                    return admin_error(libc::EIO, format!("cm image: {e}"));
                }
            };
            tracing::info!(pid, owner, conns, "cm state checkpointed");
            images.push(CmImage {
                owner,
                device: self.info.name.clone(),
                path: path.clone(),
                inode,
                image,
                outbox,
                qpns,
            });
        }
        AdminResponse::CmCheckpointed(images)
    }

    /// Admin CmIdentifiers: the CM state of each librdmacm connection of
    /// `pid`, as a checkpoint would take it (nothing changes, nothing is
    /// held): what the destination checks before anything freezes.
    pub(super) fn cm_identifiers_of_pid(&self, pid: u32) -> AdminResponse {
        let Ok(pid) = i32::try_from(pid) else {
            return AdminResponse::CmIdentifiers(Vec::new());
        };
        let mut list = Vec::new();
        for (_, owner) in self.cm_conns_of(pid) {
            let snap = self.cm.snapshot(self.now, owner);
            match serde_json::to_vec(&snap) {
                Ok(snapshot) => list.push(CmIds { owner, snapshot }),
                Err(e) => return admin_error(libc::EIO, format!("cm snapshot: {e}")),
            }
        }
        AdminResponse::CmIdentifiers(list)
    }

    /// Admin CheckCmIdentifiers: whether this device's connection manager
    /// could restore each of these (nothing changes).
    pub(super) fn check_cm_identifiers(&self, list: &[CmIds]) -> AdminResponse {
        for ids in list {
            let snap: migros_cm::migrate::CmSnapshot = match serde_json::from_slice(&ids.snapshot) {
                Ok(s) => s,
                Err(e) => {
                    return admin_error(
                        libc::EINVAL,
                        format!("cm state of owner {:#x} refused: {e}", ids.owner),
                    )
                }
            };
            if let Err(e) = self.cm.check_restore(ids.owner, &snap) {
                return admin_error(
                    e.errno(),
                    format!(
                        "the connection manager cannot take owner {:#x}'s state: {e}",
                        ids.owner
                    ),
                );
            }
        }
        AdminResponse::Ok
    }

    /// RestoreCm on connection `token`: the CM state of `owner` from
    /// `image`, with the same identifiers. Nothing changes when refused.
    pub(super) fn restore_cm(
        &mut self,
        token: usize,
        owner: u64,
        inode: u64,
        image: &[u8],
    ) -> Result<Response, ReqError> {
        self.authorise_restore(token)?;
        let img = crate::image::cm::decode(image)
            .map_err(|e| ReqError::new(libc::EINVAL, format!("cm image refused: {e}")))?;
        if img.owner != owner {
            return Err(ReqError::new(
                libc::EINVAL,
                format!("cm image of owner {:#x}, restored as {owner:#x}", img.owner),
            ));
        }
        self.cm
            .restore(self.now, token, owner, &img.cm)
            .map_err(|e| ReqError::new(e.errno(), format!("cm state refused: {e}")))?;
        if let Some(c) = self.conns.get_mut(&token) {
            c.kind = ConnKind::Cm(owner);
            c.inode = inode;
            if !img.inbox.is_empty() {
                let rest = c.reader.unconsumed().to_vec();
                c.reader = migros_proto::FrameReader::new();
                c.reader.push(&img.inbox);
                c.reader.push(&rest);
            }
        }
        tracing::info!(
            owner,
            inode,
            binds = img.cm.binds.len(),
            listens = img.cm.listens.len(),
            conns = img.cm.conns.len(),
            "cm state restored"
        );
        self.deliver_cm_events();
        Ok(Response::Welcome {
            session: owner,
            device: self.info.clone(),
        })
    }

    /// Runs the agent's due timers (resends, time-wait) and delivers what
    /// they caused.
    pub(super) fn cm_tick(&mut self) {
        self.cm.handle_timeout(self.now);
        self.deliver_cm_events();
    }

    /// Queues the agent's events on their owners' connections.
    fn deliver_cm_events(&mut self) {
        while let Some((token, ev)) = self.cm.poll_event() {
            if let Some(c) = self.conns.get_mut(&token) {
                let _ = c.send(&CmDown::Event(ev));
            }
        }
    }

    /// The device's counters, QP1's datagrams and the memory watchdog's
    /// included.
    pub(super) fn link_counters(&self) -> DeviceCounters {
        DeviceCounters {
            watchdog_stalls: self.watchdog.stalls(),
            watchdog_aborts: self.watchdog.aborts(),
            ..self.cm.add_link_counters(self.device.counters())
        }
    }
}

fn admin_error(errno: i32, message: String) -> AdminResponse {
    AdminResponse::Error { errno, message }
}
