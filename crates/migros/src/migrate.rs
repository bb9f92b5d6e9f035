//! `migros migrate`: live-migrates a container to another node with runc
//! and CRIU, and prints a timeline.
//!
//! 1. check (RDMA): the source daemon's identifiers of the container's
//!    processes (admin `Identifiers`) must be free on the destination
//!    daemon (admin `CheckIdentifiers`), before anything is frozen;
//! 2. prepare the destination: the incarnation's network namespace (same
//!    overlay address) on the destination node and its bundle, which mounts
//!    the destination node's socket directory at `/run/migros`;
//! 3. optional pre-copy rounds (`runc checkpoint --pre-dump`);
//! 4. checkpoint: `runc pause` freezes the container (quicker than CRIU's
//!    own freezer loop), then `runc checkpoint --tcp-established`: the
//!    migros CRIU plugin pauses and dumps its RDMA state, the container's
//!    CRIU action script locks its network namespace, CRIU dumps memory and
//!    kills it (with `--leave-running` it stays, frozen, until the restore
//!    succeeded);
//! 5. transfer the image (one machine: a copy of the directory);
//! 6. move the overlay address: routes on every node point at the
//!    destination, the source namespace goes;
//! 7. restore (`runc restore -d --tcp-established` under a new supervisor):
//!    the plugin reconnects the RDMA sessions to the destination daemon and
//!    resumes them;
//! 8. tell the source daemon where the QPs went (`ForwardTombstones`).
//!
//! A failed checkpoint leaves the container running on the source; a failed
//! restore keeps the image directory and says where it is.

use std::net::IpAddr;

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use migros_proto::admin::{AdminRequest, AdminResponse, SessionIds};

use crate::cli::{Engine, MigrateArgs};
use crate::container::{self, net, Container, State};
use crate::node::{self, Node};
use crate::sys;

pub mod criu;

/// Test only: `MIGROS_FAULT=restore` damages the transferred image, so the
/// restore fails after a good checkpoint.
pub const FAULT_ENV: &str = "MIGROS_FAULT";

/// One line of the timeline.
struct Step {
    name: String,
    took: Duration,
    detail: String,
}

struct Timeline {
    name: String,
    steps: Vec<Step>,
    total: usize,
    done: usize,
}

impl Timeline {
    fn progress(&mut self, what: &str) {
        self.done += 1;
        let width = 20;
        let filled = width * (self.done - 1) / self.total.max(1);
        eprintln!(
            "migrate {}: [{}{}] {}/{} {what}",
            self.name,
            "#".repeat(filled),
            ".".repeat(width - filled),
            self.done,
            self.total
        );
    }

