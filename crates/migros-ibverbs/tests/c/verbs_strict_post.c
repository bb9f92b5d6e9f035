/* verbs_strict's cases of posting work: post_state, bad_wr, access_flags,
 * atomic_write, srq_ex. */
#include "verbs_strict.h"

/* ---- posting in states that forbid it ---- */

void case_post_state(char **argv)
{
	struct side a, b;
	side_init(&a, argv[2]);
	side_init(&b, argv[3]);
	struct ibv_sge sge = { (uintptr_t)a.buf, 64, a.mr->lkey };
	struct ibv_send_wr s = send_wr(&sge, 100, IBV_WR_SEND), *bad_s = NULL;
	struct ibv_recv_wr r = { .wr_id = 101, .sg_list = &sge, .num_sge = 1 },
			   *bad_r = NULL;

	/* RESET: neither queue takes work (C10-97.2.1; rxe EINVAL). */
	CHECK(ibv_post_send(a.qp, &s, &bad_s) == EINVAL && bad_s == &s, "send RESET");
	CHECK(ibv_post_recv(a.qp, &r, &bad_r) == EINVAL && bad_r == &r, "recv RESET");
	/* INIT: receives yes, sends no. */
	to_init(a.qp, REMOTE_ALL);
	r.wr_id = 2;
	bad_r = NULL;
	CHECK(!ibv_post_recv(a.qp, &r, &bad_r), "recv INIT");
	s.wr_id = 102;
	bad_s = NULL;
	CHECK(ibv_post_send(a.qp, &s, &bad_s) == EINVAL && bad_s == &s, "send INIT");
	struct ibv_qp_ex *qx = ibv_qp_to_qp_ex(a.qp);
	ibv_wr_start(qx);
	qx->wr_id = 103;
	qx->wr_flags = IBV_SEND_SIGNALED;
	ibv_wr_send(qx);
	ibv_wr_set_sge(qx, a.mr->lkey, (uintptr_t)a.buf, 8);
	CHECK(ibv_wr_complete(qx) == EINVAL, "wr_complete INIT");
	/* RTR: still no sends. */
	to_init(b.qp, REMOTE_ALL);
	to_rtr(a.qp, &b, 4);
	to_rtr(b.qp, &a, 4);
	s.wr_id = 104;
	bad_s = NULL;
	CHECK(ibv_post_send(a.qp, &s, &bad_s) == EINVAL && bad_s == &s, "send RTR");
	/* RTS: both. The receive posted in INIT takes b's message. */
	to_rts(a.qp);
	to_rts(b.qp);
	struct ibv_sge bs = { (uintptr_t)b.buf, 64, b.mr->lkey };
	struct ibv_send_wr m = send_wr(&bs, 4, IBV_WR_SEND);
	CHECK(!post1(b.qp, &m), "b sends");
	expect_wc(b.cq, 4, IBV_WC_SUCCESS, IBV_WC_SEND);
	expect_wc(a.cq, 2, IBV_WC_SUCCESS, IBV_WC_RECV);
	post_recv(b.qp, &b, 50);
	s.wr_id = 1;
	CHECK(!post1(a.qp, &s), "send RTS");
	expect_wc(a.cq, 1, IBV_WC_SUCCESS, IBV_WC_SEND);
	expect_wc(b.cq, 50, IBV_WC_SUCCESS, IBV_WC_RECV);
	ibv_wr_start(qx);
	qx->wr_id = 5;
	qx->wr_flags = IBV_SEND_SIGNALED;
	ibv_wr_rdma_write(qx, b.mr->rkey, (uintptr_t)b.buf);
	ibv_wr_set_sge(qx, a.mr->lkey, (uintptr_t)a.buf, 8);
	CHECK(!ibv_wr_complete(qx), "wr_complete RTS");
	expect_wc(a.cq, 5, IBV_WC_SUCCESS, IBV_WC_RDMA_WRITE);
	/* Nothing of the refused WRs (100 … 104) ever completes. */
	no_wc(a.cq);
	printf("post_state ok\n");
}

/* ---- bad_wr points at the first WR not posted ---- */

