//! Nodes and containers on their own: what a container reaches, node and
//! container commands and their errors.

use super::*;

/// From inside a container, as its root: the admin socket is nowhere to
/// be found or reached (no shutdown, pause or checkpoint of anyone), the
/// socket directory is read-only (no replacing the device's socket), and
/// the client socket still serves the device (issue 14, item 3).
#[test]
fn a_container_reaches_the_client_socket_but_no_admin_socket() {
    let Some(mut lab) = Lab::rdma(&["ibv_devinfo"]) else {
        return;
    };
    lab.node("k9a", "198.18.1.91");
    let probe = "\
import os, socket, stat
found = []
for root, dirs, files in os.walk('/'):
    if root in ('/proc', '/sys', '/dev', '/.migros/sys'):
        dirs[:] = []
        continue
    for f in files + dirs:
        p = os.path.join(root, f)
        try:
            if stat.S_ISSOCK(os.lstat(p).st_mode):
                found.append(p)
        except OSError:
            pass
print('SOCKETS', sorted(found))
for p in ('/run/migros/rxe0.admin.sock', '/run/migros.admin/rxe0.sock'):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(p)
        print('ADMIN REACHED', p)
    except OSError as e:
        print('ADMIN UNREACHABLE', p, e.errno)
try:
    os.rename('/run/migros/rxe0.sock', '/run/migros/x')
    print('SOCKET REPLACED')
except OSError as e:
    print('SOCKET KEPT', e.errno)
";
    lab.containers.push("k9probe".into());
    let script = format!("python3 -c \"{probe}\"; ibv_devinfo -d rxe0");
    lab.ok(&[
        "run",
        "--node",
        "k9a",
        "--name",
        "k9probe",
        "--ip",
        "198.19.1.91",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(lab.wait("k9probe"), 0, "{}", lab.logs("k9probe"));
    let logs = lab.logs("k9probe");
    for want in [
        "SOCKETS ['/run/migros/rxe0.sock']",
        "ADMIN UNREACHABLE /run/migros/rxe0.admin.sock 2",
        "ADMIN UNREACHABLE /run/migros.admin/rxe0.sock 2",
        "SOCKET KEPT 30",
        "hca_id:\trxe0",
        "PORT_ACTIVE",
    ] {
        assert!(logs.contains(want), "{want:?} missing from\n{logs}");
    }
    assert!(
        !logs.contains("ADMIN REACHED") && !logs.contains("SOCKET REPLACED"),
        "{logs}"
    );
    // The node's daemon still runs.
    let list = lab.json(&["node", "list", "--json"]);
    let e = list
        .as_array()
        .and_then(|l| l.iter().find(|e| e["name"] == "k9a"))
        .unwrap_or_else(|| panic!("k9a not listed: {list}"));
    assert_eq!(e["state"], "running", "{e}");
}

#[test]
fn nodes_add_list_del_and_errors() {
    let Some(mut lab) = Lab::new() else { return };
    lab.node("k1a", "198.18.1.11");
    lab.node("k1b", "198.18.1.12");
    let list = lab.json(&["node", "list", "--json"]);
    for (n, a) in [("k1a", "198.18.1.11"), ("k1b", "198.18.1.12")] {
        let e = list
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .unwrap_or_else(|| panic!("{n} not listed: {list}"));
        assert_eq!(e["addr"], a, "{e}");
        assert_eq!(e["state"], "running", "{e}");
        assert_eq!(e["dev"], "rxe0", "{e}");
        assert!(Path::new(&format!("/run/netns/migros-{n}")).exists());
        assert!(Path::new(&format!("/run/migros/nodes/{n}/rxe0.sock")).exists());
        assert!(Path::new(&format!("/run/migros/state/nodes/{n}/migrosd.log")).exists());
    }
    assert!(lab
        .fails(&["node", "add", "k1a", "--addr", "198.18.1.13"])
        .contains("exists"));
    assert!(lab
        .fails(&["node", "add", "k1x", "--addr", "198.18.1.11"])
        .contains("taken by node k1a"));
    assert!(lab
        .fails(&["node", "add", "k1x", "--addr", "10.1.2.3"])
        .contains("198.18.0.0/16"));
    assert!(lab
        .fails(&["node", "add", "K1/x", "--addr", "198.18.1.14"])
        .contains("invalid node name"));
    assert!(lab.fails(&["node", "del", "k1nope"]).contains("not found"));
    // Not root: a clear refusal before anything is touched.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", MIGROS])
        .args(["node", "add", "k1u", "--addr", "198.18.1.15"])
        .output()
        .expect("setpriv (util-linux)");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root"), "{err}");

    lab.ok(&["node", "del", "k1a"]);
    lab.nodes.retain(|n| n != "k1a");
    assert!(!Path::new("/run/netns/migros-k1a").exists());
    assert!(!Path::new("/run/migros/nodes/k1a").exists());
    assert!(!Path::new("/sys/class/net/mh-k1a").exists());
    let list = lab.json(&["node", "list", "--json"]);
    assert!(
        !list.as_array().unwrap().iter().any(|e| e["name"] == "k1a"),
        "{list}"
    );
    assert!(lab.fails(&["node", "del", "k1a"]).contains("not found"));
    // The name and the address are free again.
    lab.node("k1a", "198.18.1.11");
}

#[test]
fn containers_run_ps_logs_wait_rm() {
    let Some(mut lab) = Lab::new() else { return };
    lab.node("k2a", "198.18.1.21");
    lab.node("k2b", "198.18.1.22");
    lab.containers.push("k2once".into());
    lab.ok(&[
        "run", "--node", "k2a", "--name", "k2once", "--ip", "198.19.1.21", "--env", "X=42",
        "--", "sh", "-c",
        "echo out; echo err >&2; echo x=$X; ls /run/migros; ls /usr/bin/python3; cat /etc/hostname 2>/dev/null; ip -4 -o addr show dev eth0; exit 7",
    ]);
    assert_eq!(lab.wait("k2once"), 7);
    let logs = lab.logs("k2once");
    for want in [
        "out",
        "err",
        "x=42",
        "rxe0.sock",
        "/usr/bin/python3",
        "198.19.1.21/32",
    ] {
        assert!(logs.contains(want), "{want:?} missing from\n{logs}");
    }
    let ps = lab.ps("k2once").expect("listed");
    assert_eq!(ps["status"], "exited(7)", "{ps}");
    assert_eq!(ps["exit_code"], 7, "{ps}");
    assert_eq!(
        (ps["node"].as_str(), ps["ip"].as_str()),
        (Some("k2a"), Some("198.19.1.21"))
    );
    // An exited container is removed without -f.
    lab.ok(&["rm", "k2once"]);
    assert!(lab.ps("k2once").is_none());

    // Two containers on two nodes talk TCP over the overlay.
    lab.container(
        "k2b",
        "k2srv",
        "198.19.1.22",
        &[
            "python3",
            "-c",
            "import socket\ns=socket.socket(); s.bind(('198.19.1.22',7100)); s.listen(1)\n\
             print('listening', flush=True)\nc,a=s.accept(); print('peer', a[0], c.recv(100).decode(), flush=True)",
        ],
    );
    lab.wait_log("k2srv", "listening");
    lab.container(
        "k2a",
        "k2cli",
        "198.19.1.23",
        &[
            "python3",
            "-c",
            "import socket\nc=socket.create_connection(('198.19.1.22',7100)); c.sendall(b'hello')",
        ],
    );
    assert_eq!(lab.wait("k2cli"), 0, "{}", lab.logs("k2cli"));
    assert_eq!(lab.wait("k2srv"), 0, "{}", lab.logs("k2srv"));
    assert!(
        lab.logs("k2srv").contains("peer 198.19.1.23 hello"),
        "{}",
        lab.logs("k2srv")
    );

    // A running container: auto address, rm needs -f, names and addresses
    // are checked.
    lab.containers.push("k2sleep".into());
    lab.ok(&[
        "run", "--node", "k2a", "--name", "k2sleep", "--", "sleep", "600",
    ]);
    let ps = lab.ps("k2sleep").expect("listed");
    assert_eq!(ps["status"], "running", "{ps}");
    assert!(ps["pid"].as_i64().is_some_and(|p| p > 1), "{ps}");
    assert!(
        ps["ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("198.19.")),
        "{ps}"
    );
    assert!(lab
        .fails(&["run", "--node", "k2a", "--name", "k2sleep", "--", "true"])
        .contains("exists"));
    assert!(lab
        .fails(&[
            "run",
            "--node",
            "k2a",
            "--name",
            "k2x",
            "--ip",
            "198.19.1.22",
            "--",
            "true"
        ])
        .contains("taken"));
    assert!(lab
        .fails(&["run", "--node", "k2a", "--name", "k2x", "--ip", "10.0.0.2", "--", "true"])
        .contains("198.19.0.0/16"));
    assert!(lab
        .fails(&["run", "--node", "k2nope", "--name", "k2x", "--", "true"])
        .contains("not found"));
    assert!(lab
        .fails(&["node", "del", "k2a"])
        .contains("still has containers"));
    assert!(lab.fails(&["rm", "k2sleep"]).contains("running"));
    lab.ok(&["rm", "-f", "k2sleep"]);
    assert!(lab.ps("k2sleep").is_none());
    assert!(lab.fails(&["rm", "k2sleep"]).contains("not found"));
}
