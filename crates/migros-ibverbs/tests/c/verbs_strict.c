/*
 * The verbs of issue 11 through the drop-in libibverbs, each good and
 * each bad flow checked against what the kernel's SoftRoCE (rxe) answers:
 * errno values, completion statuses and opcodes. Built by
 * tests/verbs_strict.rs with cc against the system verbs.h and run with
 * LD_LIBRARY_PATH=target/ibverbs on two daemons:
 *
 *   verbs_strict CASE DEV_A DEV_B
 *
 * This file holds the helpers and main; the cases are in
 * verbs_strict_device.c, _post.c, _mw.c, _events.c and _ex.c, built together with
 * common.c. Every check failure prints "FAIL FILE line N: ..." and exits
 * 1; success prints "CASE ok". alarm() bounds every run: a hang fails.
 */
#include <poll.h>

#include "verbs_strict.h"

struct ibv_qp *make_qp(struct side *s, enum ibv_qp_type type)
{
	struct ibv_qp_init_attr a = {
		.send_cq = s->cq,
		.recv_cq = s->cq,
		.cap = { .max_send_wr = 16, .max_recv_wr = 16,
			 .max_send_sge = 2, .max_recv_sge = 2,
			 .max_inline_data = 64 },
		.qp_type = type,
	};
	struct ibv_qp *qp = ibv_create_qp(s->pd, &a);
	CHECK(qp, "create_qp");
	return qp;
}

void side_init(struct side *s, const char *name)
{
	memset(s, 0, sizeof *s);
	s->ctx = open_dev(name);
	s->pd = ibv_alloc_pd(s->ctx);
	CHECK(s->pd, "alloc_pd");
	s->cq = ibv_create_cq(s->ctx, 256, NULL, NULL, 0);
	CHECK(s->cq, "create_cq");
	CHECK(!posix_memalign((void **)&s->buf, 4096, SIZE), "memalign");
	memset(s->buf, 0, SIZE);
	s->mr = ibv_reg_mr(s->pd, s->buf, SIZE, ALL_ACCESS);
	CHECK(s->mr, "reg_mr");
	CHECK(!ibv_query_gid(s->ctx, 1, 0, &s->gid), "query_gid");
	s->qp = make_qp(s, IBV_QPT_RC);
}

void to_rtr(struct ibv_qp *qp, struct side *remote, int dest_rd)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_RTR,
		.path_mtu = IBV_MTU_1024,
		.dest_qp_num = remote->qp->qp_num,
		.max_dest_rd_atomic = dest_rd,
		.min_rnr_timer = 1,
		.ah_attr = { .is_global = 1, .port_num = 1,
			     .grh = { .dgid = remote->gid, .hop_limit = 64 } },
	};
	CHECK(!ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
					     IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
					     IBV_QP_MAX_DEST_RD_ATOMIC |
					     IBV_QP_MIN_RNR_TIMER),
	      "RTR");
}

void to_rts(struct ibv_qp *qp)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_RTS,
		.timeout = 14,
		.retry_cnt = 7,
		.rnr_retry = 7,
		.max_rd_atomic = 4,
	};
	CHECK(!ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT |
					     IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
					     IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC),
	      "RTS");
}

/* Connects a's and b's QPs, each allowing `access` to its peer. */
void connect_pair(struct side *a, struct side *b, int access)
{
	to_init(a->qp, access);
	to_init(b->qp, access);
	to_rtr(a->qp, b, 4);
	to_rtr(b->qp, a, 4);
	to_rts(a->qp);
	to_rts(b->qp);
}

void pair(struct side *a, struct side *b, char **argv, int access)
{
	side_init(a, argv[2]);
	side_init(b, argv[3]);
	connect_pair(a, b, access);
}

