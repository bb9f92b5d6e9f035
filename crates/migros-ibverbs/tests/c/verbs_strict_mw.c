/* verbs_strict's cases of memory windows and resizing: mw, iova,
 * resize_cq. */
#include "verbs_strict.h"

/* ---- memory windows ---- */

/* b binds window mw over b.buf[4096, 4096 + 1024) with post_send. */
static uint32_t bind_type2(struct side *b, struct ibv_mw *mw, uint64_t id,
			   int access)
{
	struct ibv_send_wr w = send_wr(NULL, id, IBV_WR_BIND_MW);
	w.bind_mw.mw = mw;
	w.bind_mw.rkey = ibv_inc_rkey(mw->rkey);
	w.bind_mw.bind_info.mr = b->mr;
	w.bind_mw.bind_info.addr = (uintptr_t)b->buf + 4096;
	w.bind_mw.bind_info.length = 1024;
	w.bind_mw.bind_info.mw_access_flags = access;
	CHECK(!post1(b->qp, &w), "post bind");
	expect_wc(b->cq, id, IBV_WC_SUCCESS, IBV_WC_BIND_MW);
	mw->rkey = w.bind_mw.rkey;
	return mw->rkey;
}

/* a writes 8 bytes at b.buf + off through rkey; returns the status. */
static enum ibv_wc_status write_at(struct side *a, struct side *b,
				   uint32_t rkey, size_t off, uint64_t id)
{
	struct ibv_sge sge = { (uintptr_t)a->buf, 8, a->mr->lkey };
	struct ibv_send_wr w = send_wr(&sge, id, IBV_WR_RDMA_WRITE);
	w.wr.rdma.remote_addr = (uintptr_t)b->buf + off;
	w.wr.rdma.rkey = rkey;
	CHECK(!post1(a->qp, &w), "post write");
	struct ibv_wc wc = wait_wc(a->cq);
	CHECK(wc.wr_id == id, "wr %llu", (unsigned long long)wc.wr_id);
	return wc.status;
}

