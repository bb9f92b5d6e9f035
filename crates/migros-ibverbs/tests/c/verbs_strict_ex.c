/* verbs_strict's cases of the extended post API and of the events a real
 * daemon raises when memory goes away: wr_ex, fatal. */
#include <endian.h>
#include <poll.h>
#include <sys/mman.h>

#include "verbs_strict.h"

/* ---- ibv_wr_*: every operation on an RTS QP, data checked ---- */

/* A QP made as a program using the extended API makes it. */
static struct ibv_qp *make_qp_ex(struct side *s)
{
	struct ibv_qp_init_attr_ex a = {
		.send_cq = s->cq,
		.recv_cq = s->cq,
		.cap = { .max_send_wr = 16, .max_recv_wr = 16,
			 .max_send_sge = 2, .max_recv_sge = 2,
			 .max_inline_data = 64 },
		.qp_type = IBV_QPT_RC,
		.comp_mask = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS,
		.pd = s->pd,
		.send_ops_flags = IBV_QP_EX_WITH_SEND | IBV_QP_EX_WITH_SEND_WITH_IMM |
				  IBV_QP_EX_WITH_RDMA_WRITE |
				  IBV_QP_EX_WITH_RDMA_WRITE_WITH_IMM |
				  IBV_QP_EX_WITH_RDMA_READ |
				  IBV_QP_EX_WITH_ATOMIC_CMP_AND_SWP |
				  IBV_QP_EX_WITH_ATOMIC_FETCH_AND_ADD,
	};
	struct ibv_qp *qp = ibv_create_qp_ex(s->ctx, &a);
	CHECK(qp, "create_qp_ex");
	return qp;
}

static void fill(char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (char)(seed * 31 + i * 7);
}

/* Waits for the completion of `id` on a's CQ with the given opcode. */
static struct ibv_wc expect_ok(struct ibv_cq *cq, uint64_t id,
			       enum ibv_wc_opcode op)
{
	struct ibv_wc wc = wait_wc(cq);
	CHECK(wc.wr_id == id && wc.status == IBV_WC_SUCCESS && wc.opcode == op,
	      "wc %llu status %s opcode %d, expected %llu opcode %d",
	      (unsigned long long)wc.wr_id, ibv_wc_status_str(wc.status),
	      wc.opcode, (unsigned long long)id, op);
	return wc;
}

