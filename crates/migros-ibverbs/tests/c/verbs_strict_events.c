/* verbs_strict's cases of SRQs, events and queue limits: srq, events,
 * solicited, queue_full. */
#include <fcntl.h>
#include <poll.h>

#include "verbs_strict.h"

/* ---- SRQ: size, limit, query, resize, the limit event ---- */

static void no_event(struct ibv_context *ctx)
{
	struct pollfd p = { .fd = ctx->async_fd, .events = POLLIN };
	int n = poll(&p, 1, 200);
	if (n == 1) {
		struct ibv_async_event ev;
		ibv_get_async_event(ctx, &ev);
		CHECK(0, "unexpected async event %s", ibv_event_type_str(ev.event_type));
	}
}

void case_srq(char **argv)
{
	struct side a, b;
	side_init(&a, argv[2]);
	side_init(&b, argv[3]);
	struct ibv_srq_init_attr si = { .attr = { .max_wr = 8, .max_sge = 1 } };
	struct ibv_srq *srq = ibv_create_srq(b.pd, &si);
	CHECK(srq, "srq");
	struct ibv_srq_attr sa;
	CHECK(!ibv_query_srq(srq, &sa) && sa.max_wr >= 8 && sa.srq_limit == 0 &&
		      sa.max_sge == 1,
	      "query: %u %u %u", sa.max_wr, sa.srq_limit, sa.max_sge);
	sa.srq_limit = sa.max_wr + 1;
	CHECK(ibv_modify_srq(srq, &sa, IBV_SRQ_LIMIT) == EINVAL, "limit past size");
	sa.max_wr = 32;
	CHECK(!ibv_modify_srq(srq, &sa, IBV_SRQ_MAX_WR) && sa.max_wr >= 32,
	      "grown");
	CHECK(!ibv_query_srq(srq, &sa) && sa.max_wr >= 32, "query after resize");
	/* A QP on the SRQ; 20 receives (more than the first size). */
	struct ibv_qp_init_attr qa = {
		.send_cq = b.cq, .recv_cq = b.cq, .srq = srq,
		.cap = { .max_send_wr = 4, .max_send_sge = 1 },
		.qp_type = IBV_QPT_RC,
	};
	b.qp = ibv_create_qp(b.pd, &qa);
	CHECK(b.qp, "qp on srq");
	connect_pair(&a, &b, REMOTE_ALL);
	for (int i = 0; i < 20; i++) {
		struct ibv_sge sge = { (uintptr_t)b.buf + 64 * i, 64, b.mr->lkey };
		struct ibv_recv_wr r = { .wr_id = i, .sg_list = &sge, .num_sge = 1 },
				   *bad;
		CHECK(!ibv_post_srq_recv(srq, &r, &bad), "post srq %d", i);
	}
	sa.max_wr = 8;
	CHECK(ibv_modify_srq(srq, &sa, IBV_SRQ_MAX_WR) == EINVAL,
	      "smaller than what it holds");
	sa.srq_limit = 18;
	CHECK(!ibv_modify_srq(srq, &sa, IBV_SRQ_LIMIT), "arm");
	CHECK(!ibv_query_srq(srq, &sa) && sa.srq_limit == 18, "armed");
	for (int i = 0; i < 3; i++) {
		struct ibv_sge sge = { (uintptr_t)a.buf, 8, a.mr->lkey };
		struct ibv_send_wr w = send_wr(&sge, i, IBV_WR_SEND);
		CHECK(!post1(a.qp, &w), "send");
		expect_wc(a.cq, i, IBV_WC_SUCCESS, IBV_WC_SEND);
		expect_wc(b.cq, i, IBV_WC_SUCCESS, IBV_WC_RECV);
	}
	/* 20 → 17: below 18, once. */
	struct ibv_async_event ev = next_event(b.ctx, 5000);
	CHECK(ev.event_type == IBV_EVENT_SRQ_LIMIT_REACHED && ev.element.srq == srq,
	      "srq limit: %s", ibv_event_type_str(ev.event_type));
	CHECK(!ibv_query_srq(srq, &sa) && sa.srq_limit == 0, "disarmed");
	no_event(b.ctx);
	/* LAST_WQE_REACHED when the QP on the SRQ goes to ERR. */
	struct ibv_qp_attr err = { .qp_state = IBV_QPS_ERR };
	CHECK(!ibv_modify_qp(b.qp, &err, IBV_QP_STATE), "to err");
	ev = next_event(b.ctx, 5000);
	CHECK(ev.event_type == IBV_EVENT_QP_LAST_WQE_REACHED && ev.element.qp == b.qp,
	      "last wqe: %s", ibv_event_type_str(ev.event_type));
	printf("srq ok\n");
}

