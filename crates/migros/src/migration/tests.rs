//! The migration driver with a test engine and a test cluster (the seam
//! youki's `Syscall` trait is for libcontainer): the order of the steps,
//! what every engine shares (identifier check, tombstones, the record),
//! and the rollback of a failure at each step. No root, no daemon.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use migros_proto::admin::{CmIds, SessionIds};

use super::cluster::Cluster;
use super::drive;
use crate::container::{Container, State, Status};
use crate::engine::{
    Aftermath, Checkpointed, Engine, EngineKind, Move, Options, Restored, Step, Transferred,
};
use crate::node::Node;

/// An engine that records its steps, fails the one it is told to, and
/// keeps the state a real engine would: whether the source runs, whether
/// the destination was prepared.
struct TestEngine {
    c: Container,
    fail: Option<Step>,
    steps: Vec<String>,
    rolled_back: Vec<Step>,
    source_runs: bool,
    destination_prepared: bool,
}

impl TestEngine {
    fn new(fail: Option<Step>) -> TestEngine {
        TestEngine {
            c: Container {
                name: "srv".into(),
                engine: EngineKind::Runc,
                node: "a".into(),
                ip: Ipv4Addr::new(198, 19, 1, 1),
                args: vec!["ib_send_bw".into()],
                env: Vec::new(),
                volumes: Vec::new(),
                gen: 3,
                state: State::Active,
                image: None,
                network: None,
            },
            fail,
            steps: Vec::new(),
            rolled_back: Vec::new(),
            source_runs: true,
            destination_prepared: false,
        }
    }

    fn step(&mut self, step: Step, name: &str) -> Result<String> {
        self.steps.push(name.to_string());
        if self.fail == Some(step) {
            bail!("{name} broke");
        }
        Ok(format!("{name} done"))
    }
}

impl Engine for TestEngine {
    fn record(&self) -> &Container {
        &self.c
    }

    fn id(&self, gen: u32) -> String {
        format!("{}.{gen}", self.c.name)
    }

    fn run(&mut self, _node: &Node) -> Result<String> {
        unreachable!("not a migration step")
    }

    fn status(&self) -> Status {
        Status::Running(100)
    }

    fn logs(&self, _out: &mut dyn Write) -> Result<()> {
        Ok(())
    }

    fn remove(&mut self) -> Result<()> {
        unreachable!("not a migration step")
    }

    fn check(&mut self, _m: &Move) -> Result<Vec<i32>> {
        self.step(Step::Check, "check")?;
        Ok(vec![100, 101])
    }

    fn prepare(&mut self, _m: &Move) -> Result<String> {
        self.destination_prepared = true;
        self.step(Step::Prepare, "prepare")
    }

    fn pre_copy(&mut self, _m: &Move, round: u32) -> Result<String> {
        self.step(Step::PreCopy(round), &format!("pre-copy {round}"))
    }

    fn checkpoint(&mut self, m: &Move) -> Result<Checkpointed> {
        let stopped_at = Instant::now();
        self.source_runs = m.opts.leave_running;
        let detail = self.step(Step::Checkpoint, "checkpoint")?;
        Ok(Checkpointed {
            detail,
            stopped_at,
            stopped_how: "test stop to test resume",
        })
    }

    fn transfer(&mut self, _m: &Move) -> Result<Transferred> {
        Ok(Transferred {
            detail: self.step(Step::Transfer, "transfer")?,
            image_bytes: 4096,
            image_at: "/images/srv".into(),
        })
    }

    fn network(&mut self, _m: &Move) -> Result<String> {
        self.step(Step::Network, "network")
    }

    fn restore(&mut self, _m: &Move) -> Result<Restored> {
        Ok(Restored {
            detail: self.step(Step::Restore, "restore")?,
            pid: 200,
            resumed_at: Instant::now(),
        })
    }

    fn finish(&mut self, _m: &Move) -> Vec<String> {
        self.steps.push("finish".into());
        vec!["source stopped".into()]
    }

