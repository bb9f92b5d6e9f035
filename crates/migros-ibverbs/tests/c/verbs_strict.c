/*
 * The verbs of issue 11 through the drop-in libibverbs, each good and
 * each bad flow checked against what the kernel's SoftRoCE (rxe) answers:
 * errno values, completion statuses and opcodes. Built by
 * tests/verbs_strict.rs with cc against the system verbs.h and run with
 * LD_LIBRARY_PATH=target/ibverbs on two daemons:
 *
 *   verbs_strict CASE DEV_A DEV_B
 *
 * Every check failure prints "FAIL line N: ..." and exits 1; success
 * prints "CASE ok". alarm() bounds every run: a hang fails.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <infiniband/sa.h>
#include <infiniband/verbs.h>
#include <rdma/ib_user_sa.h>
#include <rdma/ib_user_verbs.h>

/* libibverbs' marshalling helpers (its marshall.h is not installed). */
void ibv_copy_qp_attr_from_kern(struct ibv_qp_attr *dst,
				struct ib_uverbs_qp_attr *src);
void ibv_copy_ah_attr_from_kern(struct ibv_ah_attr *dst,
				struct ib_uverbs_ah_attr *src);
void ibv_copy_path_rec_from_kern(struct ibv_sa_path_rec *dst,
				 struct ib_user_path_rec *src);
void ibv_copy_path_rec_to_kern(struct ib_user_path_rec *dst,
			       struct ibv_sa_path_rec *src);
/* Private to rdma-core (IBVERBS_PRIVATE_34), used by ibv_devinfo. */
int ibv_query_gid_type(struct ibv_context *context, uint8_t port_num,
		       unsigned int index, int *type);

#define CHECK(c, ...)                                                          \
	do {                                                                   \
		if (!(c)) {                                                    \
			printf("FAIL line %d: ", __LINE__);                    \
			printf(__VA_ARGS__);                                   \
			printf(" (errno %d)\n", errno);                        \
			exit(1);                                               \
		}                                                              \
	} while (0)

#define SIZE 65536

static struct ibv_context *open_dev(const char *name)
{
	int n;
	struct ibv_device **list = ibv_get_device_list(&n);
	CHECK(list, "ibv_get_device_list");
	for (int i = 0; i < n; i++)
		if (!strcmp(ibv_get_device_name(list[i]), name)) {
			struct ibv_context *c = ibv_open_device(list[i]);
			CHECK(c, "open %s", name);
			ibv_free_device_list(list);
			return c;
		}
	CHECK(0, "no device %s", name);
	return NULL;
}

/* One end: a device, a PD, a CQ, a registered buffer, a QP. */
struct side {
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	struct ibv_mr *mr;
	char *buf;
	struct ibv_qp *qp;
	union ibv_gid gid;
};

#define ALL_ACCESS                                                             \
	(IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |                    \
	 IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC |                   \
	 IBV_ACCESS_MW_BIND)
#define REMOTE_ALL                                                             \
	(IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ |                    \
	 IBV_ACCESS_REMOTE_ATOMIC)

static struct ibv_qp *make_qp(struct side *s, enum ibv_qp_type type)
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

static void side_init(struct side *s, const char *name)
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

static void to_init(struct ibv_qp *qp, int access)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_INIT,
		.port_num = 1,
		.qp_access_flags = access,
	};
	CHECK(!ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
					     IBV_QP_PORT | IBV_QP_ACCESS_FLAGS),
	      "INIT");
}

static void to_rtr(struct ibv_qp *qp, struct side *remote, int dest_rd)
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

static void to_rts(struct ibv_qp *qp)
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
static void connect_pair(struct side *a, struct side *b, int access)
{
	to_init(a->qp, access);
	to_init(b->qp, access);
	to_rtr(a->qp, b, 4);
	to_rtr(b->qp, a, 4);
	to_rts(a->qp);
	to_rts(b->qp);
}

static void pair(struct side *a, struct side *b, char **argv, int access)
{
	side_init(a, argv[2]);
	side_init(b, argv[3]);
	connect_pair(a, b, access);
}

/* Waits for one completion on cq. */
static struct ibv_wc wait_wc(struct ibv_cq *cq)
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

