//! What one end of a benchmark run keeps: its endpoint, the side channel,
//! its roles, the migration trigger, completion gaps and verification
//! results; and the steps every test shares (passive waiting, the stop
//! barrier).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::endpoint::Endpoint;
use super::exchange::{Ctrl, MigrationInfo, Msg, Params, QpInfo, Summary};
use crate::cli::Test;

/// How long an active loop may go without any completion or message.
pub const STALL: Duration = Duration::from_secs(30);
/// How long a passive end waits for the peer's next message.
pub const PASSIVE_WAIT: Duration = Duration::from_secs(600);

/// What an end does in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Posts the measured operations.
    pub requester: bool,
    /// Takes part in the data path as target (receives, checks batches).
    pub responder_active: bool,
}

impl Roles {
    pub fn of(p: &Params, server: bool) -> Roles {
        match p.test {
            Test::SendLat | Test::WriteLat => Roles {
                requester: true,
                responder_active: true,
            },
            Test::ReadLat => Roles {
                requester: !server,
                responder_active: false,
            },
            t => Roles {
                requester: !server || p.bidir,
                responder_active: (server || p.bidir)
                    && (t == Test::SendBw || (t == Test::WriteBw && p.verify)),
            },
        }
    }

    /// Whether this end checks the data of a verified run (see
    /// `Summary::verify_expected`).
    pub fn checks(self, test: Test) -> bool {
        match test {
            Test::SendLat | Test::WriteLat => true,
            Test::ReadLat | Test::ReadBw | Test::AtomicBw => self.requester,
            Test::SendBw | Test::WriteBw => self.responder_active,
        }
    }

    /// Whether this end sees its own progress (else the peer tells it).
    pub fn self_driven(self) -> bool {
        self.requester || self.responder_active
    }
}

/// When and where to migrate this end, and when to tell the peer.
#[derive(Debug, Default)]
pub struct Migrator {
    pub to: Option<String>,
    pub at: f64,
    pub self_driven: bool,
    pub done: Option<MigrationInfo>,
    /// The peer migrates at this fraction but cannot see progress itself.
    pub tell_peer_at: Option<f64>,
    pub told: bool,
}

/// The longest gap between consecutive completions.
#[derive(Debug, Default)]
pub struct Gaps {
    last: Option<Instant>,
    pub max: Option<Duration>,
}

impl Gaps {
    pub fn completion(&mut self, now: Instant) {
        if let Some(l) = self.last {
            let g = now.saturating_duration_since(l);
            if self.max.is_none_or(|m| g > m) {
                self.max = Some(g);
            }
        }
        self.last = Some(now);
    }
}

pub struct Side {
    pub params: Params,
    pub roles: Roles,
    pub peer_roles: Roles,
    pub ep: Endpoint,
    pub peer: Vec<QpInfo>,
    pub ctrl: Ctrl,
    pub mig: Migrator,
    pub gaps: Gaps,
    /// `Some` once this end checked something; the first failure is kept.
    pub verified: Option<Result<(), String>>,
    /// The peer's `Finished` (operations per QP).
    pub peer_ops: Option<Vec<u64>>,
    /// The peer's `Done`, when it came before this end finished.
    peer_done: Option<Summary>,
    last_ctrl_poll: Instant,
    /// Reads this end's counters while the peer migrates (`steady`).
    pub sampler: Option<super::steady::Sampler>,
}

impl Side {
    pub fn new(
        params: Params,
        server: bool,
        ep: Endpoint,
        peer: Vec<QpInfo>,
        ctrl: Ctrl,
        mig: Migrator,
    ) -> Side {
        Side {
            roles: Roles::of(&params, server),
            peer_roles: Roles::of(&params, !server),
            params,
            ep,
            peer,
            ctrl,
            mig,
            gaps: Gaps::default(),
            verified: None,
            peer_ops: None,
            peer_done: None,
            last_ctrl_poll: Instant::now(),
            sampler: None,
        }
    }

    /// Records a verification result (the first failure wins).
    pub fn checked(&mut self, r: Result<(), String>) {
        match (&self.verified, r) {
            (Some(Err(_)), _) => {}
            (_, r) => self.verified = Some(r),
        }
    }