    fn rollback(&mut self, m: &Move, failed: Step) -> Aftermath {
        self.rolled_back.push(failed);
        self.destination_prepared = false;
        // A failed checkpoint leaves the source as it was (thawed); after a
        // good one, the source is gone unless left running.
        let checkpointed = !matches!(
            failed,
            Step::Check | Step::Prepare | Step::PreCopy(_) | Step::Checkpoint
        );
        if !checkpointed || m.opts.leave_running {
            // A real engine thaws the frozen source here.
            self.source_runs = true;
            return Aftermath::Source {
                note: "the container is still running on node a".into(),
            };
        }
        Aftermath::Lost {
            image: PathBuf::from("/images/srv"),
            note: "the image is kept in /images/srv".into(),
        }
    }
}

/// Daemons that know one session of pid 101, and records kept in memory.
#[derive(Default)]
struct TestCluster {
    /// The destination refuses the identifiers.
    collide: bool,
    /// The source's daemon predates `Identifiers`.
    no_identifiers: bool,
    /// The destination's connection manager refuses pid 101's rdma_cm state.
    cm_collide: bool,
    tombstone_calls: Cell<u32>,
    forwarded: RefCell<Vec<(String, Vec<u32>, IpAddr)>>,
    saved: RefCell<Vec<Container>>,
}

impl Cluster for TestCluster {
    fn identifiers(&self, node: &Node, pid: i32) -> Result<Option<Vec<SessionIds>>> {
        assert_eq!(node.name, "a", "identifiers are asked of the source");
        if self.no_identifiers {
            return Ok(None);
        }
        Ok(Some(if pid == 101 {
            vec![SessionIds {
                session: 7,
                qpns: vec![0x11, 0x12],
                ..SessionIds::default()
            }]
        } else {
            Vec::new()
        }))
    }

    fn check_identifiers(&self, node: &Node, sessions: &[SessionIds]) -> Result<()> {
        assert_eq!(node.name, "c", "identifiers are checked on the destination");
        assert_eq!(sessions.len(), 1);
        if self.collide {
            bail!("QPN 0x11 is taken");
        }
        Ok(())
    }

    fn cm_identifiers(&self, node: &Node, pid: i32) -> Result<Option<Vec<CmIds>>> {
        assert_eq!(node.name, "a", "identifiers are asked of the source");
        if self.no_identifiers {
            return Ok(None);
        }
        Ok(Some(if pid == 101 {
            vec![CmIds {
                owner: 0x77,
                snapshot: b"{}".to_vec(),
            }]
        } else {
            Vec::new()
        }))
    }

    fn check_cm_identifiers(&self, node: &Node, cm: &[CmIds]) -> Result<()> {
        assert_eq!(node.name, "c", "identifiers are checked on the destination");
        assert_eq!(cm.len(), 1);
        if self.cm_collide {
            bail!("the connection manager cannot take owner 0x77's state: address in use");
        }
        Ok(())
    }

    fn tombstones(&self, node: &Node) -> Option<Vec<u32>> {
        assert_eq!(node.name, "a");
        let n = self.tombstone_calls.get();
        self.tombstone_calls.set(n + 1);
        // An old tombstone before the checkpoint; after it, the moved QPs
        // and one made after the identifier check.
        Some(if n == 0 {
            vec![0x5]
        } else {
            vec![0x5, 0x11, 0x12, 0x13]
        })
    }

    fn forward_tombstones(&self, node: &Node, qpns: &[u32], to: IpAddr) -> Result<()> {
        self.forwarded
            .borrow_mut()
            .push((node.name.clone(), qpns.to_vec(), to));
        Ok(())
    }

    fn save(&self, record: &Container) -> Result<()> {
        self.saved.borrow_mut().push(record.clone());
        Ok(())
    }
}

fn node(name: &str, last: u8, dev: &str) -> Node {
    Node {
        name: name.into(),
        addr: Ipv4Addr::new(198, 18, 1, last),
        dev: dev.into(),
        mtu: None,
        pid: 1,
        ssh: None,
    }
}

fn moving(opts: Options) -> Move {
    Move {
        src: node("a", 1, "rxe0"),
        dst: node("c", 3, "rxe0"),
        gen: 4,
        opts,
    }
}