/* Waits for one completion on cq. */
struct ibv_wc wait_wc(struct ibv_cq *cq)
{
	struct ibv_wc wc;
	for (int i = 0; i < 20000; i++) {
		int n = ibv_poll_cq(cq, 1, &wc);
		CHECK(n >= 0, "poll_cq %d", n);
		if (n == 1)
			return wc;
		usleep(500);
	}
	CHECK(0, "no completion");
	return wc;
}

void expect_wc(struct ibv_cq *cq, uint64_t id, enum ibv_wc_status st,
	       enum ibv_wc_opcode op)
{
	struct ibv_wc wc = wait_wc(cq);
	CHECK(wc.wr_id == id && wc.status == st && wc.opcode == op,
	      "wc %llu status %d (%s) opcode %d, expected %llu status %d opcode %d",
	      (unsigned long long)wc.wr_id, wc.status,
	      ibv_wc_status_str(wc.status), wc.opcode, (unsigned long long)id,
	      st, op);
}

void no_wc(struct ibv_cq *cq)
{
	struct ibv_wc wc;
	usleep(50000);
	CHECK(ibv_poll_cq(cq, 1, &wc) == 0, "unexpected completion %llu",
	      (unsigned long long)wc.wr_id);
}

struct ibv_send_wr send_wr(struct ibv_sge *sge, uint64_t id,
			   enum ibv_wr_opcode op)
{
	struct ibv_send_wr wr = { .wr_id = id, .sg_list = sge,
				  .num_sge = sge ? 1 : 0, .opcode = op,
				  .send_flags = IBV_SEND_SIGNALED };
	return wr;
}

int post1(struct ibv_qp *qp, struct ibv_send_wr *wr)
{
	struct ibv_send_wr *bad = NULL;
	int r = ibv_post_send(qp, wr, &bad);
	CHECK(r == 0 || bad == wr, "bad_wr %p for the only WR %p", bad, wr);
	return r;
}

void post_recv(struct ibv_qp *qp, struct side *s, uint64_t id)
{
	struct ibv_sge sge = { (uintptr_t)s->buf, 4096, s->mr->lkey };
	struct ibv_recv_wr wr = { .wr_id = id, .sg_list = &sge, .num_sge = 1 },
			   *bad;
	CHECK(!ibv_post_recv(qp, &wr, &bad), "post_recv");
}

struct ibv_async_event next_event(struct ibv_context *ctx, int timeout_ms)
{
	struct pollfd p = { .fd = ctx->async_fd, .events = POLLIN };
	CHECK(poll(&p, 1, timeout_ms) == 1, "no async event in %d ms",
	      timeout_ms);
	struct ibv_async_event ev;
	CHECK(!ibv_get_async_event(ctx, &ev), "get_async_event");
	ibv_ack_async_event(&ev);
	return ev;
}

int main(int argc, char **argv)
{
	alarm(60);
	setvbuf(stdout, NULL, _IONBF, 0);
	CHECK(argc == 4, "usage: verbs_strict CASE DEV_A DEV_B");
	struct { const char *name; void (*run)(char **); } cases[] = {
		{ "exports", case_exports },
		{ "gid", case_gid },
		{ "gid_port", case_gid_port },
		{ "ah", case_ah },
		{ "cq", case_cq },
		{ "mr", case_mr },
		{ "post_state", case_post_state },
		{ "bad_wr", case_bad_wr },
		{ "access_flags", case_access_flags },
		{ "atomic_write", case_atomic_write },
		{ "srq_ex", case_srq_ex },
		{ "mw", case_mw },
		{ "iova", case_iova },
		{ "resize_cq", case_resize_cq },
		{ "srq", case_srq },
		{ "events", case_events },
		{ "solicited", case_solicited },
		{ "queue_full", case_queue_full },
		{ "wr_ex", case_wr_ex },
		{ "fatal", case_fatal },
	};
	for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++)
		if (!strcmp(argv[1], cases[i].name)) {
			cases[i].run(argv);
			return 0;
		}
	CHECK(0, "unknown case %s", argv[1]);
	return 1;
}