/* ---- asynchronous events ---- */

void case_events(char **argv)
{
	/* QP_REQ_ERR: a READ the responder's QP does not allow. */
	struct side a, b;
	pair(&a, &b, argv, IBV_ACCESS_REMOTE_WRITE);
	struct ibv_sge sge = { (uintptr_t)a.buf, 8, a.mr->lkey };
	struct ibv_send_wr w = send_wr(&sge, 1, IBV_WR_RDMA_READ);
	w.wr.rdma.remote_addr = (uintptr_t)b.buf;
	w.wr.rdma.rkey = b.mr->rkey;
	CHECK(!post1(a.qp, &w), "read");
	expect_wc(a.cq, 1, IBV_WC_REM_INV_REQ_ERR, IBV_WC_RDMA_READ);
	struct ibv_async_event ev = next_event(b.ctx, 5000);
	CHECK(ev.event_type == IBV_EVENT_QP_REQ_ERR && ev.element.qp == b.qp,
	      "req err: %s", ibv_event_type_str(ev.event_type));
	/* The requester's failure is in its completion, no event. */
	no_event(a.ctx);

	/* QP_ACCESS_ERR: the QP allows the WRITE, the region does not. */
	pair(&a, &b, argv, REMOTE_ALL);
	static char ro[4096];
	struct ibv_mr *mr = ibv_reg_mr(b.pd, ro, sizeof ro, IBV_ACCESS_REMOTE_READ);
	CHECK(mr, "ro mr");
	/* a is a new side: its SGE names its own region. */
	sge = (struct ibv_sge){ (uintptr_t)a.buf, 8, a.mr->lkey };
	w = send_wr(&sge, 2, IBV_WR_RDMA_WRITE);
	w.wr.rdma.remote_addr = (uintptr_t)ro;
	w.wr.rdma.rkey = mr->rkey;
	CHECK(!post1(a.qp, &w), "write");
	expect_wc(a.cq, 2, IBV_WC_REM_ACCESS_ERR, IBV_WC_RDMA_WRITE);
	ev = next_event(b.ctx, 5000);
	CHECK(ev.event_type == IBV_EVENT_QP_ACCESS_ERR && ev.element.qp == b.qp,
	      "access err: %s", ibv_event_type_str(ev.event_type));

	/* COMM_EST: b in RTR hears a first. */
	side_init(&a, argv[2]);
	side_init(&b, argv[3]);
	to_init(a.qp, REMOTE_ALL);
	to_init(b.qp, REMOTE_ALL);
	to_rtr(a.qp, &b, 4);
	to_rtr(b.qp, &a, 4);
	to_rts(a.qp);
	post_recv(b.qp, &b, 3);
	sge = (struct ibv_sge){ (uintptr_t)a.buf, 8, a.mr->lkey };
	w = send_wr(&sge, 4, IBV_WR_SEND);
	CHECK(!post1(a.qp, &w), "send");
	expect_wc(b.cq, 3, IBV_WC_SUCCESS, IBV_WC_RECV);
	ev = next_event(b.ctx, 5000);
	CHECK(ev.event_type == IBV_EVENT_COMM_EST && ev.element.qp == b.qp,
	      "comm est: %s", ibv_event_type_str(ev.event_type));
	/* SQ_DRAINED: a moves to SQD with nothing in flight. */
	expect_wc(a.cq, 4, IBV_WC_SUCCESS, IBV_WC_SEND);
	struct ibv_qp_attr sqd = { .qp_state = IBV_QPS_SQD };
	CHECK(!ibv_modify_qp(a.qp, &sqd, IBV_QP_STATE), "to sqd");
	ev = next_event(a.ctx, 5000);
	CHECK(ev.event_type == IBV_EVENT_SQ_DRAINED && ev.element.qp == a.qp,
	      "sq drained: %s", ibv_event_type_str(ev.event_type));

	/* An empty queue on a non-blocking descriptor: EAGAIN. */
	int fl = fcntl(b.ctx->async_fd, F_GETFL);
	CHECK(!fcntl(b.ctx->async_fd, F_SETFL, fl | O_NONBLOCK), "nonblock");
	errno = 0;
	CHECK(ibv_get_async_event(b.ctx, &ev) == -1 && errno == EAGAIN, "EAGAIN");
	printf("events ok\n");
}