void case_wr_ex(char **argv)
{
	struct side a, b;
	side_init(&a, argv[2]);
	side_init(&b, argv[3]);
	ibv_destroy_qp(a.qp);
	ibv_destroy_qp(b.qp);
	a.qp = make_qp_ex(&a);
	b.qp = make_qp_ex(&b);
	connect_pair(&a, &b, REMOTE_ALL);
	struct ibv_qp_ex *qx = ibv_qp_to_qp_ex(a.qp);
	CHECK(qx, "qp_to_qp_ex");

	/* Receives for the two sends, the inline send and WRITE_WITH_IMM. */
	for (int i = 0; i < 4; i++) {
		struct ibv_sge sge = { (uintptr_t)b.buf + 4096 * i, 4096, b.mr->lkey };
		struct ibv_recv_wr r = { .wr_id = 100 + i, .sg_list = &sge,
					 .num_sge = 1 },
				   *bad;
		CHECK(!ibv_post_recv(b.qp, &r, &bad), "post_recv %d", i);
	}
	fill(a.buf, 16384, 1);
	fill(b.buf + 32768, 4096, 2); /* what the READ fetches */
	uint64_t counter = 40, swap = 7;
	memcpy(b.buf + 49152, &counter, 8);
	memcpy(b.buf + 49160, &swap, 8);

	/* One batch: SEND, SEND_WITH_IMM, WRITE from two SGEs, inline SEND,
	 * WRITE_WITH_IMM, READ, fetch-and-add, compare-and-swap. */
	ibv_wr_start(qx);
	qx->wr_flags = IBV_SEND_SIGNALED;
	qx->wr_id = 1;
	ibv_wr_send(qx);
	ibv_wr_set_sge(qx, a.mr->lkey, (uintptr_t)a.buf, 3000);
	qx->wr_id = 2;
	ibv_wr_send_imm(qx, htobe32(0x01020304));
	ibv_wr_set_sge(qx, a.mr->lkey, (uintptr_t)a.buf + 4096, 100);
	qx->wr_id = 3;
	ibv_wr_rdma_write(qx, b.mr->rkey, (uintptr_t)b.buf + 16384);
	struct ibv_sge two[2] = { { (uintptr_t)a.buf + 8192, 1000, a.mr->lkey },
				  { (uintptr_t)a.buf + 12288, 2000, a.mr->lkey } };
	ibv_wr_set_sge_list(qx, 2, two);
	qx->wr_id = 4;
	ibv_wr_send(qx);
	const char msg[] = "inline through ibv_wr_set_inline_data";
	ibv_wr_set_inline_data(qx, (void *)msg, sizeof msg);
	qx->wr_id = 5;
	ibv_wr_rdma_write_imm(qx, b.mr->rkey, (uintptr_t)b.buf + 24576,
			      htobe32(0xabcdef01));
	ibv_wr_set_sge(qx, a.mr->lkey, (uintptr_t)a.buf + 5000, 512);
	qx->wr_id = 6;
	ibv_wr_rdma_read(qx, b.mr->rkey, (uintptr_t)b.buf + 32768);
	ibv_wr_set_sge(qx, a.mr->lkey, (uintptr_t)a.buf + 32768, 4096);
	qx->wr_id = 7;
	ibv_wr_atomic_fetch_add(qx, b.mr->rkey, (uintptr_t)b.buf + 49152, 2);
	ibv_wr_set_sge(qx, a.mr->lkey, (uintptr_t)a.buf + 49152, 8);
	qx->wr_id = 8;
	ibv_wr_atomic_cmp_swp(qx, b.mr->rkey, (uintptr_t)b.buf + 49160, 7, 99);
	ibv_wr_set_sge(qx, a.mr->lkey, (uintptr_t)a.buf + 49160, 8);
	CHECK(!ibv_wr_complete(qx), "wr_complete");

	enum ibv_wc_opcode ops[] = { IBV_WC_SEND, IBV_WC_SEND, IBV_WC_RDMA_WRITE,
				     IBV_WC_SEND, IBV_WC_RDMA_WRITE,
				     IBV_WC_RDMA_READ, IBV_WC_FETCH_ADD,
				     IBV_WC_COMP_SWAP };
	for (int i = 0; i < 8; i++)
		expect_ok(a.cq, i + 1, ops[i]);
	struct ibv_wc wc = expect_ok(b.cq, 100, IBV_WC_RECV);
	CHECK(wc.byte_len == 3000 && !memcmp(b.buf, a.buf, 3000), "send data");
	wc = expect_ok(b.cq, 101, IBV_WC_RECV);
	CHECK(wc.byte_len == 100 && (wc.wc_flags & IBV_WC_WITH_IMM) &&
		      be32toh(wc.imm_data) == 0x01020304 &&
		      !memcmp(b.buf + 4096, a.buf + 4096, 100),
	      "send_imm: len %u flags %#x", wc.byte_len, wc.wc_flags);
	wc = expect_ok(b.cq, 102, IBV_WC_RECV);
	CHECK(wc.byte_len == sizeof msg && !memcmp(b.buf + 8192, msg, sizeof msg),
	      "inline send: len %u", wc.byte_len);
	wc = expect_ok(b.cq, 103, IBV_WC_RECV_RDMA_WITH_IMM);
	CHECK((wc.wc_flags & IBV_WC_WITH_IMM) && be32toh(wc.imm_data) == 0xabcdef01,
	      "write_imm's immediate");
	CHECK(!memcmp(b.buf + 16384, a.buf + 8192, 1000) &&
		      !memcmp(b.buf + 17384, a.buf + 12288, 2000),
	      "write gathered from two SGEs");
	CHECK(!memcmp(b.buf + 24576, a.buf + 5000, 512), "write_imm data");
	CHECK(!memcmp(a.buf + 32768, b.buf + 32768, 4096), "read data");
	uint64_t got;
	memcpy(&got, a.buf + 49152, 8);
	CHECK(got == 40, "fetch_add returned %llu", (unsigned long long)got);
	memcpy(&got, b.buf + 49152, 8);
	CHECK(got == 42, "fetch_add stored %llu", (unsigned long long)got);
	memcpy(&got, a.buf + 49160, 8);
	CHECK(got == 7, "cmp_swp returned %llu", (unsigned long long)got);
	memcpy(&got, b.buf + 49160, 8);
	CHECK(got == 99, "cmp_swp stored %llu", (unsigned long long)got);

	/* An aborted batch posts nothing; an unsignaled WR completes
	 * silently, the next signaled one completes. */
	ibv_wr_start(qx);
	qx->wr_id = 9;
	ibv_wr_rdma_write(qx, b.mr->rkey, (uintptr_t)b.buf + 60000);
	ibv_wr_set_sge(qx, a.mr->lkey, (uintptr_t)a.buf, 8);
	ibv_wr_abort(qx);
	memset(b.buf + 60000, 0, 16);
	ibv_wr_start(qx);
	qx->wr_flags = 0;
	qx->wr_id = 10;
	ibv_wr_rdma_write(qx, b.mr->rkey, (uintptr_t)b.buf + 60000);
	ibv_wr_set_sge(qx, a.mr->lkey, (uintptr_t)a.buf + 100, 8);
	qx->wr_flags = IBV_SEND_SIGNALED;
	qx->wr_id = 11;
	ibv_wr_rdma_write(qx, b.mr->rkey, (uintptr_t)b.buf + 60008);
	ibv_wr_set_sge(qx, a.mr->lkey, (uintptr_t)a.buf + 200, 8);
	CHECK(!ibv_wr_complete(qx), "second batch");
	expect_ok(a.cq, 11, IBV_WC_RDMA_WRITE);
	no_wc(a.cq);
	CHECK(!memcmp(b.buf + 60000, a.buf + 100, 8) &&
		      !memcmp(b.buf + 60008, a.buf + 200, 8),
	      "both writes of the second batch landed");
	printf("wr_ex ok\n");
}