static void expect_wc(struct ibv_cq *cq, uint64_t id, enum ibv_wc_status st,
		      enum ibv_wc_opcode op)
{
	struct ibv_wc wc = wait_wc(cq);
	CHECK(wc.wr_id == id && wc.status == st && wc.opcode == op,
	      "wc %llu status %d (%s) opcode %d, expected %llu status %d opcode %d",
	      (unsigned long long)wc.wr_id, wc.status,
	      ibv_wc_status_str(wc.status), wc.opcode, (unsigned long long)id,
	      st, op);
}

static void no_wc(struct ibv_cq *cq)
{
	struct ibv_wc wc;
	usleep(50000);
	CHECK(ibv_poll_cq(cq, 1, &wc) == 0, "unexpected completion %llu",
	      (unsigned long long)wc.wr_id);
}

static struct ibv_send_wr send_wr(struct ibv_sge *sge, uint64_t id,
				  enum ibv_wr_opcode op)
{
	struct ibv_send_wr wr = { .wr_id = id, .sg_list = sge,
				  .num_sge = sge ? 1 : 0, .opcode = op,
				  .send_flags = IBV_SEND_SIGNALED };
	return wr;
}

static int post1(struct ibv_qp *qp, struct ibv_send_wr *wr)
{
	struct ibv_send_wr *bad = NULL;
	int r = ibv_post_send(qp, wr, &bad);
	CHECK(r == 0 || bad == wr, "bad_wr %p for the only WR %p", bad, wr);
	return r;
}

static void post_recv(struct ibv_qp *qp, struct side *s, uint64_t id)
{
	struct ibv_sge sge = { (uintptr_t)s->buf, 4096, s->mr->lkey };
	struct ibv_recv_wr wr = { .wr_id = id, .sg_list = &sge, .num_sge = 1 },
			   *bad;
	CHECK(!ibv_post_recv(qp, &wr, &bad), "post_recv");
}

/* ---- exports: rates, marshalling, fork, L2 resolution ---- */

