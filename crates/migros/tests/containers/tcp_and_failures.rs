//! TCP containers moved while they run, there and back; migrations that
//! fail or are refused leave the container running; `--leave-running` and
//! `--pre-copy`.

use super::*;

/// An echo server; prints how many lines it echoed.
const ECHO_SERVER: &str = "import socket,sys
ip,port=sys.argv[1],int(sys.argv[2])
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind((ip,port)); s.listen(1)
print('listening',flush=True)
c,_=s.accept(); f=c.makefile('rwb'); n=0
for line in f:
    f.write(line); f.flush(); n+=1
print('server echoed',n,flush=True)";

/// Sends numbered lines over one TCP connection, checks every echo.
const ECHO_CLIENT: &str = "import socket,sys,time
ip,port,n=sys.argv[1],int(sys.argv[2]),int(sys.argv[3])
c=socket.create_connection((ip,port)); f=c.makefile('rwb')
print('connected',flush=True)
for i in range(n):
    f.write(b'%d\\n'%i); f.flush(); l=f.readline()
    assert l==b'%d\\n'%i,(i,l)
    time.sleep(0.02)
print('client ok',n,flush=True)";

/// A TCP client in a container on `a` talking to a server on `b`, migrated
/// along `hops`, keeps its connection: both end with status 0.
fn tcp_client_migrates(prefix: &str, octet: u8, hops: &[&str]) {
    let Some(mut lab) = Lab::new() else { return };
    let (a, b, c) = (
        format!("{prefix}a"),
        format!("{prefix}b"),
        format!("{prefix}c"),
    );
    for (i, n) in [&a, &b, &c].into_iter().enumerate() {
        lab.node(n, &format!("198.18.1.{}", octet + i as u8));
    }
    let srv_ip = format!("198.19.1.{octet}");
    let cli_ip = format!("198.19.1.{}", octet + 1);
    let (srv, cli) = (format!("{prefix}srv"), format!("{prefix}cli"));
    lab.container(
        &b,
        &srv,
        &srv_ip,
        &["python3", "-c", ECHO_SERVER, &srv_ip, "7200"],
    );
    lab.wait_log(&srv, "listening");
    // Long enough for the migrations even when other tests hold the lock.
    let lines = "300";
    lab.container(
        &a,
        &cli,
        &cli_ip,
        &["python3", "-c", ECHO_CLIENT, &srv_ip, "7200", lines],
    );
    lab.wait_log(&cli, "connected");
    for hop in hops {
        let to = format!("{prefix}{hop}");
        std::thread::sleep(Duration::from_millis(300));
        lab.migrate(&cli, &to);
        let ps = lab.ps(&cli).expect("listed");
        assert_eq!(ps["node"], to.as_str(), "{ps}");
        assert_eq!(ps["ip"], cli_ip.as_str(), "{ps}");
        assert_eq!(
            ps["status"],
            "running",
            "{ps}\nclient:\n{}\nserver:\n{}",
            lab.logs(&cli),
            lab.logs(&srv)
        );
    }
    assert_eq!(lab.wait(&cli), 0, "client:\n{}", lab.logs(&cli));
    assert_eq!(lab.wait(&srv), 0, "server:\n{}", lab.logs(&srv));
    assert!(
        lab.logs(&cli).contains(&format!("client ok {lines}")),
        "{}",
        lab.logs(&cli)
    );
    assert!(
        lab.logs(&srv).contains(&format!("server echoed {lines}")),
        "{}",
        lab.logs(&srv)
    );
}

#[test]
fn tcp_connection_survives_migration() {
    tcp_client_migrates("k3", 31, &["c"]);
}

#[test]
fn migrate_there_and_back() {
    tcp_client_migrates("k4", 41, &["c", "a"]);
}

#[test]
fn migrate_errors_leave_the_container_running() {
    let Some(mut lab) = Lab::new() else { return };
    lab.node("k5a", "198.18.1.51");
    lab.container("k5a", "k5sleep", "198.19.1.51", &["sleep", "600"]);
    assert!(lab
        .fails(&["migrate", "k5sleep", "--to", "k5a"])
        .contains("already runs"));
    assert!(lab
        .fails(&["migrate", "k5sleep", "--to", "k5nope"])
        .contains("not found"));
    assert!(lab
        .fails(&["migrate", "k5nope", "--to", "k5a"])
        .contains("not found"));
    let ps = lab.ps("k5sleep").expect("listed");
    assert_eq!(ps["status"], "running", "{ps}");
}

