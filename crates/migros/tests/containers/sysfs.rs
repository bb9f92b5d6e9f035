//! What a runc container sees of its node's migros device besides the
//! socket: the placeholder node UCX checks before listing a device
//! (`/dev/infiniband/uverbs-rxe0`) and the `infiniband` class in
//! `/sys/class` UCX reads each GID's RoCE version from
//! (`engine/runc/sysfs.rs`), while the rest of `/sys/class`, `net`
//! above all, stays the container's own; after a migration the class
//! shows the new node's GID table.

use super::*;

const NODES: [(&str, &str); 2] = [("y9a", "198.18.1.241"), ("y9b", "198.18.1.242")];

/// A UCX tag ping-pong over rxe0 between two processes of one network
/// namespace, with UCX's debug log; prints `PERF <client's exit>` and the
/// traffic classes of UCX's address handles (`TC traffic_class=N`): UCX
/// picks 106 for a RoCE v2 GID and 0 for a RoCE v1 one, and knows the
/// version only from `gid_attrs/types`.
const UCX_PAIR: &str = r#"(
d=$(mktemp -d)
export UCX_TLS=rc_verbs,ud_verbs:aux UCX_NET_DEVICES=rxe0:1 UCX_LOG_LEVEL=debug
ucx_perftest -t tag_lat -n 100 -p 13461 >$d/srv 2>&1 &
sleep 1
ucx_perftest 127.0.0.1 -t tag_lat -n 100 -p 13461 >$d/cli 2>&1
echo "PERF $?"
wait
echo "TC $(grep -ho 'traffic_class=[0-9]*' $d/cli $d/srv | sort -u | tr '\n' ' ')"
)"#;

/// The container's command: what it sees once, then its GID 0 and its
/// network interfaces twice a second.
fn probe() -> String {
    format!(
        r#"c=/sys/class/infiniband/rxe0/ports/1
echo "TYPE0 $(cat $c/gid_attrs/types/0)"
echo "TYPES $(cat $c/gid_attrs/types/* | sort -u | tr '\n' ,)"
echo "GID0 $(cat $c/gids/0)"
echo "NET $(ls /sys/class/net | tr '\n' ' ')"
echo "ETH0 $(cat /sys/class/net/eth0/address | wc -c) $(readlink /sys/class/net/eth0)"
echo "MTU $(cat /sys/class/net/eth0/mtu)"
echo "CLASSES $(ls /sys/class | wc -l)"
echo "NODE $(stat -c '%F %t:%T %a' /dev/infiniband/uverbs-rxe0)"
ucx_info -d 2>&1 | grep 'Device: rxe0' | sed 's/^/UCX /'
{UCX_PAIR}
echo READY
while :; do
  echo "TICK $(cat $c/gids/0) $(cat $c/gid_attrs/types/0) $(ls /sys/class/net | tr '\n' ' ')"
  sleep 0.5
done
"#
    )
}

/// [`UCX_PAIR`] on node `node` itself, outside any container: its output.
fn ucx_pair_on_node(node: &str) -> String {
    let lib = Path::new(MIGROS)
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("ibverbs"))
        .expect("target dir");
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/migros-{node}"))
        .args(["sh", "-c", UCX_PAIR])
        .env("MIGROS_SOCKET_DIR", format!("/run/migros/nodes/{node}"))
        .env("LD_LIBRARY_PATH", lib)
        .output()
        .expect("run the UCX pair on the node");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The RoCE v2 GID of an IPv4 address as sysfs prints it.
fn gid_text(ip: &str) -> String {
    let o: Vec<u8> = ip.split('.').map(|x| x.parse().expect("octet")).collect();
    format!(
        "0000:0000:0000:0000:0000:ffff:{:02x}{:02x}:{:02x}{:02x}",
        o[0], o[1], o[2], o[3]
    )
}

#[test]
fn a_container_sees_its_device_in_sys_class_and_dev_across_a_migration() {
    let Some(mut lab) = Lab::rdma(&["ucx_info", "ucx_perftest", "nsenter"]) else {
        return;
    };
    for (n, a) in NODES {
        lab.node(n, a);
    }
    let _ = lab.run(&["rm", "-f", "y9c"]);
    let probe = probe();
    lab.container(NODES[0].0, "y9c", "198.19.1.241", &["sh", "-c", &probe]);
    lab.wait_log("y9c", "READY");
    let logs = lab.logs("y9c");
    let line = |k: &str| {
        logs.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k:?} line in\n{logs}"))
            .trim()
            .to_string()
    };
    eprintln!("{logs}");
    assert_eq!(line("TYPE0 "), "RoCE v2", "{logs}");
    assert_eq!(line("TYPES "), "RoCE v2,", "{logs}");
    assert_eq!(line("GID0 "), gid_text(NODES[0].1), "{logs}");
    // The container's own network namespace, through the second sysfs.
    assert_eq!(line("NET "), "eth0 lo", "{logs}");
    assert_eq!(line("ETH0 "), "18 ../../devices/virtual/net/eth0", "{logs}");
    assert!(line("MTU ").parse::<u32>().is_ok(), "{logs}");
    let classes: usize = line("CLASSES ").parse().expect("a count");
    assert!(classes > 10, "the kernel's classes are all there: {logs}");
    assert_eq!(line("NODE "), "character special file 1:3 666", "{logs}");
    assert!(logs.contains("UCX #"), "ucx_info lists rxe0:\n{logs}");
    // UCX takes the GID for RoCE v2 in the container; on the node, where
    // there is no class, for RoCE v1.
    assert_eq!(line("PERF "), "0", "{logs}");
    assert_eq!(line("TC "), "traffic_class=106", "{logs}");
    let host = ucx_pair_on_node(NODES[0].0);
    eprintln!("on node {} itself:\n{host}", NODES[0].0);
    if !Path::new("/sys/class/infiniband/rxe0").exists() {
        assert!(host.contains("PERF 0\nTC traffic_class=0 \n"), "{host}");
    }
    // Moved to node B and back: the class is each node's.
    for (to, addr) in [NODES[1], NODES[0]] {
        let seen = lab.logs("y9c").len();
        lab.migrate("y9c", to);
        let want = format!("TICK {} RoCE v2 eth0 lo", gid_text(addr));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let logs = lab.logs("y9c");
            if logs.get(seen..).is_some_and(|new| new.contains(&want)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "after the move to {to}, no {want:?} in\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