void case_bad_wr(char **argv)
{
	struct side a, b;
	pair(&a, &b, argv, REMOTE_ALL);
	struct ibv_sge sge[5];
	for (int i = 0; i < 5; i++)
		sge[i] = (struct ibv_sge){ (uintptr_t)a.buf + 8 * i, 8, a.mr->lkey };
	/* Send list: ok, too many SGEs, ok. The QP asked for 2 SGEs and 64
	 * inline bytes; as rxe (rxe_qp_init_req) its WQE holds the larger of
	 * the two and both limits grow to fill it: 64 / 16 = 4 SGEs. */
	struct ibv_send_wr w[3];
	for (int i = 0; i < 3; i++) {
		w[i] = send_wr(&sge[0], 10 + i, IBV_WR_RDMA_WRITE);
		w[i].wr.rdma.remote_addr = (uintptr_t)b.buf;
		w[i].wr.rdma.rkey = b.mr->rkey;
		w[i].next = i < 2 ? &w[i + 1] : NULL;
	}
	w[1].sg_list = sge;
	w[1].num_sge = 5;
	struct ibv_send_wr *bad_s = NULL;
	CHECK(ibv_post_send(a.qp, w, &bad_s) == EINVAL, "send list");
	CHECK(bad_s == &w[1], "bad_wr is the second WR (%p, not %p)", bad_s, &w[1]);
	expect_wc(a.cq, 10, IBV_WC_SUCCESS, IBV_WC_RDMA_WRITE);
	no_wc(a.cq);
	/* An unknown opcode stops the list there too. */
	w[1].num_sge = 1;
	w[1].opcode = 99;
	bad_s = NULL;
	CHECK(ibv_post_send(a.qp, w, &bad_s) == EINVAL && bad_s == &w[1],
	      "unknown opcode");
	expect_wc(a.cq, 10, IBV_WC_SUCCESS, IBV_WC_RDMA_WRITE);

	/* Receive list on b. */
	struct ibv_sge bsge[3] = {
		{ (uintptr_t)b.buf, 8, b.mr->lkey },
		{ (uintptr_t)b.buf + 8, 8, b.mr->lkey },
		{ (uintptr_t)b.buf + 16, 8, b.mr->lkey },
	};
	struct ibv_recv_wr r[3];
	for (int i = 0; i < 3; i++) {
		r[i] = (struct ibv_recv_wr){ .wr_id = 20 + i, .sg_list = bsge,
					     .num_sge = 1,
					     .next = i < 2 ? &r[i + 1] : NULL };
	}
	r[1].num_sge = 3;
	struct ibv_recv_wr *bad_r = NULL;
	CHECK(ibv_post_recv(b.qp, r, &bad_r) == EINVAL && bad_r == &r[1],
	      "recv list: bad_wr %p, not %p", bad_r, &r[1]);
	/* Exactly one receive was posted: one SEND lands, the next waits. */
	struct ibv_send_wr sd = send_wr(&sge[0], 30, IBV_WR_SEND);
	CHECK(!post1(a.qp, &sd), "send");
	expect_wc(b.cq, 20, IBV_WC_SUCCESS, IBV_WC_RECV);
	expect_wc(a.cq, 30, IBV_WC_SUCCESS, IBV_WC_SEND);

	/* SRQ list. */
	struct ibv_srq_init_attr sa = { .attr = { .max_wr = 8, .max_sge = 1 } };
	struct ibv_srq *srq = ibv_create_srq(b.pd, &sa);
	CHECK(srq, "srq");
	r[1].num_sge = 2;
	bad_r = NULL;
	CHECK(ibv_post_srq_recv(srq, r, &bad_r) == EINVAL && bad_r == &r[1],
	      "srq list: bad_wr %p, not %p", bad_r, &r[1]);
	printf("bad_wr ok\n");
}

/* ---- QP access flags: the responder refuses what they do not allow ---- */

void case_access_flags(char **argv)
{
	struct { const char *name; int allow; enum ibv_wr_opcode op; } cases[] = {
		{ "read", IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC,
		  IBV_WR_RDMA_READ },
		{ "write", IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC,
		  IBV_WR_RDMA_WRITE },
		{ "atomic", IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE,
		  IBV_WR_ATOMIC_FETCH_AND_ADD },
		{ "allowed", REMOTE_ALL, IBV_WR_ATOMIC_FETCH_AND_ADD },
	};
	for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct side a, b;
		pair(&a, &b, argv, cases[i].allow);
		struct ibv_sge sge = { (uintptr_t)a.buf, 8, a.mr->lkey };
		struct ibv_send_wr w = send_wr(&sge, 1, cases[i].op);
		if (cases[i].op == IBV_WR_ATOMIC_FETCH_AND_ADD) {
			w.wr.atomic.remote_addr = (uintptr_t)b.buf;
			w.wr.atomic.rkey = b.mr->rkey;
			w.wr.atomic.compare_add = 1;
		} else {
			w.wr.rdma.remote_addr = (uintptr_t)b.buf;
			w.wr.rdma.rkey = b.mr->rkey;
		}
		CHECK(!post1(a.qp, &w), "post %s", cases[i].name);
		struct ibv_wc wc = wait_wc(a.cq);
		/* rxe: an operation the QP does not allow is an invalid
		 * request (NAK), not a remote access error. */
		enum ibv_wc_status want = cases[i].allow == REMOTE_ALL ?
						  IBV_WC_SUCCESS :
						  IBV_WC_REM_INV_REQ_ERR;
		CHECK(wc.status == want, "%s: status %s", cases[i].name,
		      ibv_wc_status_str(wc.status));
		struct ibv_qp_attr qa;
		struct ibv_qp_init_attr qi;
		CHECK(!ibv_query_qp(b.qp, &qa, IBV_QP_STATE, &qi), "query");
		CHECK((qa.qp_state == IBV_QPS_ERR) == (want != IBV_WC_SUCCESS),
		      "%s: responder state %d", cases[i].name, qa.qp_state);
	}
	printf("access_flags ok\n");
}

