"""Debian's python3-pyverbs on the drop-in libibverbs (run by
tests/pyverbs.rs with LD_LIBRARY_PATH=target/ibverbs and two daemons in
MIGROS_SOCKET_DIR): open both devices, query device, port and GID, make a
PD, an MR, a CQ (with a completion channel) and an RC QP on each, connect the QPs through the GID, then
a SEND/RECV and an RDMA WRITE with the data checked, a completion event,
memory windows of both types, and what migros does not support (XRC,
parent domains, flow steering, imported objects) failing with EOPNOTSUPP. Prints "pyverbs ok" at the end.
Usage: pyverbs_rc.py DEV_A DEV_B
"""

import errno
import sys
import time

import pyverbs.device as d
import pyverbs.enums as e
from pyverbs.addr import AHAttr, GlobalRoute
from pyverbs.cq import CQ, CompChannel
from pyverbs.flow import Flow, FlowAttr
from pyverbs.mr import MR, MW
from pyverbs.pd import PD, ParentDomain, ParentDomainInitAttr
from pyverbs.pyverbs_error import PyverbsRDMAError
from pyverbs.qp import QP, QPAttr, QPCap, QPInitAttr
from pyverbs.wr import SGE, RecvWR, SendWR
from pyverbs.xrcd import XRCD, XRCDInitAttr

SIZE = 4096
ACCESS = (e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE
          | e.IBV_ACCESS_REMOTE_READ)


class Side:
    """One device with its PD, MR, CQ and RC QP."""

    def __init__(self, name):
        self.ctx = d.Context(name=name)
        attr = self.ctx.query_device()
        assert attr.max_qp > 0 and attr.max_mr_size > 0, attr
        port = self.ctx.query_port(1)
        assert port.state == e.IBV_PORT_ACTIVE, port
        assert port.link_layer == e.IBV_LINK_LAYER_ETHERNET, port
        self.mtu = port.active_mtu
        self.gid = self.ctx.query_gid(1, 0)
        # A RoCE v2 GID of an IPv4 address: ::ffff:a.b.c.d
        assert str(self.gid).startswith("0000:0000:0000:0000:0000:ffff:"), self.gid
        self.pd = PD(self.ctx)
        self.mr = MR(self.pd, SIZE, ACCESS)
        self.channel = CompChannel(self.ctx)
        self.cq = CQ(self.ctx, 16, None, self.channel, 0)
        cap = QPCap(max_send_wr=8, max_recv_wr=8, max_send_sge=1,
                    max_recv_sge=1)
        init = QPInitAttr(qp_type=e.IBV_QPT_RC, scq=self.cq, rcq=self.cq,
                          cap=cap)
        self.qp = QP(self.pd, init)
        print(f"{name}: qpn {self.qp.qp_num:#x} gid {self.gid} "
              f"lkey {self.mr.lkey:#x} mtu {self.mtu}")

    def connect(self, other):
        attr = QPAttr(qp_state=e.IBV_QPS_INIT)
        attr.qp_access_flags = ACCESS
        attr.port_num = 1
        self.qp.to_init(attr)
        attr = QPAttr(qp_state=e.IBV_QPS_RTR)
        attr.path_mtu = min(self.mtu, other.mtu)
        attr.dest_qp_num = other.qp.qp_num
        attr.rq_psn = 0
        attr.max_dest_rd_atomic = 1
        attr.min_rnr_timer = 12
        gr = GlobalRoute(dgid=other.gid, sgid_index=0, hop_limit=64)
        attr.ah_attr = AHAttr(port_num=1, is_global=1, gr=gr)
        self.qp.to_rtr(attr)
        attr = QPAttr(qp_state=e.IBV_QPS_RTS)
        attr.sq_psn = 0
        attr.timeout = 14
        attr.retry_cnt = 7
        attr.rnr_retry = 7
        attr.max_rd_atomic = 1
        self.qp.to_rts(attr)
        assert self.qp.query(e.IBV_QP_STATE)[0].qp_state == e.IBV_QPS_RTS

    def wait(self, count):
        """The next `count` completions, all successful."""
        got = []
        deadline = time.time() + 10
        while len(got) < count:
            assert time.time() < deadline, f"only {len(got)} completions"
            n, wcs = self.cq.poll(count - len(got))
            got += wcs[:n]
        for wc in got:
            assert wc.status == e.IBV_WC_SUCCESS, wc
        return got


