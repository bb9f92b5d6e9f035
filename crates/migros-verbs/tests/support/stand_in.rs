//! A stand-in daemon for the tests that need no root: it answers the
//! client's requests from a script instead of running a device.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use migros_proto::msg::{DeviceInfo, Request, Response};
use migros_verbs::*;

/// The device a stand-in daemon reports: `name` at `addr`, CQs of up to
/// `max_cqe` entries, generous limits otherwise.
pub fn device(name: &str, addr: &str, max_cqe: u32) -> DeviceInfo {
    DeviceInfo {
        name: name.into(),
        addr: addr.parse().unwrap(),
        gids: vec![addr.parse().unwrap()],
        port_active: true,
        mtu: Mtu::Mtu1024,
        node_guid: 1,
        max_qp: 16,
        max_qp_wr: 1024,
        max_sge: 8,
        max_cq: 16,
        max_cqe,
        max_mr: 16,
        max_mr_size: 1 << 30,
        max_pd: 16,
        max_qp_rd_atom: 16,
        max_srq: 16,
        max_srq_wr: 1024,
        max_inline_data: 128,
    }
}

/// How a stand-in daemon that accepts everything answers `req`: session
/// `session` on `device`, PD 1, MR lkey 3 / rkey 4, CQ `cq`, QP `qpn`,
/// SRQ 6, `Ok` to the rest; `None` for a doorbell (never answered).
pub fn answer(
    req: &Request,
    device: &DeviceInfo,
    session: u64,
    cq: Cqn,
    qpn: Qpn,
) -> Option<Response> {
    Some(match req {
        Request::Hello { .. } => Response::Welcome {
            session,
            device: device.clone(),
        },
        Request::AllocPd => Response::Pd { pd: 1 },
        Request::RegMr { .. } => Response::Mr { lkey: 3, rkey: 4 },
        Request::CreateCq { .. } => Response::Cq { cq },
        Request::CreateQp { .. } => Response::Qp { qpn },
        Request::CreateSrq { .. } => Response::Srq { srq: 6 },
        Request::SqDoorbell { .. } | Request::RqDoorbell { .. } | Request::SrqDoorbell { .. } => {
            return None
        }
        _ => Response::Ok,
    })
}

/// Listens on device `name`'s socket in `dir` and serves each connection
/// in a thread of its own with `serve`.
pub fn listen(dir: &Path, name: &str, serve: impl Fn(UnixStream) + Clone + Send + 'static) {
    let listener = UnixListener::bind(migros_proto::paths::device_socket(dir, name)).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let serve = serve.clone();
            std::thread::spawn(move || serve(stream));
        }
    });
}