/* ---- ATOMIC WRITE and LOCAL_INV ---- */

void case_atomic_write(char **argv)
{
	struct side a, b;
	pair(&a, &b, argv, REMOTE_ALL);
	uint64_t v = 0x1122334455667788ull;
	memcpy(a.buf, &v, 8);
	/* ibv_post_send: the 8 bytes from the SGE, the target in wr.rdma. */
	struct ibv_sge sge = { (uintptr_t)a.buf, 8, a.mr->lkey };
	struct ibv_send_wr w = send_wr(&sge, 1, IBV_WR_ATOMIC_WRITE);
	w.wr.rdma.remote_addr = (uintptr_t)b.buf + 64;
	w.wr.rdma.rkey = b.mr->rkey;
	CHECK(!post1(a.qp, &w), "post");
	expect_wc(a.cq, 1, IBV_WC_SUCCESS, IBV_WC_ATOMIC_WRITE);
	CHECK(!memcmp(b.buf + 64, &v, 8), "stored");
	/* ibv_wr_atomic_write: the 8 bytes from the caller's buffer. */
	uint64_t v2 = 0xdeadbeefcafef00dull;
	struct ibv_qp_ex *qx = ibv_qp_to_qp_ex(a.qp);
	ibv_wr_start(qx);
	qx->wr_id = 2;
	qx->wr_flags = IBV_SEND_SIGNALED;
	ibv_wr_atomic_write(qx, b.mr->rkey, (uintptr_t)b.buf + 128, &v2);
	CHECK(!ibv_wr_complete(qx), "wr_complete");
	expect_wc(a.cq, 2, IBV_WC_SUCCESS, IBV_WC_ATOMIC_WRITE);
	CHECK(!memcmp(b.buf + 128, &v2, 8), "stored by the new API");
	/* Misaligned: invalid request, as rxe. */
	w.wr_id = 3;
	w.wr.rdma.remote_addr = (uintptr_t)b.buf + 65;
	CHECK(!post1(a.qp, &w), "post");
	expect_wc(a.cq, 3, IBV_WC_REM_INV_REQ_ERR, IBV_WC_ATOMIC_WRITE);

	/* LOCAL_INV of a region's key: rxe invalidates fast-registration
	 * regions only, so this is a local QP operation error. */
	struct side c, d;
	pair(&c, &d, argv, REMOTE_ALL);
	struct ibv_send_wr inv = send_wr(NULL, 4, IBV_WR_LOCAL_INV);
	inv.invalidate_rkey = c.mr->rkey;
	CHECK(!post1(c.qp, &inv), "post local inv");
	expect_wc(c.cq, 4, IBV_WC_LOC_QP_OP_ERR, IBV_WC_LOCAL_INV);
	printf("atomic_write ok\n");
}

/* ---- ibv_create_srq_ex ---- */

void case_srq_ex(char **argv)
{
	struct side a;
	side_init(&a, argv[2]);
	struct ibv_srq_init_attr_ex x = {
		.attr = { .max_wr = 8, .max_sge = 1 },
		.comp_mask = IBV_SRQ_INIT_ATTR_PD | IBV_SRQ_INIT_ATTR_TYPE,
		.srq_type = IBV_SRQT_BASIC,
		.pd = a.pd,
	};
	struct ibv_srq *srq = ibv_create_srq_ex(a.ctx, &x);
	CHECK(srq && x.attr.max_wr >= 8, "basic");
	CHECK(!ibv_destroy_srq(srq), "destroy");
	/* A CQ named for a basic SRQ is ignored, as the kernel does. */
	x.comp_mask |= IBV_SRQ_INIT_ATTR_CQ;
	x.cq = a.cq;
	srq = ibv_create_srq_ex(a.ctx, &x);
	CHECK(srq, "basic with a cq");
	CHECK(!ibv_destroy_srq(srq), "destroy");
	x.srq_type = IBV_SRQT_XRC;
	errno = 0;
	CHECK(!ibv_create_srq_ex(a.ctx, &x) && errno == EOPNOTSUPP, "xrc");
	x.srq_type = IBV_SRQT_TM;
	x.comp_mask |= IBV_SRQ_INIT_ATTR_TM;
	errno = 0;
	CHECK(!ibv_create_srq_ex(a.ctx, &x) && errno == EOPNOTSUPP, "tm");
	x.srq_type = IBV_SRQT_BASIC;
	x.comp_mask = IBV_SRQ_INIT_ATTR_PD | IBV_SRQ_INIT_ATTR_CQ | 0x40;
	errno = 0;
	CHECK(!ibv_create_srq_ex(a.ctx, &x) && errno == EINVAL, "unknown bit");
	x.comp_mask = IBV_SRQ_INIT_ATTR_TYPE | IBV_SRQ_INIT_ATTR_CQ;
	errno = 0;
	CHECK(!ibv_create_srq_ex(a.ctx, &x) && errno == EINVAL, "no pd");
	printf("srq_ex ok\n");
}