def unsupported(what, call):
    """`call` must fail with EOPNOTSUPP, as rdma-core's for such a provider."""
    try:
        call()
    except PyverbsRDMAError as err:
        assert err.error_code == errno.EOPNOTSUPP, (what, err)
        print(f"{what}: EOPNOTSUPP")
        return
    raise AssertionError(f"{what} succeeded")


def main():
    names = [dev.name.decode() for dev in d.get_device_list()]
    assert sys.argv[1] in names and sys.argv[2] in names, names
    a, b = Side(sys.argv[1]), Side(sys.argv[2])
    a.connect(b)
    b.connect(a)

    # SEND/RECV: a's buffer lands in b's.
    msg = bytes((i * 7 + 3) % 256 for i in range(SIZE))
    a.mr.write(msg, SIZE)
    b.qp.post_recv(RecvWR(wr_id=1, num_sge=1,
                          sg=[SGE(b.mr.buf, SIZE, b.mr.lkey)]))
    a.qp.post_send(SendWR(wr_id=2, opcode=e.IBV_WR_SEND, num_sge=1,
                          sg=[SGE(a.mr.buf, SIZE, a.mr.lkey)],
                          send_flags=e.IBV_SEND_SIGNALED))
    (sent,) = a.wait(1)
    (recv,) = b.wait(1)
    assert sent.wr_id == 2 and sent.opcode == e.IBV_WC_SEND, sent
    assert recv.wr_id == 1 and recv.opcode == e.IBV_WC_RECV, recv
    assert recv.byte_len == SIZE, recv
    assert b.mr.read(SIZE, 0) == msg, "SEND data differs"
    print("send/recv ok")

    # RDMA WRITE: b writes 1000 bytes into a's MR at offset 100.
    data = bytes((i * 13 + 1) % 256 for i in range(1000))
    b.mr.write(data, len(data))
    wr = SendWR(wr_id=3, opcode=e.IBV_WR_RDMA_WRITE, num_sge=1,
                sg=[SGE(b.mr.buf, len(data), b.mr.lkey)],
                send_flags=e.IBV_SEND_SIGNALED)
    wr.set_wr_rdma(a.mr.rkey, a.mr.buf + 100)
    b.qp.post_send(wr)
    (done,) = b.wait(1)
    assert done.wr_id == 3 and done.opcode == e.IBV_WC_RDMA_WRITE, done
    got = a.mr.read(SIZE, 0)
    assert got[100:1100] == data, "RDMA WRITE data differs"
    assert got[:100] == msg[:100] and got[1100:] == msg[1100:], "WRITE overran"
    print("rdma write ok")

    # A completion channel: b's CQ, armed, gets one event for a's SEND.
    b.qp.post_recv(RecvWR(wr_id=4, num_sge=1,
                          sg=[SGE(b.mr.buf, SIZE, b.mr.lkey)]))
    b.cq.req_notify()
    a.qp.post_send(SendWR(wr_id=5, opcode=e.IBV_WR_SEND, num_sge=1,
                          sg=[SGE(a.mr.buf, 64, a.mr.lkey)],
                          send_flags=e.IBV_SEND_SIGNALED))
    b.channel.get_cq_event(b.cq)
    b.cq.ack_events(1)
    (recv,) = b.wait(1)
    assert recv.wr_id == 4 and recv.byte_len == 64, recv
    a.wait(1)
    print("completion event ok")

    # Memory windows exist (as on rxe): both types allocate, with an rkey.
    for mw_type in (e.IBV_MW_TYPE_1, e.IBV_MW_TYPE_2):
        mw = MW(a.pd, mw_type)
        assert mw.rkey != 0, mw_type
        mw.close()
    print("ibv_alloc_mw ok")

    # What migros does not have fails as rdma-core's dummy provider ops do.
    unsupported("ibv_import_pd", lambda: PD(a.ctx, handle=1))
    unsupported("ibv_open_xrcd", lambda: XRCD(a.ctx, XRCDInitAttr(
        comp_mask=e.IBV_XRCD_INIT_ATTR_FD | e.IBV_XRCD_INIT_ATTR_OFLAGS,
        oflags=0, fd=-1)))
    unsupported("ibv_alloc_parent_domain", lambda: ParentDomain(
        a.ctx, attr=ParentDomainInitAttr(pd=a.pd)))
    unsupported("ibv_create_flow", lambda: Flow(a.qp, FlowAttr()))
    print("pyverbs ok")


if __name__ == "__main__":
    main()
