/*
 * Completion-channel and SRQ-flush semantics of the drop-in libibverbs,
 * built by tests/semantics.rs with cc against the system verbs.h and run
 * with LD_LIBRARY_PATH=target/ibverbs on two daemons.
 *
 *   semantics events DEV_A DEV_B   a channel shared by three CQs
 *   semantics srq DEV_A DEV_B      prints "ready", then expects DEV_A's
 *                                  daemon to be killed: the SRQ's
 *                                  outstanding receives flush
 *
 * Built with common.c. Every check failure prints "FAIL FILE line N: ..."
 * and exits 1; success ends with "events ok" / "srq flush ok". alarm()
 * bounds every run: a hang fails.
 */
#include <fcntl.h>
#include <poll.h>

#include "common.h"

#define SIZE 4096

struct side {
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_mr *mr;
	char *buf;
	union ibv_gid gid;
};

static void side_init(struct side *s, const char *name)
{
	s->ctx = open_dev(name);
	s->pd = ibv_alloc_pd(s->ctx);
	CHECK(s->pd, "alloc_pd");
	s->buf = calloc(1, SIZE);
	s->mr = ibv_reg_mr(s->pd, s->buf, SIZE,
			   IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
	CHECK(s->mr, "reg_mr");
	CHECK(!ibv_query_gid(s->ctx, 1, 0, &s->gid), "query_gid");
}

static struct ibv_qp *make_qp(struct side *s, struct ibv_cq *scq,
			      struct ibv_cq *rcq, struct ibv_srq *srq)
{
	struct ibv_qp_init_attr a = {
		.send_cq = scq,
		.recv_cq = rcq,
		.srq = srq,
		.cap = { .max_send_wr = 16, .max_recv_wr = 16,
			 .max_send_sge = 1, .max_recv_sge = 1 },
		.qp_type = IBV_QPT_RC,
	};
	struct ibv_qp *qp = ibv_create_qp(s->pd, &a);
	CHECK(qp, "create_qp");
	return qp;
}

/* INIT, RTR (to remote's QP and GID), RTS. */
static void connect_qp(struct ibv_qp *qp, struct side *remote,
		       struct ibv_qp *rqp)
{
	to_init(qp, IBV_ACCESS_REMOTE_WRITE);
	struct ibv_qp_attr a = { .qp_state = IBV_QPS_RTR };
	a.path_mtu = IBV_MTU_1024;
	a.dest_qp_num = rqp->qp_num;
	a.max_dest_rd_atomic = 1;
	a.min_rnr_timer = 12;
	a.ah_attr.is_global = 1;
	a.ah_attr.grh.dgid = remote->gid;
	a.ah_attr.grh.hop_limit = 64;
	a.ah_attr.port_num = 1;
	CHECK(!ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
					     IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
					     IBV_QP_MAX_DEST_RD_ATOMIC |
					     IBV_QP_MIN_RNR_TIMER),
	      "RTR");
	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_RTS;
	a.timeout = 14;
	a.retry_cnt = 7;
	a.rnr_retry = 7;
	a.max_rd_atomic = 1;
	CHECK(!ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT |
					     IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
					     IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC),
	      "RTS");
}

static void post_recv(struct ibv_qp *qp, struct side *s, uint64_t id)
{
	struct ibv_sge sge = { (uintptr_t)s->buf, SIZE, s->mr->lkey };
	struct ibv_recv_wr wr = { .wr_id = id, .sg_list = &sge, .num_sge = 1 },
			   *bad;
	CHECK(!ibv_post_recv(qp, &wr, &bad), "post_recv");
}

static void post_send(struct ibv_qp *qp, struct side *s, uint64_t id)
{
	struct ibv_sge sge = { (uintptr_t)s->buf, 64, s->mr->lkey };
	struct ibv_send_wr wr = { .wr_id = id, .sg_list = &sge, .num_sge = 1,
				  .opcode = IBV_WR_SEND,
				  .send_flags = IBV_SEND_SIGNALED },
			   *bad;
	CHECK(!ibv_post_send(qp, &wr, &bad), "post_send");
}