static void case_exports(char **argv)
{
	CHECK(ibv_rate_to_mbps(IBV_RATE_2_5_GBPS) == 2500, "2.5");
	CHECK(ibv_rate_to_mbps(IBV_RATE_100_GBPS) == 103125, "100");
	CHECK(ibv_rate_to_mbps(IBV_RATE_MAX) == -1, "max");
	CHECK(mbps_to_ibv_rate(14062) == IBV_RATE_14_GBPS, "14");
	CHECK(mbps_to_ibv_rate(12345) == IBV_RATE_MAX, "none");
	for (int r = IBV_RATE_2_5_GBPS; r <= IBV_RATE_1200_GBPS; r++)
		CHECK((int)mbps_to_ibv_rate(ibv_rate_to_mbps(r)) == r, "rate %d", r);

	struct ib_uverbs_qp_attr k;
	memset(&k, 0, sizeof k);
	k.qp_state = 3;
	k.cur_qp_state = 2;
	k.path_mtu = 3;
	k.qkey = 0x11111111;
	k.rq_psn = 0x123456;
	k.sq_psn = 0x654321;
	k.dest_qp_num = 0x42;
	k.qp_access_flags = 7;
	k.ah_attr.grh.dgid[15] = 9;
	k.ah_attr.grh.flow_label = 77;
	k.ah_attr.grh.hop_limit = 64;
	k.ah_attr.dlid = 5;
	k.ah_attr.is_global = 1;
	k.ah_attr.port_num = 1;
	k.alt_ah_attr.sl = 3;
	k.max_send_wr = 10;
	k.max_inline_data = 99;
	k.pkey_index = 2;
	k.max_dest_rd_atomic = 4;
	k.timeout = 14;
	k.alt_timeout = 15;
	struct ibv_qp_attr q;
	memset(&q, 0xff, sizeof q);
	q.qp_state = 6;
	ibv_copy_qp_attr_from_kern(&q, &k);
	CHECK(q.qp_state == 6, "qp_state is not copied (as libibverbs)");
	CHECK(q.cur_qp_state == 2 && q.path_mtu == 3 && q.qkey == 0x11111111 &&
		      q.rq_psn == 0x123456 && q.sq_psn == 0x654321 &&
		      q.dest_qp_num == 0x42 && q.qp_access_flags == 7,
	      "qp attr head");
	CHECK(q.ah_attr.grh.dgid.raw[15] == 9 && q.ah_attr.grh.flow_label == 77 &&
		      q.ah_attr.grh.hop_limit == 64 && q.ah_attr.dlid == 5 &&
		      q.ah_attr.is_global == 1 && q.ah_attr.port_num == 1 &&
		      q.alt_ah_attr.sl == 3,
	      "ah attrs");
	CHECK(q.cap.max_send_wr == 10 && q.cap.max_inline_data == 99 &&
		      q.pkey_index == 2 && q.max_dest_rd_atomic == 4 &&
		      q.timeout == 14 && q.alt_timeout == 15,
	      "qp attr tail");

	struct ib_user_path_rec kp;
	memset(&kp, 0, sizeof kp);
	kp.dgid[0] = 0xfe;
	kp.sgid[1] = 0x80;
	kp.dlid = htons(7);
	kp.flow_label = htonl(5);
	kp.reversible = 1;
	kp.mtu = 4;
	kp.pkey = 0xffff;
	kp.hop_limit = 9;
	kp.rate = 16;
	kp.preference = 2;
	struct ibv_sa_path_rec p;
	memset(&p, 0, sizeof p);
	ibv_copy_path_rec_from_kern(&p, &kp);
	CHECK(p.dgid.raw[0] == 0xfe && p.sgid.raw[1] == 0x80 &&
		      p.dlid == htons(7) && p.flow_label == htonl(5) &&
		      p.reversible == 1 && p.mtu == 4 && p.pkey == 0xffff &&
		      p.hop_limit == 9 && p.rate == 16 && p.preference == 2,
	      "path rec from kern");
	struct ib_user_path_rec back;
	memset(&back, 0, sizeof back);
	ibv_copy_path_rec_to_kern(&back, &p);
	CHECK(!memcmp(&back, &kp, sizeof kp), "path rec round trip");

	CHECK(ibv_fork_init() == 0, "fork_init");
	CHECK(ibv_is_fork_initialized() == IBV_FORK_UNNEEDED,
	      "fork not needed (kernel copy-on-fork)");

	/* L2: our own address resolves to our interface's MAC. */
	struct ibv_context *ctx = open_dev(argv[2]);
	struct ibv_ah_attr ah = { .is_global = 1, .port_num = 1 };
	CHECK(!ibv_query_gid(ctx, 1, 0, &ah.grh.dgid), "gid");
	uint8_t mac[6] = { 1, 1, 1, 1, 1, 1 };
	uint16_t vid = 0;
	CHECK(ibv_resolve_eth_l2_from_gid(ctx, &ah, mac, &vid) == 0, "resolve");
	CHECK(vid == 0xffff, "no vlan: %u", vid);
	/* An empty source GID entry cannot be resolved from. */
	ah.grh.sgid_index = 200;
	CHECK(ibv_resolve_eth_l2_from_gid(ctx, &ah, mac, &vid) != 0, "bad sgid");
	ibv_close_device(ctx);
	printf("exports ok\n");
}

/* ---- GID table ---- */

static void case_gid(char **argv)
{
	struct ibv_context *ctx = open_dev(argv[2]);
	struct ibv_port_attr pa;
	CHECK(!ibv_query_port(ctx, 1, &pa), "query_port");
	int len = pa.gid_tbl_len;
	CHECK(len > 1, "table of %d", len);
	union ibv_gid g, zero;
	memset(&zero, 0, sizeof zero);
	CHECK(!ibv_query_gid(ctx, 1, 0, &g) && memcmp(&g, &zero, sizeof g),
	      "index 0");
	memset(&g, 0xff, sizeof g);
	CHECK(!ibv_query_gid(ctx, 1, len - 1, &g) && !memcmp(&g, &zero, sizeof g),
	      "an empty index is the zero GID");
	errno = 0;
	CHECK(ibv_query_gid(ctx, 1, len, &g) == -1 && errno == EINVAL,
	      "past the table");
	CHECK(ibv_query_gid(ctx, 2, 0, &g) == -1, "port 2");

	struct ibv_gid_entry e;
	CHECK(!ibv_query_gid_ex(ctx, 1, 0, &e, 0), "gid_ex 0");
	CHECK(e.gid_type == IBV_GID_TYPE_ROCE_V2 && e.port_num == 1 &&
		      e.gid_index == 0,
	      "entry 0");
	CHECK(ibv_query_gid_ex(ctx, 1, len - 1, &e, 0) == ENODATA, "empty: ENODATA");
	CHECK(ibv_query_gid_ex(ctx, 1, len, &e, 0) == EINVAL, "past: EINVAL");
	CHECK(ibv_query_gid_ex(ctx, 1, 0, &e, 1) == EINVAL, "flags: EINVAL");

	int t = -1;
	CHECK(!ibv_query_gid_type(ctx, 1, 0, &t) && t == 1, "v2");
	CHECK(!ibv_query_gid_type(ctx, 1, len - 1, &t) && t == 0,
	      "empty: v1, as libibverbs says");

	struct ibv_gid_entry table[4];
	ssize_t n = ibv_query_gid_table(ctx, table, 4, 0);
	CHECK(n >= 1 && table[0].gid_index == 0, "table: %zd", n);
	CHECK(ibv_query_gid_table(ctx, table, 0, 0) == -EINVAL, "no room");
	ibv_close_device(ctx);
	printf("gid ok\n");
}