    fn push(&mut self, name: &str, took: Duration, detail: String) {
        self.steps.push(Step {
            name: name.to_string(),
            took,
            detail,
        });
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

pub fn run(a: &MigrateArgs) -> Result<()> {
    sys::need_root("migros migrate")?;
    if a.engine == Engine::Docker || crate::docker::exists(&a.name) {
        if a.pre_copy > 0 || a.leave_running {
            bail!("--pre-copy and --leave-running are for --engine runc");
        }
        return crate::docker::migrate(&a.name, &a.to, a.keep_image);
    }
    let _lock = sys::lock()?;
    let c = container::load(&a.name)?;
    if c.state != State::Active {
        bail!("container {}: {}", c.name, c.status().label());
    }
    let Some(pid) = c.pid() else {
        bail!(
            "container {} is not running ({})",
            c.name,
            c.status().label()
        );
    };
    let src = node::load(&c.node)?;
    let dst = node::load(&a.to)?;
    if src.name == dst.name {
        bail!("container {} already runs on node {}", c.name, dst.name);
    }
    if !dst.running() {
        bail!(
            "node {}: its migrosd (pid {}) is not running",
            dst.name,
            dst.pid
        );
    }
    if a.pre_copy > 0 {
        check_dirty_tracking()?;
    }
    let mut tl = Timeline {
        name: c.name.clone(),
        steps: Vec::new(),
        total: 7 + a.pre_copy as usize,
        done: 0,
    };
    let t_start = Instant::now();

    // 1. identifiers
    tl.progress("checking RDMA identifiers");
    let t = Instant::now();
    let pids = process_tree(pid);
    let ids = identifiers(&src, &pids)?;
    let unsupported = ids.is_none();
    let sessions: Vec<SessionIds> = ids.unwrap_or_default();
    let qpns: Vec<u32> = sessions.iter().flat_map(|s| s.qpns.clone()).collect();
    if !sessions.is_empty() {
        if src.dev != dst.dev {
            // The plugin reconnects to the same socket path (/run/migros/<dev>.sock).
            bail!(
                "the container uses device {} of node {}, node {} has {}: nothing was frozen",
                src.dev,
                src.name,
                dst.name,
                dst.dev
            );
        }
        check_identifiers(&dst, &sessions)?;
    }
    tl.push(
        "check identifiers",
        t.elapsed(),
        if unsupported {
            format!(
                "skipped: node {}'s daemon does not answer Identifiers",
                src.name
            )
        } else if sessions.is_empty() {
            format!("no RDMA sessions in {} process(es)", pids.len())
        } else {
            format!(
                "{} session(s), {} QP(s) free on {}",
                sessions.len(),
                qpns.len(),
                dst.name
            )
        },
    );

    // 2. destination
    tl.progress(&format!("preparing node {}", dst.name));
    let t = Instant::now();
    let gen = c.gen + 1;
    let mig = container::dir(&c.name).join(format!("migration-{gen}"));
    let _ = std::fs::remove_dir_all(&mig);
    let (src_img, dst_img, work) = (mig.join("source"), mig.join("image"), mig.join("work"));
    std::fs::create_dir_all(&src_img)?;
    std::fs::create_dir_all(&work)?;
    let undo_dst = |c: &Container| {
        let _ = net::destroy(&c.name, gen);
        let _ = std::fs::remove_dir_all(container::gen_dir(&c.name, gen));
    };
    if let Err(e) = c
        .write_bundle(gen, &dst)
        .and_then(|_| net::create(&c.name, gen, c.ip, &dst))
        .and_then(|_| net::lock(&c.name, gen))
    {
        undo_dst(&c);
        let _ = std::fs::remove_dir_all(&mig);
        return Err(e.context(format!("preparing node {}", dst.name)));
    }
    tl.push(
        "prepare destination",
        t.elapsed(),
        format!("netns {}, bundle", net::netns(&c.name, gen)),
    );
    let mut moving = c.clone();
    moving.state = State::Migrating;
    moving.save()?;
    let id = container::runc_id(&c.name, c.gen);

    // 3. pre-copy
    let mut parent: Option<String> = None;
    for i in 1..=a.pre_copy {
        tl.progress(&format!("pre-copy round {i}"));
        let t = Instant::now();
        let round = format!("pre-{i}");
        let img = src_img.join(&round);
        let wk = work.join(&round);
        std::fs::create_dir_all(&wk)?;
        let mut args = vec![
            "checkpoint".to_string(),
            "--pre-dump".into(),
            "--image-path".into(),
            img.display().to_string(),
            "--work-path".into(),
            wk.display().to_string(),
        ];
        if let Some(p) = &parent {
            args.extend(["--parent-path".into(), format!("../{p}")]);
        }
        args.push(id.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Err(e) = container::runc(&args) {
            c.save()?;
            undo_dst(&c);
            bail!(
                "pre-copy round {i} failed: {e:#}\nthe container is still running on node {} (CRIU log: {})",
                src.name,
                wk.join("dump.log").display()
            );
        }
        let st = criu::read_stats(&wk.join("stats-dump")).unwrap_or_default();
        tl.push(
            &format!("pre-copy {i}"),
            t.elapsed(),
            format!(
                "{} pages written, {}",
                st.pages_written,
                sys::human_bytes(sys::dir_size(&img))
            ),
        );
        parent = Some(round);
    }

    // 4. checkpoint
    tl.progress("checkpoint (freeze, RDMA pause + dump, memory)");
    // The source's tombstones before: the checkpoint's are the new ones
    // (QPs made after the identifier check included).
    let tombstones_before = tombstones(&src);
    let t_ck = Instant::now();
    // Freeze first: CRIU re-polls a cgroup still freezing only every
    // 100 ms, runc's freezer far more often; CRIU takes a frozen cgroup as
    // it is (and leaves it frozen with --leave-running).
    let prefrozen = container::runc(&["pause", &id]).is_ok();
    let img = src_img.join("final");
    let wk = work.join("final");
    std::fs::create_dir_all(&wk)?;
    let mut args = vec![
        "checkpoint".to_string(),
        "--tcp-established".into(),
        "--image-path".into(),
        img.display().to_string(),
        "--work-path".into(),
        wk.display().to_string(),
    ];
    if let Some(p) = &parent {
        args.extend(["--parent-path".into(), format!("../{p}")]);
    }
    if a.leave_running {
        args.push("--leave-running".into());
    }
    args.push(id.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Err(e) = container::runc(&args) {
        if prefrozen {
            let _ = container::runc(&["resume", &id]);
        }
        net::unlock(&c.name, c.gen);
        c.save()?;
        undo_dst(&c);
        let still = if sys::alive(pid) {
            format!("the container is still running on node {}", src.name)
        } else {
            format!("the container (pid {pid}) is gone")
        };
        bail!(
            "checkpoint failed: {e:#}\n{still}; CRIU's log: {}",
            wk.join("dump.log").display()
        );
    }
    let ck_wall = t_ck.elapsed();
    let ck_end = Instant::now();
    let dump_stats = criu::read_stats(&wk.join("stats-dump")).unwrap_or_default();
    let dump_log = criu::read_log(&wk.join("dump.log"));
    // The freeze happened (log end - freeze) before runc returned.
    let frozen_at = match (dump_log.stopped(), dump_log.end) {
        _ if prefrozen => t_ck,
        (Some(f), Some(e)) if e >= f => ck_end - Duration::from_secs_f64(e - f),
        _ => t_ck,
    };
    let mut detail = format!(
        "{}criu: freeze {}, frozen {}, memory dump {} + write {}, {} pages",
        if prefrozen { "runc pause, " } else { "" },
        ms(Duration::from_micros(dump_stats.freezing_time)),
        ms(Duration::from_micros(dump_stats.frozen_time)),
        ms(Duration::from_micros(dump_stats.memdump_time)),
        ms(Duration::from_micros(dump_stats.memwrite_time)),
        dump_stats.pages_written
    );
    if let Some(p) = dump_log.plugin_step("PAUSE_DEVICES", "paused") {
        detail += &format!(", RDMA pause {}", ms(Duration::from_secs_f64(p)));
    }
    if let Some(d) = dump_log.plugin_step("CHECKPOINT_DEVICES", "checkpointed") {
        detail += &format!(", RDMA dump {}", ms(Duration::from_secs_f64(d)));
    }
    tl.push("checkpoint", ck_wall, detail);

    // 5. transfer
    tl.progress("transfer");
    let t = Instant::now();
    let transferred = sys::copy_tree(&src_img, &dst_img);
    let size = sys::dir_size(&dst_img.join("final"));
    let total_size = sys::dir_size(&dst_img);
    if transferred.is_ok() {
        let _ = std::fs::remove_dir_all(&src_img);
    }
    tl.push(
        "transfer",
        t.elapsed(),
        if a.pre_copy > 0 {
            format!(
                "image {} (with pre-copies {})",
                sys::human_bytes(size),
                sys::human_bytes(total_size)
            )
        } else {
            format!("image {}", sys::human_bytes(size))
        },
    );

    // 6. network
    tl.progress("moving the address");
    let t = Instant::now();
    let moved = transferred.and_then(|_| {
        if !a.leave_running {
            net::destroy(&c.name, c.gen)?;
        }
        net::route_to(&c.name, c.ip, &dst)
    });
    tl.push(
        "network",
        t.elapsed(),
        format!("{} routed to node {} on every node", c.ip, dst.name),
    );

    // 7. restore
    tl.progress(&format!("restore on node {}", dst.name));
    let t_rs = Instant::now();
    if std::env::var(FAULT_ENV).is_ok_and(|v| v == "restore") {
        // Test only: a transferred image that lost a file.
        let _ = std::fs::remove_file(dst_img.join("final/inventory.img"));
    }
    let restored = moved.and_then(|_| container::start(&c.name, gen, Some(&dst_img.join("final"))));
    let new_pid = match restored {
        Ok(p) => p,
        Err(e) => {
            // The source copy goes only after a complete transfer.
            let keep = if src_img.exists() { &src_img } else { &dst_img };
            let mut lost = c.clone();
            lost.state = State::Lost {
                image: keep.clone(),
                error: format!("{e:#}"),
            };
            if a.leave_running && sys::alive(pid) {
                // The source still runs: keep it, undo the move.
                if prefrozen {
                    let _ = container::runc(&["resume", &id]);
                }
                let _ = net::route_to(&c.name, c.ip, &src);
                undo_dst(&c);
                c.save()?;
                bail!(
                    "restore on node {} failed: {e:#}\nthe source still runs on node {}; the image is kept in {}",
                    dst.name,
                    src.name,
                    keep.display()
                );
            }
            lost.save()?;
            bail!(
                "restore on node {} failed: {e:#}\nthe image is kept in {} (CRIU's log: {})",
                dst.name,
                keep.display(),
                container::gen_dir(&c.name, gen)
                    .join("work/restore.log")
                    .display()
            );
        }
    };
    // A checkpoint of a frozen cgroup restores frozen.
    let new_id = container::runc_id(&c.name, gen);
    if container::runc(&["state", &new_id]).is_ok_and(|st| st.contains("\"paused\"")) {
        if let Err(e) = container::runc(&["resume", &new_id]) {
            eprintln!("migros: warning: thawing the restored container: {e:#}");
        }
    }
    let resumed = Instant::now();
    net::unlock(&c.name, gen);
    let rs_dir = container::gen_dir(&c.name, gen).join("work");
    let rs_stats = criu::read_stats(&rs_dir.join("stats-restore")).unwrap_or_default();
    let rs_log = criu::read_log(&rs_dir.join("restore.log"));
    let mut detail = format!(
        "criu: forking {}, restore {}, {} pages restored",
        ms(Duration::from_micros(rs_stats.forking_time)),
        ms(Duration::from_micros(rs_stats.restore_time)),
        rs_stats.pages_restored
    );
    if let Some(r) = rs_log.plugin_step("RESTORE_UNIX_SK", "restored") {
        detail += &format!(", RDMA reconnect {}", ms(Duration::from_secs_f64(r)));
    }
    if let Some(r) = rs_log.plugin_step("RESUME_DEVICES_LATE", "resumed") {
        detail += &format!(", RDMA resume {}", ms(Duration::from_secs_f64(r)));
    }
    tl.push("restore", t_rs.elapsed(), detail);

    // 8. tombstones, the source's leftovers, the record
    tl.progress("forwarding tombstones");
    let t = Instant::now();
    let mut notes = Vec::new();
    notes.extend(forward_tombstones(
        &src,
        &dst,
        qpns,
        tombstones_before.as_deref(),
    ));
    if a.leave_running {
        let _ = container::runc(&["kill", &id, "KILL"]);
        // A frozen task dies once thawed.
        let _ = container::runc(&["resume", &id]);
        let _ = net::destroy(&c.name, c.gen);
        notes.push("source stopped".into());
    }
    let mut done = c.clone();
    done.node = dst.name.clone();
    done.gen = gen;
    done.state = State::Active;
    done.save()?;
    if !a.keep_image {
        let _ = std::fs::remove_dir_all(&mig);
    }
    tl.push(
        "finish",
        t.elapsed(),
        if notes.is_empty() {
            "no RDMA".to_string()
        } else {
            notes.join(", ")
        },
    );

    // timeline
    println!(
        "migrated {} from {} to {}: pid {} -> {}",
        c.name, src.name, dst.name, pid, new_pid
    );
    for s in &tl.steps {
        println!("  {:<20} {:>10}  {}", s.name, ms(s.took), s.detail);
    }
    println!(
        "  {:<20} {:>10}  stopped (RDMA pause or freeze) to resumed",
        "downtime",
        ms(resumed - frozen_at)
    );
    println!(
        "  {:<20} {:>10}  image {}{}",
        "total",
        ms(t_start.elapsed()),
        sys::human_bytes(size),
        if a.keep_image {
            format!(" kept in {}", dst_img.display())
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Tells the source daemon where the moved QPs went: `qpns` (identified
/// before the freeze) and every tombstone that appeared on `src` since
/// `before` (the daemon makes them when the dumped process's connection
/// closes, which may take a moment). Returns the timeline's note.
pub(crate) fn forward_tombstones(
    src: &Node,
    dst: &Node,
    mut qpns: Vec<u32>,
    before: Option<&[u32]>,
) -> Option<String> {
    if let Some(before) = before {
        for _ in 0..25 {
            let now = tombstones(src).unwrap_or_default();
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
    let req = AdminRequest::ForwardTombstones {
        qpns: qpns.clone(),
        to: IpAddr::V4(dst.addr),
    };
    Some(
        match crate::admin::request(&src.socket_dir(), &src.dev, &req) {
            Ok(_) => format!("{} QP(s) forwarded to {}", qpns.len(), dst.addr),
            Err(e) => format!("forwarding tombstones failed: {e:#}"),
        },
    )
}

/// The QPNs with a tombstone on a node's daemon (`None`: it does not say).
pub(crate) fn tombstones(node: &Node) -> Option<Vec<u32>> {
    crate::admin::status(&node.socket_dir(), &node.dev)
        .ok()
        .map(|s| s.tombstones)
}

/// Pre-copy needs the kernel's soft-dirty tracking.
fn check_dirty_tracking() -> Result<()> {
    let out = std::process::Command::new("criu")
        .args(["check", "--feature", "mem_dirty_track"])
        .output()
        .context("running criu check")?;
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("OFF") {
        bail!(
            "--pre-copy needs memory dirty tracking, which this kernel lacks (criu check: {}); migrate without it",
            text.trim()
        );
    }
    Ok(())
}

/// `pid` and its descendants (every thread's children).
pub fn process_tree(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.filter_map(|t| t.ok()) {
                if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                    for c in s.split_whitespace().filter_map(|c| c.parse().ok()) {
                        if !out.contains(&c) {
                            out.push(c);
                        }
                    }
                }
            }
        }
        i += 1;
    }
    out
}

/// The RDMA identifiers of each process on the node's daemon.
/// `None` when the daemon cannot tell (an older daemon: ENOSYS).
fn identifiers(node: &Node, pids: &[i32]) -> Result<Option<Vec<SessionIds>>> {
    let mut v = Vec::new();
    for &p in pids {
        let resp = crate::admin::request_raw(
            &node.socket_dir(),
            &node.dev,
            &AdminRequest::Identifiers { pid: p as u32 },
        )
        .with_context(|| {
            format!(
                "asking node {}'s daemon for pid {p}'s identifiers",
                node.name
            )
        })?;
        match resp {
            AdminResponse::Error { errno, .. } if errno == libc_enosys() => return Ok(None),
            AdminResponse::Error { errno, message } => {
                bail!(
                    "node {}: Identifiers for pid {p}: {message} (errno {errno})",
                    node.name
                )
            }
            AdminResponse::Identifiers(ids) if ids.is_empty() => {}
            AdminResponse::Identifiers(ids) => v.extend(ids),
            r => bail!("node {}: unexpected answer {r:?} to Identifiers", node.name),
        }
    }
    Ok(Some(v))
}

fn libc_enosys() -> i32 {
    nix::errno::Errno::ENOSYS as i32
}

fn check_identifiers(node: &Node, sessions: &[SessionIds]) -> Result<()> {
    match crate::admin::request(
        &node.socket_dir(),
        &node.dev,
        &AdminRequest::CheckIdentifiers(sessions.to_vec()),
    ) {
        Ok(AdminResponse::Ok) => Ok(()),
        Ok(r) => bail!(
            "node {}: unexpected answer {r:?} to CheckIdentifiers",
            node.name
        ),
        Err(e) => bail!(
            "node {} cannot take the container's RDMA identifiers: {e:#}; nothing was frozen",
            node.name
        ),
    }
}