void case_mw(char **argv)
{
	struct side a, b;
	pair(&a, &b, argv, REMOTE_ALL);
	struct ibv_device_attr da;
	CHECK(!ibv_query_device(b.ctx, &da), "query_device");
	CHECK(da.max_mw > 0 && (da.device_cap_flags & IBV_DEVICE_MEM_WINDOW) &&
		      (da.device_cap_flags & IBV_DEVICE_MEM_WINDOW_TYPE_2B),
	      "windows advertised");
	errno = 0;
	CHECK(!ibv_alloc_mw(b.pd, 3) && errno == EINVAL, "type 3");

	/* Type 2: bound by a work request, used, invalidated locally. */
	struct ibv_mw *mw = ibv_alloc_mw(b.pd, IBV_MW_TYPE_2);
	CHECK(mw && mw->type == IBV_MW_TYPE_2, "alloc type 2");
	uint32_t k = bind_type2(&b, mw, 1, IBV_ACCESS_REMOTE_WRITE);
	memcpy(a.buf, "window!", 8);
	CHECK(write_at(&a, &b, k, 4096 + 16, 2) == IBV_WC_SUCCESS, "write in");
	CHECK(!memcmp(b.buf + 4096 + 16, "window!", 8), "landed");
	/* The region stays while a window is bound to it (rxe: EINVAL). */
	CHECK(ibv_dereg_mr(b.mr) == EINVAL, "dereg with a bound window");
	struct ibv_send_wr inv = send_wr(NULL, 3, IBV_WR_LOCAL_INV);
	inv.invalidate_rkey = k;
	CHECK(!post1(b.qp, &inv), "local inv");
	expect_wc(b.cq, 3, IBV_WC_SUCCESS, IBV_WC_LOCAL_INV);
	CHECK(write_at(&a, &b, k, 4096 + 16, 4) == IBV_WC_REM_ACCESS_ERR,
	      "invalidated");
	CHECK(!ibv_dealloc_mw(mw), "dealloc");

	/* Outside the window but inside the region: refused. */
	pair(&a, &b, argv, REMOTE_ALL);
	mw = ibv_alloc_mw(b.pd, IBV_MW_TYPE_2);
	CHECK(mw, "alloc");
	k = bind_type2(&b, mw, 1, IBV_ACCESS_REMOTE_WRITE);
	CHECK(write_at(&a, &b, k, 4096 + 1020, 2) == IBV_WC_REM_ACCESS_ERR,
	      "past the window's end");

	/* ibv_wr_bind_mw, then SEND_WITH_INV from the peer frees it. */
	pair(&a, &b, argv, REMOTE_ALL);
	mw = ibv_alloc_mw(b.pd, IBV_MW_TYPE_2);
	CHECK(mw, "alloc");
	struct ibv_qp_ex *qx = ibv_qp_to_qp_ex(b.qp);
	struct ibv_mw_bind_info info = {
		.mr = b.mr, .addr = (uintptr_t)b.buf + 4096, .length = 1024,
		.mw_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ,
	};
	uint32_t k2 = ibv_inc_rkey(mw->rkey);
	ibv_wr_start(qx);
	qx->wr_id = 5;
	qx->wr_flags = IBV_SEND_SIGNALED;
	ibv_wr_bind_mw(qx, mw, k2, &info);
	CHECK(!ibv_wr_complete(qx), "wr_bind_mw");
	expect_wc(b.cq, 5, IBV_WC_SUCCESS, IBV_WC_BIND_MW);
	mw->rkey = k2;
	CHECK(write_at(&a, &b, k2, 4096, 6) == IBV_WC_SUCCESS, "write through");
	post_recv(b.qp, &b, 7);
	struct ibv_sge sge = { (uintptr_t)a.buf, 8, a.mr->lkey };
	struct ibv_send_wr si = send_wr(&sge, 8, IBV_WR_SEND_WITH_INV);
	si.invalidate_rkey = k2;
	CHECK(!post1(a.qp, &si), "send with inv");
	expect_wc(a.cq, 8, IBV_WC_SUCCESS, IBV_WC_SEND);
	struct ibv_wc wc = wait_wc(b.cq);
	CHECK(wc.wr_id == 7 && wc.status == IBV_WC_SUCCESS &&
		      (wc.wc_flags & IBV_WC_WITH_INV) && wc.invalidated_rkey == k2,
	      "invalidated rkey reported: flags %#x rkey %#x", wc.wc_flags,
	      wc.invalidated_rkey);
	CHECK(write_at(&a, &b, k2, 4096, 9) == IBV_WC_REM_ACCESS_ERR,
	      "freed by the peer");

	/* SEND_WITH_INV of a region's key: both sides fail (rxe class J). */
	pair(&a, &b, argv, REMOTE_ALL);
	post_recv(b.qp, &b, 1);
	struct ibv_sge sg2 = { (uintptr_t)a.buf, 8, a.mr->lkey };
	si = send_wr(&sg2, 2, IBV_WR_SEND_WITH_INV);
	si.invalidate_rkey = b.mr->rkey;
	CHECK(!post1(a.qp, &si), "send with inv");
	expect_wc(b.cq, 1, IBV_WC_REM_INV_REQ_ERR, IBV_WC_RECV);
	expect_wc(a.cq, 2, IBV_WC_REM_INV_REQ_ERR, IBV_WC_SEND);

	/* Type 1: ibv_bind_mw. */
	pair(&a, &b, argv, REMOTE_ALL);
	struct ibv_mw *m1 = ibv_alloc_mw(b.pd, IBV_MW_TYPE_1);
	CHECK(m1 && m1->type == IBV_MW_TYPE_1, "alloc type 1");
	uint32_t before = m1->rkey;
	struct ibv_mw_bind mb = {
		.wr_id = 10, .send_flags = IBV_SEND_SIGNALED,
		.bind_info = { .mr = b.mr, .addr = (uintptr_t)b.buf + 8192,
			       .length = 512,
			       .mw_access_flags = IBV_ACCESS_REMOTE_READ },
	};
	CHECK(!ibv_bind_mw(b.qp, m1, &mb), "bind type 1");
	CHECK(m1->rkey == ibv_inc_rkey(before), "rkey moved on at post");
	expect_wc(b.cq, 10, IBV_WC_SUCCESS, IBV_WC_BIND_MW);
	memcpy(b.buf + 8192, "type one", 8);
	struct ibv_sge rs = { (uintptr_t)a.buf + 100, 8, a.mr->lkey };
	struct ibv_send_wr rd = send_wr(&rs, 11, IBV_WR_RDMA_READ);
	rd.wr.rdma.remote_addr = (uintptr_t)b.buf + 8192;
	rd.wr.rdma.rkey = m1->rkey;
	CHECK(!post1(a.qp, &rd), "read");
	expect_wc(a.cq, 11, IBV_WC_SUCCESS, IBV_WC_RDMA_READ);
	CHECK(!memcmp(a.buf + 100, "type one", 8), "read through type 1");
	/* What ibv_bind_mw refuses before posting. */
	mb.bind_info.mw_access_flags |= IBV_ACCESS_ZERO_BASED;
	CHECK(ibv_bind_mw(b.qp, m1, &mb) == EINVAL, "zero based type 1");
	mb.bind_info.mw_access_flags = IBV_ACCESS_REMOTE_READ;
	CHECK(ibv_bind_mw(b.qp, mw, &mb) == EINVAL, "ibv_bind_mw of type 2");
	/* A region without MW_BIND: the bind completes in error. */
	static char plain[4096];
	struct ibv_mr *pm = ibv_reg_mr(b.pd, plain, sizeof plain,
				       IBV_ACCESS_LOCAL_WRITE);
	CHECK(pm, "plain mr");
	mb.wr_id = 12;
	mb.bind_info.mr = pm;
	mb.bind_info.addr = (uintptr_t)plain;
	CHECK(!ibv_bind_mw(b.qp, m1, &mb), "posted");
	expect_wc(b.cq, 12, IBV_WC_MW_BIND_ERR, IBV_WC_BIND_MW);
	printf("mw ok\n");
}