/* ---- address handles ---- */

static void case_ah(char **argv)
{
	struct side a;
	side_init(&a, argv[2]);
	struct ibv_port_attr pa;
	CHECK(!ibv_query_port(a.ctx, 1, &pa), "query_port");
	struct ibv_ah_attr at = { .is_global = 1, .port_num = 1,
				  .grh = { .dgid = a.gid, .hop_limit = 64 } };
	struct ibv_ah *ah = ibv_create_ah(a.pd, &at);
	CHECK(ah, "good AH");
	CHECK(!ibv_destroy_ah(ah), "destroy");

	at.is_global = 0;
	errno = 0;
	CHECK(!ibv_create_ah(a.pd, &at) && errno == EINVAL,
	      "RoCE needs the GRH (kernel: EINVAL)");
	at.is_global = 1;
	at.port_num = 2;
	errno = 0;
	CHECK(!ibv_create_ah(a.pd, &at) && errno == EINVAL, "port 2");
	at.port_num = 1;
	at.grh.sgid_index = 200; /* (the table is longer than a u8 reaches) */
	errno = 0;
	CHECK(!ibv_create_ah(a.pd, &at) && errno == ENODATA, "empty sgid");
	printf("ah ok\n");
}

/* ---- CQ creation ---- */

static void case_cq(char **argv)
{
	struct ibv_context *ctx = open_dev(argv[2]);
	struct ibv_device_attr da;
	CHECK(!ibv_query_device(ctx, &da), "query_device");
	errno = 0;
	CHECK(!ibv_create_cq(ctx, da.max_cqe + 1, NULL, NULL, 0) && errno == EINVAL,
	      "more than max_cqe");
	errno = 0;
	CHECK(!ibv_create_cq(ctx, 0, NULL, NULL, 0) && errno == EINVAL, "0");
	errno = 0;
	CHECK(!ibv_create_cq(ctx, 16, NULL, NULL, ctx->num_comp_vectors) &&
		      errno == EINVAL,
	      "comp_vector = num_comp_vectors");
	errno = 0;
	CHECK(!ibv_create_cq(ctx, 16, NULL, NULL, -1) && errno == EINVAL,
	      "comp_vector -1");
	struct ibv_cq_init_attr_ex ax = { .cqe = da.max_cqe + 1 };
	errno = 0;
	CHECK(!ibv_create_cq_ex(ctx, &ax) && errno == EINVAL, "ex: max_cqe");
	ax.cqe = 16;
	ax.comp_vector = ctx->num_comp_vectors;
	errno = 0;
	CHECK(!ibv_create_cq_ex(ctx, &ax) && errno == EINVAL, "ex: vector");
	struct ibv_cq *cq = ibv_create_cq(ctx, 16, NULL, NULL, 0);
	CHECK(cq && cq->cqe >= 16, "a good one");
	CHECK(!ibv_destroy_cq(cq), "destroy");
	ibv_close_device(ctx);
	printf("cq ok\n");
}

/* ---- memory regions ---- */

