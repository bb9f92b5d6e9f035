/* verbs_strict's cases of the device and its objects: exports, gid,
 * gid_port, ah, cq, mr. */
#include <arpa/inet.h>

#include <infiniband/sa.h>
#include <rdma/ib_user_sa.h>
#include <rdma/ib_user_verbs.h>

#include "verbs_strict.h"

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

/* ---- exports: rates, marshalling, fork, L2 resolution ---- */

void case_exports(char **argv)
{
	CHECK(ibv_rate_to_mbps(IBV_RATE_2_5_GBPS) == 2500, "2.5");
	CHECK(ibv_rate_to_mbps(IBV_RATE_100_GBPS) == 103125, "100");
	CHECK(ibv_rate_to_mbps(IBV_RATE_MAX) == -1, "max");
	CHECK(mbps_to_ibv_rate(14062) == IBV_RATE_14_GBPS, "14");
	CHECK(mbps_to_ibv_rate(12345) == IBV_RATE_MAX, "none");
	for (int r = IBV_RATE_2_5_GBPS; r <= IBV_RATE_1200_GBPS; r++)
		CHECK((int)mbps_to_ibv_rate(ibv_rate_to_mbps(r)) == r, "rate %d", r);

	struct ib_uverbs_qp_attr k = {
		.qp_state = 3, .cur_qp_state = 2, .path_mtu = 3,
		.qkey = 0x11111111, .rq_psn = 0x123456, .sq_psn = 0x654321,
		.dest_qp_num = 0x42, .qp_access_flags = 7,
		.ah_attr = { .grh = { .dgid = { [15] = 9 }, .flow_label = 77,
				      .hop_limit = 64 },
			     .dlid = 5, .is_global = 1, .port_num = 1 },
		.alt_ah_attr = { .sl = 3 },
		.max_send_wr = 10, .max_inline_data = 99, .pkey_index = 2,
		.max_dest_rd_atomic = 4, .timeout = 14, .alt_timeout = 15,
	};
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

	/* No padding in the kernel's path record: the round trip's memcmp
	 * compares members only. */
	_Static_assert(sizeof(struct ib_user_path_rec) == 64, "padding");
	struct ib_user_path_rec kp = {
		.dgid = { [0] = 0xfe }, .sgid = { [1] = 0x80 }, .dlid = htons(7),
		.flow_label = htonl(5), .reversible = 1, .mtu = 4, .pkey = 0xffff,
		.hop_limit = 9, .rate = 16, .preference = 2,
	};
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

void case_gid(char **argv)
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
	/* A device on a loopback address lists that address only. */
	CHECK(n == 1 && table[0].gid_index == 0, "table: %zd", n);
	CHECK(ibv_query_gid(ctx, 1, 0, &g) == 0 &&
		      !memcmp(&table[0].gid, &g, sizeof g) &&
		      g.raw[10] == 0xff && g.raw[11] == 0xff,
	      "the table's entry 0 is query_gid's, an IPv4-mapped address");
	CHECK(ibv_query_gid_ex(ctx, 1, 1, &e, 0) == ENODATA, "index 1 is empty");
	CHECK(ibv_query_gid_table(ctx, table, 0, 0) == -EINVAL, "no room");
	ibv_close_device(ctx);
	printf("gid ok\n");
}

/* ---- the GID table of a real interface, and the port's events ---- */

static enum ibv_port_state port_state(struct ibv_context *ctx)
{
	struct ibv_port_attr pa;
	CHECK(!ibv_query_port(ctx, 1, &pa), "query_port");
	return pa.state;
}

static void send_checked(struct side *a, struct side *b, uint64_t id)
{
	snprintf(a->buf, 64, "message %llu", (unsigned long long)id);
	post_recv(b->qp, b, id);
	struct ibv_sge sge = { (uintptr_t)a->buf, 64, a->mr->lkey };
	struct ibv_send_wr w = send_wr(&sge, id, IBV_WR_SEND);
	CHECK(!post1(a->qp, &w), "send %llu", (unsigned long long)id);
	expect_wc(a->cq, id, IBV_WC_SUCCESS, IBV_WC_SEND);
	expect_wc(b->cq, id, IBV_WC_SUCCESS, IBV_WC_RECV);
	CHECK(!memcmp(a->buf, b->buf, 64), "message %llu's bytes",
	      (unsigned long long)id);
}

/*
 * gid_port DEV "A.B.C.D/N dev IF": DEV is bound to A.B.C.D, an address of
 * IF, which has at least one more IPv4 address and an IPv6 one (run in a
 * network namespace of its own, as root: this case removes the address
 * and puts it back with ip(8)).
 */