/// `--leave-running` keeps the source until the restore is done, then stops
/// it; `--pre-copy` works where the kernel tracks dirty memory and is
/// refused clearly (nothing frozen) where it does not.
#[test]
fn migrate_leave_running_and_pre_copy() {
    let Some(mut lab) = Lab::new() else { return };
    lab.node("k11a", "198.18.1.111");
    lab.node("k11b", "198.18.1.112");
    lab.container(
        "k11a",
        "k11count",
        "198.19.1.111",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 60 ]; do echo n=$i; i=$((i+1)); sleep 0.1; done",
        ],
    );
    lab.wait_log("k11count", "n=3");
    let out = lab.ok(&["migrate", "k11count", "--to", "k11b", "--leave-running"]);
    assert!(out.contains("source stopped"), "{out}");
    let tracking = Command::new("criu")
        .args(["check", "--feature", "mem_dirty_track"])
        .output()
        .map(|o| {
            o.status.success()
                && !String::from_utf8_lossy(&o.stderr).contains("OFF")
                && !String::from_utf8_lossy(&o.stdout).contains("OFF")
        })
        .unwrap_or(false);
    let pre = lab.run(&["migrate", "k11count", "--to", "k11a", "--pre-copy", "2"]);
    if tracking {
        assert!(pre.status.success(), "{pre:?}");
        let out = String::from_utf8_lossy(&pre.stdout);
        assert!(out.contains("pre-copy 2"), "{out}");
    } else {
        let err = String::from_utf8_lossy(&pre.stderr);
        assert!(err.contains("dirty tracking"), "{err}");
        assert_eq!(lab.ps("k11count").unwrap()["node"], "k11b");
    }
    assert_eq!(lab.wait("k11count"), 0, "{}", lab.logs("k11count"));
    let logs = lab.logs("k11count");
    // Every number is there (the source, left running during the restore,
    // may have printed a few the restored copy prints again), the last once.
    for i in 0..60 {
        assert!(logs.contains(&format!("n={i}\n")), "n={i} missing:\n{logs}");
    }
    assert_eq!(logs.matches("n=59\n").count(), 1, "{logs}");
}

/// A checkpoint CRIU refuses (a deleted file bigger than its ghost limit is
/// open) leaves the container running where it was, and says so.
#[test]
fn failed_checkpoint_leaves_the_container_running() {
    let Some(mut lab) = Lab::new() else { return };
    lab.node("k12a", "198.18.1.121");
    lab.node("k12b", "198.18.1.122");
    let vol = tempfile::tempdir().expect("temp dir");
    let big = vol.path().join("big");
    std::fs::write(&big, vec![7u8; 4 << 20]).expect("write big file");
    let v = format!("{}:/vol", vol.path().display());
    lab.containers.push("k12ghost".into());
    lab.ok(&[
        "run",
        "--node",
        "k12a",
        "--name",
        "k12ghost",
        "--ip",
        "198.19.1.121",
        "--volume",
        &v,
        "--",
        "sh",
        "-c",
        "exec 3</vol/big; echo ready; sleep 600",
    ]);
    lab.wait_log("k12ghost", "ready");
    std::fs::remove_file(&big).expect("remove big file");
    let err = lab.fails(&["migrate", "k12ghost", "--to", "k12b"]);
    assert!(err.contains("checkpoint failed"), "{err}");
    assert!(err.contains("still running on node k12a"), "{err}");
    let ps = lab.ps("k12ghost").expect("listed");
    assert_eq!(
        (ps["status"].as_str(), ps["node"].as_str()),
        (Some("running"), Some("k12a")),
        "{ps}"
    );
    lab.ok(&["rm", "-f", "k12ghost"]);
}

/// A restore that fails after a good checkpoint (a damaged image, by fault
/// injection) keeps the image and says where; the container is "lost"
/// until removed.
#[test]
fn failed_restore_keeps_the_image() {
    let Some(mut lab) = Lab::new() else { return };
    lab.node("k13a", "198.18.1.131");
    lab.node("k13b", "198.18.1.132");
    lab.container("k13a", "k13lost", "198.19.1.131", &["sleep", "600"]);
    let child = Command::new(MIGROS)
        .args(["migrate", "k13lost", "--to", "k13b"])
        .env("MIGROS_FAULT", "restore")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn migros");
    let out = wait_bounded(child, &["migrate"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("restore on node k13b failed"), "{err}");
    let kept = err
        .split("the image is kept in ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no image path in {err}"));
    assert!(Path::new(kept).join("final/pages-1.img").exists(), "{kept}");
    let ps = lab.ps("k13lost").expect("listed");
    assert_eq!(ps["status"], "lost", "{ps}");
    assert!(lab.run(&["wait", "k13lost"]).status.code() != Some(0));
    lab.ok(&["rm", "-f", "k13lost"]);
    assert!(!Path::new(kept).exists());
}