/* One successful completion of wr_id `id` on `cq`, within 5 s. */
static void expect_wc(struct ibv_cq *cq, uint64_t id)
{
	struct ibv_wc wc;
	for (int i = 0; i < 5000; i++) {
		int n = ibv_poll_cq(cq, 1, &wc);
		CHECK(n >= 0, "poll_cq %d", n);
		if (n == 1) {
			CHECK(wc.status == IBV_WC_SUCCESS && wc.wr_id == id,
			      "wc %llu status %s, wanted %llu",
			      (unsigned long long)wc.wr_id,
			      ibv_wc_status_str(wc.status),
			      (unsigned long long)id);
			return;
		}
		usleep(1000);
	}
	CHECK(0, "no completion %llu", (unsigned long long)id);
}

static int readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return poll(&p, 1, ms) == 1;
}

/* The next event on `ch`, which must be for `want` (within 5 s). */
static void expect_event(struct ibv_comp_channel *ch, struct ibv_cq *want)
{
	struct ibv_cq *cq;
	void *cq_ctx;
	CHECK(readable(ch->fd, 5000), "no event for %p", (void *)want);
	CHECK(!ibv_get_cq_event(ch, &cq, &cq_ctx), "get_cq_event");
	CHECK(cq == want && cq_ctx == want->cq_context,
	      "event for %p (context %p), wanted %p", (void *)cq, cq_ctx,
	      (void *)want);
}

/* a's QP `qa`, connected to b's `qb`, whose completions go to `bcq`. */
struct link {
	struct side *a, *b;
	struct ibv_qp *qa, *qb;
	struct ibv_cq *bcq;
};

/*
 * With `cq` (qa's send CQ) armed on `ch`: message `id` over `l` (b's
 * receive `id + 1`), its event for `cq` (acknowledged if `ack`), then both
 * completions.
 */
static void notified_send(struct ibv_comp_channel *ch, struct ibv_cq *cq,
			  const struct link *l, uint64_t id, int ack)
{
	CHECK(!ibv_req_notify_cq(cq, 0), "arm %p", (void *)cq);
	post_recv(l->qb, l->b, id + 1);
	post_send(l->qa, l->a, id);
	expect_event(ch, cq);
	if (ack)
		ibv_ack_cq_events(cq, 1);
	expect_wc(cq, id);
	expect_wc(l->bcq, id + 1);
}