const ALL_STEPS: [&str; 9] = [
    "check",
    "prepare",
    "pre-copy 1",
    "pre-copy 2",
    "checkpoint",
    "transfer",
    "network",
    "restore",
    "finish",
];

#[test]
fn steps_run_in_order_and_the_record_follows() {
    let mut e = TestEngine::new(None);
    let cluster = TestCluster::default();
    let m = moving(Options {
        pre_copy: 2,
        keep_image: true,
        ..Options::default()
    });
    let report = drive(&mut e, &m, &cluster).unwrap();
    assert_eq!(e.steps, ALL_STEPS);
    assert!(e.rolled_back.is_empty());

    let saved = cluster.saved.borrow();
    assert_eq!(saved.len(), 2, "{saved:?}");
    assert_eq!(saved[0], e.c.with_state(State::Migrating));
    assert_eq!(
        (saved[1].node.as_str(), saved[1].gen, &saved[1].state),
        ("c", 4, &State::Active)
    );
    // The QPs found before the freeze and the tombstone made since.
    assert_eq!(
        *cluster.forwarded.borrow(),
        [(
            "a".to_string(),
            vec![0x11, 0x12, 0x13],
            IpAddr::V4(Ipv4Addr::new(198, 18, 1, 3))
        )]
    );

    let text = report.to_string();
    assert!(
        text.starts_with("migrated srv from a to c (runc srv.3 -> srv.4): pid 100 -> 200\n"),
        "{text}"
    );
    let steps: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split("  ").find(|w| !w.is_empty()).unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "check identifiers",
            "prepare destination",
            "pre-copy 1",
            "pre-copy 2",
            "checkpoint",
            "transfer",
            "network",
            "restore",
            "finish",
            "downtime",
            "total"
        ]
    );
    assert!(
        text.contains("1 session(s), 2 QP(s), 1 rdma_cm connection(s) free on c"),
        "{text}"
    );
    assert!(
        text.contains("3 QP(s) forwarded to 198.18.1.3, source stopped"),
        "{text}"
    );
    assert!(text.contains("test stop to test resume"), "{text}");
    assert!(text.contains("image 4.0 KiB kept in /images/srv"), "{text}");
}

/// A failure at each step stops the migration there, rolls back once and
/// leaves the container on the source (running, its record as before)
/// until the checkpoint; after it, the image is kept and the record says
/// so, unless the source was left running.
#[test]
fn a_failure_at_each_step_rolls_back() {
    let failing = [
        Step::Check,
        Step::Prepare,
        Step::PreCopy(1),
        Step::PreCopy(2),
        Step::Checkpoint,
        Step::Transfer,
        Step::Network,
        Step::Restore,
    ];
    for leave_running in [false, true] {
        for (i, &step) in failing.iter().enumerate() {
            let mut e = TestEngine::new(Some(step));
            let cluster = TestCluster::default();
            let m = moving(Options {
                pre_copy: 2,
                leave_running,
                ..Options::default()
            });
            let err = format!("{:#}", drive(&mut e, &m, &cluster).unwrap_err());
            let what = format!("{step:?} (leave_running {leave_running})");
            assert_eq!(e.steps, ALL_STEPS[..=i], "{what}");
            assert_eq!(e.rolled_back, [step], "{what}");
            assert!(err.contains("broke"), "{what}: {err}");
            assert!(!e.destination_prepared, "{what}");
            assert!(cluster.forwarded.borrow().is_empty(), "{what}");

            let saved = cluster.saved.borrow();
            let last = saved.last();
            let source_kept = step == Step::Check
                || step == Step::Prepare
                || matches!(step, Step::PreCopy(_))
                || step == Step::Checkpoint
                || leave_running;
            if source_kept {
                assert!(e.source_runs, "{what}");
                if step == Step::Check {
                    // A refused check says why, nothing else happened.
                    assert_eq!(err, "check broke", "{what}");
                    assert!(saved.is_empty(), "{what}: {saved:?}");
                } else {
                    assert!(err.contains("still running on node a"), "{what}: {err}");
                    // Never marked (a failed prepare), or marked and put back.
                    let marked = step != Step::Prepare;
                    assert_eq!(saved.len(), if marked { 2 } else { 0 }, "{what}");
                    assert!(last.is_none_or(|r| r == &e.c), "{what}: {saved:?}");
                }
            } else {
                let last = last.expect("a record");
                assert!(
                    matches!(&last.state, State::Lost { image, error }
                        if image == &PathBuf::from("/images/srv") && error.contains("broke")),
                    "{what}: {last:?}"
                );
                assert_eq!((last.node.as_str(), last.gen), ("a", 3), "{what}");
                assert!(
                    err.contains("the image is kept in /images/srv"),
                    "{what}: {err}"
                );
            }
            let said = match step {
                Step::Check => "check broke",
                Step::Prepare => "preparing node c failed",
                Step::PreCopy(1) => "pre-copy round 1 failed",
                Step::PreCopy(_) => "pre-copy round 2 failed",
                Step::Checkpoint => "checkpoint failed",
                Step::Transfer => "transfer to node c failed",
                Step::Network => "moving the address failed",
                Step::Restore => "restore on node c failed",
            };
            assert!(err.starts_with(said), "{what}: {err}");
        }
    }
}