    /// Progress of this end as a fraction of the run: migrates this end or
    /// tells the peer when the moment has come.
    pub fn progress(&mut self, fraction: f64) -> Result<()> {
        if self.mig.self_driven && self.mig.done.is_none() && fraction >= self.mig.at {
            self.migrate()?;
        }
        if let Some(at) = self.mig.tell_peer_at {
            if !self.mig.told && fraction >= at {
                self.mig.told = true;
                self.ctrl.send(&Msg::Progress)?;
            }
        }
        Ok(())
    }

    fn migrate(&mut self) -> Result<()> {
        let Some(to) = self.mig.to.clone() else {
            return Ok(());
        };
        if self.mig.done.is_some() {
            return Ok(());
        }
        let r = self
            .ep
            .ctx
            .migrate_to(&to)
            .with_context(|| format!("migrating to {to}"))?;
        self.mig.done = Some(MigrationInfo {
            from: r.from,
            to: r.to,
            downtime_ms: r.downtime.as_secs_f64() * 1e3,
            image_bytes: r.image_bytes,
            qpns: r.qpns,
        });
        Ok(())
    }

    /// Handles one message from the peer during a run.
    fn handle(&mut self, m: Msg) -> Result<()> {
        match m {
            Msg::Progress => self.migrate(),
            Msg::Finished { ops } => {
                self.peer_ops = Some(ops);
                Ok(())
            }
            // The peer is through while this end still checks what it got.
            Msg::Done(s) => {
                self.peer_done = Some(*s);
                Ok(())
            }
            m => bail!("unexpected message from the bench peer during the run: {m:?}"),
        }
    }

