//! A client process moved between daemons as CRIU moves it, rolled back
//! checkpoints, and a peer whose partner never returns.

use super::*;

#[test]
fn process_moves_between_daemons_as_criu_moves_it() {
    if !can_run() {
        return;
    }
    let mut s = setup(191, true);
    s.receive(300);
    // CRIU's freeze: the leader seized (traced counts as frozen), the
    // traffic thread interrupted.
    let (leader, traffic) = (Pid::from_raw(s.pid as i32), Pid::from_raw(s.tid));
    ptrace::seize(leader, ptrace::Options::empty()).expect("seize the leader");
    if traffic != leader {
        ptrace::seize(traffic, ptrace::Options::empty()).expect("seize the thread");
    }
    ptrace::interrupt(traffic).expect("interrupt");
    waitpid(traffic, Some(WaitPidFlag::__WALL)).expect("the thread stops");

    let images = s.pause_and_checkpoint();
    let session = images[0].session;
    s.nothing_arrives(Duration::from_millis(100));
    // The watchdog sees a traced process: no rollback.
    assert!(status(&s.a).sessions.iter().any(|x| x.session == session));

    let b = s.b.take().unwrap();
    writeln!(
        s.stdin,
        "RESTORE {} {}",
        b.socket().display(),
        serde_json::to_string(&images).unwrap()
    )
    .unwrap();
    s.line("RESTORED");
    // Restored, not resumed: the QP is stopped, nothing moves.
    s.nothing_arrives(Duration::from_millis(50));
    assert_eq!(
        b.admin(&AdminRequest::Resume { pid: s.pid }),
        AdminResponse::Resumed { sessions: 1 }
    );
    assert_eq!(
        s.a.admin(&AdminRequest::ForwardTombstones {
            qpns: images[0].qpns.clone(),
            to: b.addr.parse().unwrap(),
        }),
        AdminResponse::Ok
    );
    ptrace::detach(traffic, None).expect("detach the thread");
    if traffic != leader {
        // PTRACE_DETACH wants a stopped tracee.
        ptrace::interrupt(leader).expect("interrupt the leader");
        waitpid(leader, Some(WaitPidFlag::__WALL)).expect("the leader stops");
        ptrace::detach(leader, None).expect("detach the leader");
    }
    s.finish();
    s.peer_only_paused();

    let on_b = status(&b);
    assert_eq!(on_b.sessions.len(), 1);
    assert_eq!(on_b.sessions[0].session, session);
    assert_eq!(on_b.sessions[0].pid, s.pid);
    assert_eq!(on_b.sessions[0].channels, 1);
    let on_a = status(&s.a);
    assert!(on_a.sessions.is_empty(), "{:?}", on_a.sessions);
    assert_eq!(on_a.tombstones, vec![s.child_qpn]);
    assert_eq!(
        s.a.admin(&AdminRequest::ReleaseTombstones {
            qpns: vec![s.child_qpn]
        }),
        AdminResponse::Ok
    );
    assert!(status(&s.a).tombstones.is_empty());
    drop(b);
}

/// The dump failed and the process runs again (SIGCONT) with its
/// connection open: the daemon rolls back by itself.
#[test]
fn a_checkpointed_process_that_runs_again_is_rolled_back() {
    if !can_run() {
        return;
    }
    let mut s = setup(194, false);
    s.receive(300);
    kill(Pid::from_raw(s.pid as i32), Signal::SIGSTOP).unwrap();
    wait_stopped(s.pid);
    s.pause_and_checkpoint();
    // Stopped ('T') counts as frozen: nothing moves, no rollback.
    s.nothing_arrives(Duration::from_millis(150));
    kill(Pid::from_raw(s.pid as i32), Signal::SIGCONT).unwrap();
    s.finish();
    s.peer_only_paused();
    assert!(status(&s.a).tombstones.is_empty());
}

/// The plugin's exit hook after a failed dump: Resume{pid} on the source.
#[test]
fn resume_rolls_a_checkpoint_back() {
    if !can_run() {
        return;
    }
    let mut s = setup(196, false);
    s.receive(300);
    kill(Pid::from_raw(s.pid as i32), Signal::SIGSTOP).unwrap();
    wait_stopped(s.pid);
    s.pause_and_checkpoint();
    s.nothing_arrives(Duration::from_millis(50));
    assert_eq!(
        s.a.admin(&AdminRequest::Resume { pid: s.pid }),
        AdminResponse::Resumed { sessions: 1 }
    );
    // The QP runs again although the process is still stopped; it reads
    // the receives the peer posted... and the process continues later.
    assert_eq!(
        s.a.admin(&AdminRequest::Resume { pid: s.pid }),
        AdminResponse::Resumed { sessions: 0 }
    );
    kill(Pid::from_raw(s.pid as i32), Signal::SIGCONT).unwrap();
    s.finish();
    s.peer_only_paused();
}

/// The dump succeeded and the process was killed, but it is never
/// restored: the peer, paused by the tombstone, ends in an error once its
/// pause timeout (here 800 ms) has passed, not earlier and not never.
#[test]
fn a_peer_whose_partner_never_returns_errors_after_the_pause_timeout() {
    if !can_run() {
        return;
    }
    let mut s = setup_with(176, false, &["--pause-timeout-ms", "800"]);
    s.receive(300);
    kill(Pid::from_raw(s.pid as i32), Signal::SIGSTOP).unwrap();
    wait_stopped(s.pid);
    let paused_at = Instant::now();
    s.pause_and_checkpoint();
    s.nothing_arrives(Duration::from_millis(100));
    // CRIU kills the dumped process; nobody restores it.
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    common::wait_until("a tombstone on a", || {
        status(&s.a).tombstones == vec![s.child_qpn]
    });
    let mut wcs = Vec::new();
    let failed = loop {
        assert!(
            paused_at.elapsed() < Duration::from_secs(20),
            "the peer never gave up"
        );
        wcs.clear();
        s.peer_cq.poll(&mut wcs, 32).unwrap();
        if let Some(wc) = wcs.iter().find(|w| w.status != WcStatus::Success) {
            break (wc.status, paused_at.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(failed.0, WcStatus::RetryExcErr, "{wcs:?}");
    assert!(failed.1 >= Duration::from_millis(800), "{:?}", failed.1);
    assert_eq!(s.peer_qp.query().unwrap().qp_state, QpState::Err);
}

fn wait_stopped(pid: u32) {
    common::wait_until("the child stops", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('T'))
        })
    });
}