#[test]
fn identifiers_taken_on_the_destination_stop_before_the_freeze() {
    let mut e = TestEngine::new(None);
    let cluster = TestCluster {
        collide: true,
        ..TestCluster::default()
    };
    let err = format!(
        "{:#}",
        drive(&mut e, &moving(Options::default()), &cluster).unwrap_err()
    );
    assert!(
        err.contains("node c cannot take the container's RDMA identifiers: QPN 0x11 is taken"),
        "{err}"
    );
    assert!(err.contains("nothing was frozen"), "{err}");
    assert_eq!(e.steps, ["check"]);
    assert_eq!(e.rolled_back, [Step::Check]);
    assert!(e.source_runs && cluster.saved.borrow().is_empty());
}

/// The rdma_cm state (a listener's port, a connection's comm ID) is
/// checked on the destination with the verbs identifiers: a clash stops
/// the migration before the freeze and the source keeps running.
#[test]
fn rdma_cm_state_taken_on_the_destination_stops_before_the_freeze() {
    let mut e = TestEngine::new(None);
    let cluster = TestCluster {
        cm_collide: true,
        ..TestCluster::default()
    };
    let err = format!(
        "{:#}",
        drive(&mut e, &moving(Options::default()), &cluster).unwrap_err()
    );
    assert!(
        err.contains("node c cannot take the container's rdma_cm state: the connection manager cannot take owner 0x77's state: address in use"),
        "{err}"
    );
    assert!(err.contains("nothing was frozen"), "{err}");
    assert_eq!(e.steps, ["check"]);
    assert_eq!(e.rolled_back, [Step::Check]);
    assert!(e.source_runs && cluster.saved.borrow().is_empty());
}

#[test]
fn rdma_on_another_device_is_refused() {
    let mut e = TestEngine::new(None);
    let mut m = moving(Options::default());
    m.dst.dev = "rxe1".into();
    let err = format!(
        "{:#}",
        drive(&mut e, &m, &TestCluster::default()).unwrap_err()
    );
    assert!(
        err.contains("uses device rxe0 of node a, node c has rxe1"),
        "{err}"
    );
    assert_eq!(e.steps, ["check"]);
}

#[test]
fn a_daemon_without_identifiers_is_skipped() {
    let mut e = TestEngine::new(None);
    let cluster = TestCluster {
        no_identifiers: true,
        ..TestCluster::default()
    };
    let text = drive(&mut e, &moving(Options::default()), &cluster)
        .unwrap()
        .to_string();
    assert!(
        text.contains("skipped: node a's daemon does not answer Identifiers"),
        "{text}"
    );
    // The tombstone the checkpoint made is forwarded all the same.
    assert_eq!(cluster.forwarded.borrow()[0].1, [0x11, 0x12, 0x13]);
    assert!(!text.contains("kept in"), "{text}");
}