static void case_mr(char **argv)
{
	struct ibv_context *ctx = open_dev(argv[2]);
	struct ibv_pd *pd = ibv_alloc_pd(ctx);
	CHECK(pd, "pd");
	static char buf[8192];
	struct { int access; int err; } cases[] = {
		{ IBV_ACCESS_REMOTE_WRITE, EINVAL },
		{ IBV_ACCESS_REMOTE_ATOMIC, EINVAL },
		{ IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ, EINVAL },
		{ IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_ZERO_BASED, EOPNOTSUPP },
		{ IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_HUGETLB, EOPNOTSUPP },
		{ IBV_ACCESS_REMOTE_READ, 0 },
		{ IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE, 0 },
		{ ALL_ACCESS, 0 },
		{ IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_RELAXED_ORDERING, 0 },
	};
	for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		errno = 0;
		struct ibv_mr *mr = ibv_reg_mr(pd, buf, sizeof buf, cases[i].access);
		if (cases[i].err) {
			CHECK(!mr && errno == cases[i].err,
			      "access %#x: errno %d, expected %d", cases[i].access,
			      errno, cases[i].err);
		} else {
			CHECK(mr, "access %#x", cases[i].access);
			CHECK(!ibv_dereg_mr(mr), "dereg");
		}
	}
	printf("mr ok\n");
}

/* ---- posting in states that forbid it ---- */

static void case_post_state(char **argv)
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

static void case_bad_wr(char **argv)
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

static void case_access_flags(char **argv)
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

static void case_atomic_write(char **argv)
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

static void case_srq_ex(char **argv)
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

static void case_mw(char **argv)
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

static void case_iova(char **argv)
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

static void case_resize_cq(char **argv)
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

/* ---- SRQ: size, limit, query, resize, the limit event ---- */

static struct ibv_async_event next_event(struct ibv_context *ctx)
{
	struct pollfd p = { .fd = ctx->async_fd, .events = POLLIN };
	CHECK(poll(&p, 1, 5000) == 1, "no async event");
	struct ibv_async_event ev;
	CHECK(!ibv_get_async_event(ctx, &ev), "get_async_event");
	ibv_ack_async_event(&ev);
	return ev;
}

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

static void case_srq(char **argv)
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
	struct ibv_async_event ev = next_event(b.ctx);
	CHECK(ev.event_type == IBV_EVENT_SRQ_LIMIT_REACHED && ev.element.srq == srq,
	      "srq limit: %s", ibv_event_type_str(ev.event_type));
	CHECK(!ibv_query_srq(srq, &sa) && sa.srq_limit == 0, "disarmed");
	no_event(b.ctx);
	/* LAST_WQE_REACHED when the QP on the SRQ goes to ERR. */
	struct ibv_qp_attr err = { .qp_state = IBV_QPS_ERR };
	CHECK(!ibv_modify_qp(b.qp, &err, IBV_QP_STATE), "to err");
	ev = next_event(b.ctx);
	CHECK(ev.event_type == IBV_EVENT_QP_LAST_WQE_REACHED && ev.element.qp == b.qp,
	      "last wqe: %s", ibv_event_type_str(ev.event_type));
	printf("srq ok\n");
}

/* ---- asynchronous events ---- */

static void case_events(char **argv)
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
	struct ibv_async_event ev = next_event(b.ctx);
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
	ev = next_event(b.ctx);
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
	ev = next_event(b.ctx);
	CHECK(ev.event_type == IBV_EVENT_COMM_EST && ev.element.qp == b.qp,
	      "comm est: %s", ibv_event_type_str(ev.event_type));
	/* SQ_DRAINED: a moves to SQD with nothing in flight. */
	expect_wc(a.cq, 4, IBV_WC_SUCCESS, IBV_WC_SEND);
	struct ibv_qp_attr sqd = { .qp_state = IBV_QPS_SQD };
	CHECK(!ibv_modify_qp(a.qp, &sqd, IBV_QP_STATE), "to sqd");
	ev = next_event(a.ctx);
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

static void case_solicited(char **argv)
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

static void case_queue_full(char **argv)
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

int main(int argc, char **argv)
{
	alarm(60);
	setvbuf(stdout, NULL, _IONBF, 0);
	CHECK(argc == 4, "usage: verbs_strict CASE DEV_A DEV_B");
	struct { const char *name; void (*run)(char **); } cases[] = {
		{ "exports", case_exports },
		{ "gid", case_gid },
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
	};
	for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++)
		if (!strcmp(argv[1], cases[i].name)) {
			cases[i].run(argv);
			return 0;
		}
	CHECK(0, "unknown case %s", argv[1]);
	return 1;
}