static int events(const char *a_name, const char *b_name)
{
	struct side a, b;
	side_init(&a, a_name);
	side_init(&b, b_name);
	struct ibv_comp_channel *ch = ibv_create_comp_channel(a.ctx);
	CHECK(ch, "create_comp_channel");
	/* Three CQs of a on one channel, each with its own cq_context. */
	struct ibv_cq *scq = ibv_create_cq(a.ctx, 16, (void *)0x5, ch, 0);
	struct ibv_cq *rcq = ibv_create_cq(a.ctx, 16, (void *)0x7, ch, 0);
	struct ibv_cq *xcq = ibv_create_cq(a.ctx, 16, (void *)0x9, ch, 0);
	struct ibv_cq *bcq = ibv_create_cq(b.ctx, 16, NULL, NULL, 0);
	CHECK(scq && rcq && xcq && bcq, "create_cq");
	CHECK(ch->refcnt == 3, "channel refcnt %d", ch->refcnt);
	struct ibv_qp *qa = make_qp(&a, scq, rcq, NULL);
	struct ibv_qp *qx = make_qp(&a, xcq, xcq, NULL);
	struct ibv_qp *qb = make_qp(&b, bcq, bcq, NULL);
	struct ibv_qp *qb2 = make_qp(&b, bcq, bcq, NULL);
	connect_qp(qa, &b, qb);
	connect_qp(qb, &a, qa);
	connect_qp(qx, &b, qb2);
	connect_qp(qb2, &a, qx);

	/* 1. Both armed CQs get a completion: one event each. */
	CHECK(!ibv_req_notify_cq(scq, 0) && !ibv_req_notify_cq(rcq, 0), "arm");
	post_recv(qa, &a, 1);
	post_send(qb, &b, 3);
	expect_wc(bcq, 3);
	post_recv(qb, &b, 2);
	post_send(qa, &a, 4);
	expect_wc(bcq, 2);
	struct ibv_cq *got[2];
	void *ctx;
	for (int i = 0; i < 2; i++) {
		CHECK(readable(ch->fd, 5000), "event %d missing", i);
		CHECK(!ibv_get_cq_event(ch, &got[i], &ctx), "get_cq_event");
		CHECK(ctx == got[i]->cq_context, "cq_context");
	}
	CHECK((got[0] == scq && got[1] == rcq) ||
		      (got[0] == rcq && got[1] == scq),
	      "events for %p %p", (void *)got[0], (void *)got[1]);
	ibv_ack_cq_events(scq, 1);
	ibv_ack_cq_events(rcq, 1);
	expect_wc(rcq, 1);
	expect_wc(scq, 4);

	/* 2. Disarmed by their events: new completions raise none. */
	post_recv(qb, &b, 6);
	post_send(qa, &a, 5);
	expect_wc(scq, 5);
	expect_wc(bcq, 6);
	CHECK(!readable(ch->fd, 300), "event for a CQ not armed");

	/*
	 * 3. A CQ destroyed with one event taken but not acknowledged and one
	 * not taken: destroying it returns (libibverbs would wait for the
	 * acknowledgement), and its pending event is never returned.
	 */
	struct link x = { &a, &b, qx, qb2, bcq }, s = { &a, &b, qa, qb, bcq };
	notified_send(ch, xcq, &x, 10, 0);
	CHECK(!ibv_req_notify_cq(xcq, 0), "re-arm x");
	post_recv(qb2, &b, 13);
	post_send(qx, &a, 12);
	expect_wc(bcq, 13);
	CHECK(readable(ch->fd, 5000), "second event of x");
	CHECK(!ibv_destroy_qp(qx), "destroy qp x");
	CHECK(!ibv_destroy_cq(xcq), "destroy cq x");
	CHECK(ch->refcnt == 2, "channel refcnt %d", ch->refcnt);
	notified_send(ch, scq, &s, 14, 1);
	CHECK(!readable(ch->fd, 300), "an extra event");

	/* 4. Non-blocking mode (the program's O_NONBLOCK): EAGAIN when none. */
	int flags = fcntl(ch->fd, F_GETFL);
	CHECK(!fcntl(ch->fd, F_SETFL, flags | O_NONBLOCK), "O_NONBLOCK");
	struct ibv_cq *cq;
	errno = 0;
	CHECK(ibv_get_cq_event(ch, &cq, &ctx) == -1 && errno == EAGAIN,
	      "non-blocking get_cq_event without an event");
	notified_send(ch, scq, &s, 16, 1);
	CHECK(!fcntl(ch->fd, F_SETFL, flags), "blocking again");

	/* 5. A channel CQs report to cannot be destroyed. */
	CHECK(ibv_destroy_comp_channel(ch) == EBUSY, "channel in use destroyed");
	CHECK(!ibv_destroy_qp(qa) && !ibv_destroy_cq(scq) &&
		      !ibv_destroy_cq(rcq),
	      "destroy");
	CHECK(ch->refcnt == 0, "channel refcnt %d", ch->refcnt);
	CHECK(!ibv_destroy_comp_channel(ch), "destroy channel");
	printf("events ok\n");
	return 0;
}