void case_gid_port(char **argv)
{
	struct ibv_context *ctx = open_dev(argv[2]);
	struct ibv_gid_entry table[16];
	ssize_t n = ibv_query_gid_table(ctx, table, 16, 0);
	CHECK(n >= 3, "the interface's addresses: %zd entries", n);
	int v4 = 0, v6 = 0;
	for (int i = 0; i < n; i++) {
		union ibv_gid g;
		struct ibv_gid_entry e;
		CHECK(table[i].gid_index == (uint32_t)i && table[i].port_num == 1 &&
			      table[i].gid_type == IBV_GID_TYPE_ROCE_V2,
		      "table entry %d", i);
		CHECK(!ibv_query_gid(ctx, 1, i, &g) &&
			      !memcmp(&g, &table[i].gid, sizeof g),
		      "query_gid %d agrees with the table", i);
		CHECK(!ibv_query_gid_ex(ctx, 1, i, &e, 0) &&
			      !memcmp(&e.gid, &table[i].gid, sizeof g) &&
			      e.gid_type == IBV_GID_TYPE_ROCE_V2,
		      "query_gid_ex %d agrees with the table", i);
		int mapped = g.raw[10] == 0xff && g.raw[11] == 0xff;
		/* IPv4 first, then IPv6. */
		CHECK(mapped ? v6 == 0 : 1, "IPv4 entry %d after an IPv6 one", i);
		v4 += mapped;
		v6 += !mapped;
		char text[INET6_ADDRSTRLEN];
		inet_ntop(AF_INET6, g.raw, text, sizeof text);
		printf("gid %d: %s\n", i, text);
	}
	CHECK(v4 >= 2 && v6 >= 1, "%d IPv4 and %d IPv6 entries", v4, v6);
	struct ibv_gid_entry e;
	CHECK(ibv_query_gid_ex(ctx, 1, n, &e, 0) == ENODATA, "past the last: empty");
	/* Entry 0 is the address the device is bound to. */
	char want[64];
	snprintf(want, sizeof want, "%s", argv[3]);
	*strchr(want, '/') = 0;
	struct in_addr in;
	CHECK(inet_pton(AF_INET, want, &in) == 1, "address %s", want);
	CHECK(!memcmp(&table[0].gid.raw[12], &in, 4), "entry 0 is %s", want);

	/* Traffic from GID 0 works; another listed GID cannot be a source:
	 * EINVAL, for an address handle and for a QP. */
	struct side a, b;
	side_init(&a, argv[2]);
	side_init(&b, argv[2]);
	struct ibv_ah_attr at = { .is_global = 1, .port_num = 1,
				  .grh = { .dgid = b.gid, .hop_limit = 64,
					   .sgid_index = 1 } };
	errno = 0;
	CHECK(!ibv_create_ah(a.pd, &at) && errno == EINVAL, "AH from GID 1");
	at.grh.sgid_index = 0;
	struct ibv_ah *ah = ibv_create_ah(a.pd, &at);
	CHECK(ah, "AH from GID 0");
	ibv_destroy_ah(ah);
	to_init(a.qp, REMOTE_ALL);
	to_init(b.qp, REMOTE_ALL);
	struct ibv_qp_attr r = {
		.qp_state = IBV_QPS_RTR, .path_mtu = IBV_MTU_1024,
		.dest_qp_num = b.qp->qp_num, .max_dest_rd_atomic = 4,
		.min_rnr_timer = 1,
		.ah_attr = { .is_global = 1, .port_num = 1,
			     .grh = { .dgid = b.gid, .hop_limit = 64,
				      .sgid_index = n - 1 } },
	};
	int mask = IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
		   IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
		   IBV_QP_MIN_RNR_TIMER;
	CHECK(ibv_modify_qp(a.qp, &r, mask) == EINVAL, "QP from the last GID");
	to_rtr(a.qp, &b, 4);
	to_rtr(b.qp, &a, 4);
	to_rts(a.qp);
	to_rts(b.qp);
	send_checked(&a, &b, 1);

	/* The address goes: PORT_ERR, the port is down; it comes back:
	 * PORT_ACTIVE, and traffic flows again. */
	CHECK(port_state(ctx) == IBV_PORT_ACTIVE, "active at first");
	char cmd[256];
	snprintf(cmd, sizeof cmd, "ip addr del %s", argv[3]);
	CHECK(system(cmd) == 0, "%s", cmd);
	struct ibv_async_event ev = next_event(ctx, 10000);
	CHECK(ev.event_type == IBV_EVENT_PORT_ERR && ev.element.port_num == 1,
	      "port err: %s", ibv_event_type_str(ev.event_type));
	CHECK(port_state(ctx) == IBV_PORT_DOWN, "down");
	snprintf(cmd, sizeof cmd, "ip addr add %s", argv[3]);
	CHECK(system(cmd) == 0, "%s", cmd);
	ev = next_event(ctx, 10000);
	CHECK(ev.event_type == IBV_EVENT_PORT_ACTIVE && ev.element.port_num == 1,
	      "port active: %s", ibv_event_type_str(ev.event_type));
	CHECK(port_state(ctx) == IBV_PORT_ACTIVE, "active again");
	send_checked(&a, &b, 2);
	printf("gid_port ok (%zd GIDs)\n", n);
}

/* ---- address handles ---- */

void case_ah(char **argv)
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

void case_cq(char **argv)
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

void case_mr(char **argv)
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