/* ---- QP_FATAL and CQ_ERR from a real daemon ---- */

void case_fatal(char **argv)
{
	/* QP_FATAL: b's region is unmapped under the daemon; a's WRITE
	 * cannot land, so b's daemon NAKs it and b's QP fails (the kernel
	 * pins registered memory, so there this cannot happen; a device
	 * that cannot write where it acknowledged reports QP_FATAL). */
	struct side a, b;
	side_init(&a, argv[2]);
	side_init(&b, argv[3]);
	char *gone = mmap(NULL, SIZE, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(gone != MAP_FAILED, "mmap");
	struct ibv_mr *mr = ibv_reg_mr(b.pd, gone, SIZE, ALL_ACCESS);
	CHECK(mr, "reg_mr");
	connect_pair(&a, &b, REMOTE_ALL);
	CHECK(!munmap(gone, SIZE), "munmap");
	struct ibv_sge sge = { (uintptr_t)a.buf, 64, a.mr->lkey };
	struct ibv_send_wr w = send_wr(&sge, 1, IBV_WR_RDMA_WRITE);
	w.wr.rdma.remote_addr = (uintptr_t)gone;
	w.wr.rdma.rkey = mr->rkey;
	CHECK(!post1(a.qp, &w), "write");
	struct ibv_wc wc = wait_wc(a.cq);
	CHECK(wc.wr_id == 1 && wc.status != IBV_WC_SUCCESS,
	      "the write was acknowledged: %s", ibv_wc_status_str(wc.status));
	struct ibv_async_event ev = next_event(b.ctx, 5000);
	CHECK(ev.event_type == IBV_EVENT_QP_FATAL && ev.element.qp == b.qp,
	      "qp fatal: %s", ibv_event_type_str(ev.event_type));
	struct ibv_qp_attr qa;
	struct ibv_qp_init_attr qi;
	CHECK(!ibv_query_qp(b.qp, &qa, IBV_QP_STATE, &qi) &&
		      qa.qp_state == IBV_QPS_ERR,
	      "b's qp in %d", qa.qp_state);

	/* CQ_ERR: a CQ nobody polls overflows (rxe: rxe_cq_post finds the
	 * queue full and raises IB_EVENT_CQ_ERR). */
	struct side c, d;
	side_init(&c, argv[2]);
	side_init(&d, argv[3]);
	struct ibv_cq *small = ibv_create_cq(c.ctx, 4, NULL, NULL, 0);
	CHECK(small, "small cq");
	int room = small->cqe;
	struct ibv_qp_init_attr qa2 = {
		.send_cq = small, .recv_cq = c.cq,
		.cap = { .max_send_wr = 64, .max_recv_wr = 1, .max_send_sge = 1,
			 .max_recv_sge = 1 },
		.qp_type = IBV_QPT_RC,
	};
	ibv_destroy_qp(c.qp);
	c.qp = ibv_create_qp(c.pd, &qa2);
	CHECK(c.qp, "qp on the small cq");
	connect_pair(&c, &d, REMOTE_ALL);
	/* Behind the ring the daemon queues up to 2048 completions of a
	 * small CQ (migrosd's CqRing::queue_limit): post until the event
	 * comes. A send queue slot is free again once its WR completed, so
	 * a full queue (ENOMEM) only means waiting a little. */
	int posted = 0, seen = 0;
	struct pollfd p = { .fd = c.ctx->async_fd, .events = POLLIN };
	while (!seen && posted < 8192) {
		struct ibv_sge s1 = { (uintptr_t)c.buf, 8, c.mr->lkey };
		struct ibv_send_wr x = send_wr(&s1, posted, IBV_WR_RDMA_WRITE);
		x.wr.rdma.remote_addr = (uintptr_t)d.buf;
		x.wr.rdma.rkey = d.mr->rkey;
		struct ibv_send_wr *bad;
		int r = ibv_post_send(c.qp, &x, &bad);
		if (r == ENOMEM) {
			usleep(200);
		} else {
			CHECK(r == 0, "write %d: %d", posted, r);
			posted++;
		}
		if (posted % 64 == 0)
			seen = poll(&p, 1, 0) == 1;
	}
	if (!seen)
		seen = poll(&p, 1, 2000) == 1;
	CHECK(seen, "no CQ_ERR after %d completions on a CQ of %d", posted, room);
	ev = next_event(c.ctx, 5000);
	CHECK(ev.event_type == IBV_EVENT_CQ_ERR && ev.element.cq == small,
	      "cq err: %s", ibv_event_type_str(ev.event_type));
	printf("fatal ok (cq of %d overflowed within %d writes)\n", room, posted);
}