    /// Looks at the side channel, at most once a millisecond.
    pub fn poll_ctrl(&mut self, now: Instant) -> Result<bool> {
        self.sample(now)?;
        if now.duration_since(self.last_ctrl_poll) < Duration::from_millis(1) {
            return Ok(false);
        }
        self.last_ctrl_poll = now;
        match self.ctrl.try_recv()? {
            Some(m) => {
                self.handle(m)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Reads this end's counters if a reading is due (see `steady`).
    fn sample(&mut self, now: Instant) -> Result<()> {
        let Some(sampler) = self.sampler.as_mut().filter(|s| s.due(now)) else {
            return Ok(());
        };
        let (_, qps) = self.ep.ctx.stats().context("reading counters")?;
        let (mut bytes, mut resumes, mut pause) = (0, 0, 0);
        for (_, c) in &qps {
            bytes += c.tx_bytes + c.rx_bytes;
            resumes += c.resumes;
            pause = pause.max(c.last_pause_nanos);
        }
        sampler.record(now, bytes, resumes, pause);
        Ok(())
    }

    /// Waits for the peer's `Finished` (handling `Progress` on the way).
    pub fn wait_peer_finished(&mut self) -> Result<Vec<u64>> {
        // Reading counters meanwhile: look at the side channel between
        // readings instead of blocking on it.
        let deadline = Instant::now() + PASSIVE_WAIT;
        while self.peer_ops.is_none() && self.sampler.is_some() {
            let now = Instant::now();
            self.sample(now)?;
            match self.ctrl.try_recv()? {
                Some(m) => self.handle(m)?,
                None if now >= deadline => {
                    bail!("bench peer sent nothing for {PASSIVE_WAIT:?}")
                }
                None => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        while self.peer_ops.is_none() {
            let m = self.ctrl.recv(PASSIVE_WAIT)?;
            self.handle(m)?;
        }
        Ok(self.peer_ops.clone().unwrap_or_default())
    }

    /// Tells the peer this end's requester is done.
    pub fn finished(&mut self, ops: Vec<u64>) -> Result<()> {
        self.ctrl.send(&Msg::Finished { ops })
    }

    /// The stop barrier: exchanges summaries; returns the peer's.
    pub fn done(&mut self, mut local: Summary) -> Result<(Summary, Summary)> {
        local.max_gap_ms = self.gaps.max.map(|g| g.as_secs_f64() * 1e3);
        local.migration = self.mig.done.clone();
        if let Some(s) = self.sampler.take() {
            match super::steady::steady(&s.readings) {
                Ok(st) => local.steady = Some(st),
                Err(e) => local.steady_error = Some(e),
            }
        }
        let counters = self.ep.counters()?;
        local.retransmits = counters.retransmits;
        local.duplicates = counters.duplicates;
        local.out_of_sequence = counters.out_of_sequence;
        local.verify_expected = self.params.verify && self.roles.checks(self.params.test);
        match &self.verified {
            None => {}
            Some(Ok(())) => local.verified = Some(true),
            Some(Err(e)) => {
                local.verified = Some(false);
                local.verify_error = Some(e.clone());
            }
        }
        self.ctrl.send(&Msg::Done(Box::new(local.clone())))?;
        if let Some(peer) = self.peer_done.take() {
            return Ok((local, peer));
        }
        loop {
            match self.ctrl.recv(PASSIVE_WAIT)? {
                Msg::Done(peer) => return Ok((local, *peer)),
                Msg::Progress | Msg::Finished { .. } => {}
                m => bail!("expected done from the bench peer, got {m:?}"),
            }
        }
    }
}

/// Spins politely: after a few idle rounds, gives the CPU away.
#[derive(Debug)]
pub struct Idle {
    rounds: u32,
    last_event: Instant,
}

impl Idle {
    pub fn new() -> Idle {
        Idle {
            rounds: 0,
            last_event: Instant::now(),
        }
    }

    /// Call once per loop round with whether anything happened.
    pub fn round(&mut self, busy: bool, what: &str) -> Result<()> {
        if busy {
            self.rounds = 0;
            self.last_event = Instant::now();
            return Ok(());
        }
        self.rounds += 1;
        if self.rounds > 32 {
            std::thread::yield_now();
            if self.rounds.is_multiple_of(1024) && self.last_event.elapsed() > STALL {
                bail!("no progress for {STALL:?} while {what}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(test: Test, bidir: bool, verify: bool) -> Params {
        Params {
            test,
            size: 8,
            iters: 1,
            duration: None,
            qps: 1,
            bidir,
            tx_depth: 1,
            verify,
        }
    }

    #[test]
    fn roles() {
        let server = |t, b, v| Roles::of(&p(t, b, v), true);
        let client = |t, b, v| Roles::of(&p(t, b, v), false);
        assert!(client(Test::WriteBw, false, false).requester);
        assert!(!server(Test::WriteBw, false, false).self_driven());
        assert!(server(Test::WriteBw, false, true).responder_active);
        assert!(server(Test::SendBw, false, false).responder_active);
        assert!(!server(Test::ReadBw, false, true).self_driven());
        assert!(!server(Test::AtomicBw, false, true).self_driven());
        assert!(server(Test::ReadBw, true, false).requester);
        assert!(server(Test::SendLat, false, false).self_driven());
        assert!(server(Test::WriteLat, false, false).self_driven());
        assert!(!server(Test::ReadLat, false, false).self_driven());
        assert!(client(Test::ReadLat, false, false).requester);
    }

    #[test]
    fn who_checks_a_verified_run() {
        let checkers = |t, bidir| {
            [true, false]
                .into_iter()
                .filter(|&server| Roles::of(&p(t, bidir, true), server).checks(t))
                .count()
        };
        for t in [Test::SendBw, Test::WriteBw, Test::ReadBw, Test::AtomicBw] {
            assert_eq!(checkers(t, false), 1, "{t:?}: one end checks");
            assert_eq!(checkers(t, true), 2, "{t:?} bidirectional: both check");
        }
        assert_eq!(checkers(Test::SendLat, false), 2);
        assert_eq!(checkers(Test::WriteLat, false), 2);
        assert_eq!(checkers(Test::ReadLat, false), 1);
        // The receiver of SENDs, the requester of READs.
        assert!(Roles::of(&p(Test::SendBw, false, true), true).checks(Test::SendBw));
        assert!(Roles::of(&p(Test::ReadBw, false, true), false).checks(Test::ReadBw));
    }

    #[test]
    fn gaps() {
        let t0 = Instant::now();
        let mut g = Gaps::default();
        g.completion(t0);
        assert_eq!(g.max, None);
        g.completion(t0 + Duration::from_millis(5));
        g.completion(t0 + Duration::from_millis(6));
        assert_eq!(g.max, Some(Duration::from_millis(5)));
    }
}