/*
 * Receives posted to an SRQ that two QPs share; three are consumed, then
 * the daemon of DEV_A is killed (by the test, after "ready"): the other
 * five come out of the QPs' receive CQ as IBV_WC_WR_FLUSH_ERR receives,
 * in posting order, once; then polling fails and posting too.
 */
static int srq_flush(const char *a_name, const char *b_name)
{
	struct side a, b;
	side_init(&a, a_name);
	side_init(&b, b_name);
	struct ibv_cq *rcq = ibv_create_cq(a.ctx, 32, NULL, NULL, 0);
	struct ibv_cq *scq = ibv_create_cq(a.ctx, 32, NULL, NULL, 0);
	struct ibv_cq *bcq = ibv_create_cq(b.ctx, 32, NULL, NULL, 0);
	CHECK(rcq && scq && bcq, "create_cq");
	struct ibv_srq_init_attr sa = { .attr = { .max_wr = 16, .max_sge = 1 } };
	struct ibv_srq *srq = ibv_create_srq(a.pd, &sa);
	CHECK(srq, "create_srq");
	struct ibv_qp *q1 = make_qp(&a, scq, rcq, srq);
	struct ibv_qp *q2 = make_qp(&a, scq, rcq, srq);
	struct ibv_qp *qb = make_qp(&b, bcq, bcq, NULL);
	connect_qp(q1, &b, qb);
	connect_qp(qb, &a, q1);
	for (uint64_t id = 100; id < 108; id++) {
		struct ibv_sge sge = { (uintptr_t)a.buf, SIZE, a.mr->lkey };
		struct ibv_recv_wr wr = { .wr_id = id, .sg_list = &sge,
					  .num_sge = 1 },
				   *bad;
		CHECK(!ibv_post_srq_recv(srq, &wr, &bad), "post_srq_recv");
	}
	for (uint64_t id = 1; id <= 3; id++) {
		post_send(qb, &b, id);
		expect_wc(bcq, id);
		expect_wc(rcq, 99 + id);
	}
	uint32_t lowest = q1->qp_num < q2->qp_num ? q1->qp_num : q2->qp_num;
	printf("ready\n");

	struct ibv_wc wc[4];
	uint64_t want = 103;
	for (;;) {
		int n = ibv_poll_cq(rcq, 4, wc);
		if (n < 0)
			break;
		for (int i = 0; i < n; i++) {
			CHECK(wc[i].status == IBV_WC_WR_FLUSH_ERR &&
				      wc[i].opcode == IBV_WC_RECV &&
				      wc[i].wr_id == want &&
				      wc[i].qp_num == lowest,
			      "wc %llu %s opcode %d qp %#x, wanted flushed %llu on %#x",
			      (unsigned long long)wc[i].wr_id,
			      ibv_wc_status_str(wc[i].status), wc[i].opcode,
			      wc[i].qp_num, (unsigned long long)want, lowest);
			want++;
		}
		if (!n)
			usleep(1000);
	}
	CHECK(want == 108, "flushed up to %llu", (unsigned long long)want);
	CHECK(ibv_poll_cq(scq, 4, wc) < 0, "send CQ of a dead device");
	struct ibv_sge sge = { (uintptr_t)a.buf, SIZE, a.mr->lkey };
	struct ibv_recv_wr wr = { .wr_id = 1, .sg_list = &sge, .num_sge = 1 },
			   *bad;
	CHECK(ibv_post_srq_recv(srq, &wr, &bad) != 0, "post on a dead device");
	printf("srq flush ok\n");
	return 0;
}

int main(int argc, char **argv)
{
	alarm(60);
	setvbuf(stdout, NULL, _IOLBF, 0);
	CHECK(argc == 4, "usage: semantics events|srq DEV_A DEV_B");
	if (!strcmp(argv[1], "events"))
		return events(argv[2], argv[3]);
	if (!strcmp(argv[1], "srq"))
		return srq_flush(argv[2], argv[3]);
	CHECK(0, "unknown mode %s", argv[1]);
	return 1;
}