/* ---- solicited-only notification ---- */

void case_solicited(char **argv)
{
	struct side a, b;
	side_init(&a, argv[2]);
	side_init(&b, argv[3]);
	struct ibv_comp_channel *ch = ibv_create_comp_channel(b.ctx);
	CHECK(ch, "channel");
	struct ibv_cq *cq = ibv_create_cq(b.ctx, 64, NULL, ch, 0);
	CHECK(cq, "cq");
	struct ibv_qp_init_attr qa = {
		.send_cq = b.cq, .recv_cq = cq,
		.cap = { .max_send_wr = 4, .max_recv_wr = 8, .max_send_sge = 1,
			 .max_recv_sge = 1 },
		.qp_type = IBV_QPT_RC,
	};
	b.qp = ibv_create_qp(b.pd, &qa);
	CHECK(b.qp, "qp");
	connect_pair(&a, &b, REMOTE_ALL);
	CHECK(!ibv_req_notify_cq(cq, 1), "arm solicited only");
	struct ibv_sge sge = { (uintptr_t)a.buf, 8, a.mr->lkey };
	for (int i = 0; i < 2; i++) {
		post_recv(b.qp, &b, 10 + i);
		struct ibv_send_wr w = send_wr(&sge, i, IBV_WR_SEND);
		w.send_flags |= i == 1 ? IBV_SEND_SOLICITED : 0;
		CHECK(!post1(a.qp, &w), "send");
		expect_wc(a.cq, i, IBV_WC_SUCCESS, IBV_WC_SEND);
		struct pollfd p = { .fd = ch->fd, .events = POLLIN };
		int n = poll(&p, 1, i == 0 ? 300 : 5000);
		CHECK(n == (i == 0 ? 0 : 1), "message %d: %s", i,
		      i == 0 ? "an unsolicited completion notified" :
			       "the solicited one did not");
	}
	struct ibv_cq *ecq;
	void *ectx;
	CHECK(!ibv_get_cq_event(ch, &ecq, &ectx) && ecq == cq, "event");
	ibv_ack_cq_events(cq, 1);
	expect_wc(cq, 10, IBV_WC_SUCCESS, IBV_WC_RECV);
	expect_wc(cq, 11, IBV_WC_SUCCESS, IBV_WC_RECV);
	printf("solicited ok\n");
}

/* ---- a full receive or send queue ---- */

void case_queue_full(char **argv)
{
	struct side a, b;
	side_init(&a, argv[2]);
	side_init(&b, argv[3]);
	struct ibv_qp_init_attr qa = {
		.send_cq = b.cq, .recv_cq = b.cq,
		.cap = { .max_send_wr = 4, .max_recv_wr = 4, .max_send_sge = 1,
			 .max_recv_sge = 1 },
		.qp_type = IBV_QPT_RC,
	};
	b.qp = ibv_create_qp(b.pd, &qa);
	CHECK(b.qp && qa.cap.max_recv_wr == 4 && qa.cap.max_send_wr == 4,
	      "caps as asked: %u %u", qa.cap.max_recv_wr, qa.cap.max_send_wr);
	connect_pair(&a, &b, REMOTE_ALL);
	struct ibv_sge bs = { (uintptr_t)b.buf, 64, b.mr->lkey };
	struct ibv_recv_wr r[5];
	for (int i = 0; i < 5; i++)
		r[i] = (struct ibv_recv_wr){ .wr_id = i, .sg_list = &bs,
					     .num_sge = 1,
					     .next = i < 4 ? &r[i + 1] : NULL };
	struct ibv_recv_wr *bad_r = NULL;
	usleep(100000);
	CHECK(ibv_post_recv(b.qp, r, &bad_r) == ENOMEM && bad_r == &r[4],
	      "the fifth receive does not fit (bad %p, fifth %p)", bad_r, &r[4]);
	/* One completes: one more fits. */
	struct ibv_sge sge = { (uintptr_t)a.buf, 8, a.mr->lkey };
	struct ibv_send_wr w = send_wr(&sge, 1, IBV_WR_SEND);
	CHECK(!post1(a.qp, &w), "send");
	expect_wc(b.cq, 0, IBV_WC_SUCCESS, IBV_WC_RECV);
	r[4].next = NULL;
	bad_r = NULL;
	CHECK(!ibv_post_recv(b.qp, &r[4], &bad_r), "room again");
	CHECK(ibv_post_recv(b.qp, &r[4], &bad_r) == ENOMEM, "full again");
	printf("queue_full ok\n");
}