/* ---- ibv_reg_mr_iova ---- */

void case_iova(char **argv)
{
	struct side a, b;
	pair(&a, &b, argv, REMOTE_ALL);
	static char region[8192];
	uint64_t iova = 0x100000000ull;
	struct ibv_mr *mr = ibv_reg_mr_iova(b.pd, region, sizeof region, iova,
					    ALL_ACCESS);
	CHECK(mr, "reg_mr_iova");
	struct ibv_sge sge = { (uintptr_t)a.buf, 8, a.mr->lkey };
	memcpy(a.buf, "iova ok", 8);
	struct ibv_send_wr w = send_wr(&sge, 1, IBV_WR_RDMA_WRITE);
	w.wr.rdma.remote_addr = iova + 64;
	w.wr.rdma.rkey = mr->rkey;
	CHECK(!post1(a.qp, &w), "write");
	expect_wc(a.cq, 1, IBV_WC_SUCCESS, IBV_WC_RDMA_WRITE);
	CHECK(!memcmp(region + 64, "iova ok", 8), "landed at addr + 64");
	/* The virtual address is not the region's address any more. */
	w.wr_id = 2;
	w.wr.rdma.remote_addr = (uintptr_t)region;
	CHECK(!post1(a.qp, &w), "write");
	expect_wc(a.cq, 2, IBV_WC_REM_ACCESS_ERR, IBV_WC_RDMA_WRITE);
	printf("iova ok\n");
}

/* ---- ibv_resize_cq ---- */

void case_resize_cq(char **argv)
{
	struct side a, b;
	pair(&a, &b, argv, REMOTE_ALL);
	struct ibv_device_attr da;
	CHECK(!ibv_query_device(b.ctx, &da), "query_device");
	for (int i = 0; i < 5; i++) {
		post_recv(b.qp, &b, 100 + i);
		struct ibv_sge sge = { (uintptr_t)a.buf, 8, a.mr->lkey };
		struct ibv_send_wr w = send_wr(&sge, i, IBV_WR_SEND);
		CHECK(!post1(a.qp, &w), "send");
		expect_wc(a.cq, i, IBV_WC_SUCCESS, IBV_WC_SEND);
	}
	CHECK(ibv_resize_cq(b.cq, 2) == EINVAL, "smaller than what it holds");
	CHECK(ibv_resize_cq(b.cq, da.max_cqe + 1) == EINVAL, "past max_cqe");
	CHECK(!ibv_resize_cq(b.cq, 1000) && b.cq->cqe >= 1000, "grown: %d",
	      b.cq->cqe);
	for (int i = 0; i < 5; i++)
		expect_wc(b.cq, 100 + i, IBV_WC_SUCCESS, IBV_WC_RECV);
	CHECK(!ibv_resize_cq(b.cq, 8) && b.cq->cqe >= 8, "shrunk when empty");
	post_recv(b.qp, &b, 200);
	struct ibv_sge sge = { (uintptr_t)a.buf, 8, a.mr->lkey };
	struct ibv_send_wr w = send_wr(&sge, 9, IBV_WR_SEND);
	CHECK(!post1(a.qp, &w), "send");
	expect_wc(b.cq, 200, IBV_WC_SUCCESS, IBV_WC_RECV);
	errno = 0;
	struct ibv_cq_ex *cx = ibv_create_cq_ex(a.ctx, &(struct ibv_cq_init_attr_ex){ .cqe = 4 });
	CHECK(cx, "cq_ex");
	CHECK(!ibv_resize_cq(ibv_cq_ex_to_cq(cx), 64), "resize an extended cq");
	struct ibv_modify_cq_attr mod = { .attr_mask = IBV_CQ_ATTR_MODERATE,
					  .moderate = { .cq_count = 4 } };
	CHECK(ibv_modify_cq(b.cq, &mod) == EOPNOTSUPP,
	      "moderation: EOPNOTSUPP, as rxe");
	printf("resize_cq ok\n");
}
