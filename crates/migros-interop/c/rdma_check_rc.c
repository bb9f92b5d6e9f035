/* rdma_check's RC scenarios: bytes, rnr, access, invalid (see rdma_check.c). */
#include "rdma_check.h"

#define MEM_SIZE (1u << 20)
#define READ_AREA 0u
#define WRITE_AREA (512u << 10)
#define ATOMIC_AREA (MEM_SIZE - 4096u)
#define COUNTER_START 0x1000ull
#define CAS_START 7ull
#define N_FETCH_ADD 64
#define N_CAS 16
#define START_PSN 0xffff80u /* wraps after 128 packets */

static const uint32_t sizes[] = {1, 3, 255, 1023, 1024, 1025, 4096, 4097, 12289, 65536, 200000};
#define N_SIZES (sizeof(sizes) / sizeof(sizes[0]))

/* ---- bytes ---- */

void bytes(void)
{
	uint8_t *mem = aligned_alloc(4096, MEM_SIZE);
	struct ibv_mr *mr = reg(mem, MEM_SIZE, ALL_REMOTE);
	struct ibv_qp *qp = create_qp(IBV_QPT_RC);
	struct peer remote = exchange(qp, START_PSN, mr);
	connect_rc(qp, &remote, START_PSN, 7, 12);
	uint32_t server_seed = 0x5eed0001, client_seed = 0x5eed0002;
	uint64_t *counter = (uint64_t *)(mem + ATOMIC_AREA), *cas = counter + 1;
	uint64_t fa_total = 0, cas_value = CAS_START;
	for (int i = 0; i < N_FETCH_ADD; i++)
		fa_total += i + 1;
	for (int i = 0; i < N_CAS; i++)
		cas_value = cas_value * 3 + 1;

	if (!opt.server) {
		fill(mem + READ_AREA, server_seed, 0, WRITE_AREA - READ_AREA);
		memset(mem + WRITE_AREA, 0, ATOMIC_AREA - WRITE_AREA);
		*counter = COUNTER_START;
		*cas = CAS_START;
		for (int r = 0; r < opt.rounds; r++)
			post_recv(qp, mr, ATOMIC_AREA + 64, 64, 1000 + r);
		tcp_word(0); /* ready */
		for (int r = 0; r < opt.rounds; r++) {
			struct ibv_wc wc;
			if (wait_wc(&wc, WAIT_MS * 3)) {
				check(0, "no WRITE with immediate arrived (round %d)", r);
				break;
			}
			check(wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM &&
				      (wc.wc_flags & IBV_WC_WITH_IMM) &&
				      ntohl(wc.imm_data) == 0xc0ffee00u + r,
			      "WRITE with immediate: %s opcode %d imm %#x",
			      ibv_wc_status_str(wc.status), wc.opcode, ntohl(wc.imm_data));
		}
		tcp_word(0); /* the client is done */
		uint64_t off = 0;
		for (unsigned i = 0; i < N_SIZES; i++) {
			long at = mismatch(mem + WRITE_AREA + off, client_seed, off, sizes[i]);
			check(at < 0, "WRITE of %u bytes: byte %ld differs", sizes[i], at);
			off += (sizes[i] + 63) & ~63u;
		}
		check(*counter == COUNTER_START + fa_total * opt.rounds,
		      "fetch-and-add total %#" PRIx64 ", expected %#" PRIx64, *counter,
		      COUNTER_START + fa_total * opt.rounds);
		check(*cas == cas_value, "compare-and-swap final %#" PRIx64 ", expected %#" PRIx64,
		      *cas, cas_value);
		uint32_t peer_failures = tcp_word(failures);
		failures += peer_failures;
		return;
	}

	uint8_t *atomics = mem + ATOMIC_AREA;
	memset(mem, 0, MEM_SIZE);
	tcp_word(0); /* the server is ready */
	double t0 = now_ms();
	for (int r = 0; r < opt.rounds; r++) {
		/* WRITEs, then one WRITE with immediate. */
		uint64_t off = 0;
		int n = 0;
		for (unsigned i = 0; i < N_SIZES; i++) {
			fill(mem + WRITE_AREA + off, client_seed, off, sizes[i]);
			struct ibv_sge sge = {(uintptr_t)mem + WRITE_AREA + off, sizes[i], mr->lkey};
			struct ibv_send_wr wr = {.wr_id = n++, .sg_list = &sge, .num_sge = 1,
						 .opcode = IBV_WR_RDMA_WRITE};
			wr.wr.rdma.remote_addr = remote.addr + WRITE_AREA + off;
			wr.wr.rdma.rkey = remote.rkey;
			post_send(qp, &wr);
			off += (sizes[i] + 63) & ~63u;
		}
		struct ibv_sge sge = {(uintptr_t)mem + WRITE_AREA, 100, mr->lkey};
		struct ibv_send_wr imm = {.wr_id = n++, .sg_list = &sge, .num_sge = 1,
					  .opcode = IBV_WR_RDMA_WRITE_WITH_IMM,
					  .imm_data = htonl(0xc0ffee00u + r)};
		imm.wr.rdma.remote_addr = remote.addr + ATOMIC_AREA + 128;
		imm.wr.rdma.rkey = remote.rkey;
		post_send(qp, &imm);
		wait_ok(n, "WRITE");

		/* READs into the client's read area. */
		off = 0;
		memset(mem + READ_AREA, 0, WRITE_AREA - READ_AREA);
		for (unsigned i = 0; i < N_SIZES; i++) {
			struct ibv_sge sge = {(uintptr_t)mem + READ_AREA + off, sizes[i], mr->lkey};
			struct ibv_send_wr wr = {.wr_id = i, .sg_list = &sge, .num_sge = 1,
						 .opcode = IBV_WR_RDMA_READ};
			wr.wr.rdma.remote_addr = remote.addr + READ_AREA + off;
			wr.wr.rdma.rkey = remote.rkey;
			post_send(qp, &wr);
			off += (sizes[i] + 63) & ~63u;
		}
		wait_ok(N_SIZES, "READ");
		off = 0;
		for (unsigned i = 0; i < N_SIZES; i++) {
			long at = mismatch(mem + READ_AREA + off, server_seed, off, sizes[i]);
			check(at < 0, "READ of %u bytes: byte %ld differs", sizes[i], at);
			off += (sizes[i] + 63) & ~63u;
		}

		/* Fetch-and-add, then compare-and-swap, each result checked. */
		uint64_t *orig = (uint64_t *)atomics;
		for (int i = 0; i < N_FETCH_ADD; i++) {
			struct ibv_sge sge = {(uintptr_t)&orig[i], 8, mr->lkey};
			struct ibv_send_wr wr = {.wr_id = i, .sg_list = &sge, .num_sge = 1,
						 .opcode = IBV_WR_ATOMIC_FETCH_AND_ADD};
			wr.wr.atomic.remote_addr = remote.addr + ATOMIC_AREA;
			wr.wr.atomic.rkey = remote.rkey;
			wr.wr.atomic.compare_add = i + 1;
			post_send(qp, &wr);
		}
		wait_ok(N_FETCH_ADD, "fetch-and-add");
		uint64_t expect = COUNTER_START + fa_total * r;
		for (int i = 0; i < N_FETCH_ADD; i++) {
			check(orig[i] == expect, "fetch-and-add %d returned %#" PRIx64 ", expected %#" PRIx64,
			      i, orig[i], expect);
			expect += i + 1;
		}
		uint64_t cur = CAS_START;
		for (int i = 0; i < N_CAS + 1; i++) {
			/* The last one compares with a wrong value: no swap. */
			int miss = i == N_CAS;
			struct ibv_sge sge = {(uintptr_t)&orig[i], 8, mr->lkey};
			struct ibv_send_wr wr = {.wr_id = i, .sg_list = &sge, .num_sge = 1,
						 .opcode = IBV_WR_ATOMIC_CMP_AND_SWP};
			wr.wr.atomic.remote_addr = remote.addr + ATOMIC_AREA + 8;
			wr.wr.atomic.rkey = remote.rkey;
			wr.wr.atomic.compare_add = (r == 0 ? cur : cas_value) + miss;
			wr.wr.atomic.swap = miss ? 0 : (r == 0 ? cur * 3 + 1 : cas_value);
			post_send(qp, &wr);
			cur = cur * 3 + 1;
		}
		wait_ok(N_CAS + 1, "compare-and-swap");
		cur = CAS_START;
		for (int i = 0; i < N_CAS + 1; i++) {
			uint64_t want = r == 0 ? (i == N_CAS ? cas_value : cur) : cas_value;
			check(orig[i] == want, "compare-and-swap %d returned %#" PRIx64 ", expected %#" PRIx64,
			      i, orig[i], want);
			cur = cur * 3 + 1;
		}
	}
	double ms = now_ms() - t0;
	tcp_word(0); /* done */
	uint32_t peer_failures = tcp_word(failures);
	if (peer_failures)
		printf("the server found %u problems\n", peer_failures);
	failures += peer_failures;
	printf("rounds %d: %u WRITEs + 1 with immediate, %u READs, %d fetch-and-add, %d "
	       "compare-and-swap each, %.0f ms\n",
	       opt.rounds, (unsigned)N_SIZES, (unsigned)N_SIZES, N_FETCH_ADD, N_CAS + 1, ms);
}

/* ---- rnr ---- */

/* One packet at the default path MTU (1024): each RNR NAK answers the whole
 * message, no sequence NAK follows for the packets behind it. */
#define RNR_SEND 1000u

void rnr(void)
{
	uint8_t *mem = aligned_alloc(4096, 65536);
	struct ibv_mr *mr = reg(mem, 65536, ALL_REMOTE);
	/* rnr_retry 7 (infinite): the SEND completes once a receive is posted. */
	struct ibv_qp *qp = create_qp(IBV_QPT_RC);
	struct peer remote = exchange(qp, 0x100, mr);
	/* min_rnr_timer 20: 10.24 ms */
	connect_rc(qp, &remote, 0x100, 7, 20);
	if (!opt.server) {
		memset(mem, 0, 65536);
		tcp_word(0); /* the client posted its SEND */
		usleep(300000);
		post_recv(qp, mr, 0, 4096, 1);
		struct ibv_wc wc;
		int got = !wait_wc(&wc, WAIT_MS);
		check(got && wc.status == IBV_WC_SUCCESS && wc.byte_len == RNR_SEND,
		      "rnr: receive %s", got ? ibv_wc_status_str(wc.status) : "never completed");
		check(mismatch(mem, 0x77, 0, RNR_SEND) < 0, "rnr: received bytes differ");
	} else {
		fill(mem, 0x77, 0, RNR_SEND);
		struct ibv_sge sge = {(uintptr_t)mem, RNR_SEND, mr->lkey};
		struct ibv_send_wr wr = {.wr_id = 1, .sg_list = &sge, .num_sge = 1,
					 .opcode = IBV_WR_SEND};
		double t0 = now_ms();
		post_send(qp, &wr);
		tcp_word(0);
		struct ibv_wc wc;
		int got = !wait_wc(&wc, WAIT_MS);
		double ms = now_ms() - t0;
		check(got && wc.status == IBV_WC_SUCCESS, "rnr: SEND %s",
		      got ? ibv_wc_status_str(wc.status) : "never completed");
		check(ms >= 250, "rnr: SEND completed after %.0f ms, before the receive was posted", ms);
		printf("rnr_retry 7: SEND completed after %.0f ms (receive posted after 300 ms)\n", ms);
	}
	failures += tcp_word(failures);
	ibv_destroy_qp(qp);

	/* rnr_retry 0: the first RNR NAK fails the WR. */
	qp = create_qp(IBV_QPT_RC);
	remote = exchange(qp, 0x200, mr);
	connect_rc(qp, &remote, 0x200, 0, 20);
	if (opt.server) {
		struct ibv_sge sge = {(uintptr_t)mem, 100, mr->lkey};
		struct ibv_send_wr wr = {.wr_id = 2, .sg_list = &sge, .num_sge = 1,
					 .opcode = IBV_WR_SEND};
		post_send(qp, &wr);
		struct ibv_wc wc;
		int got = !wait_wc(&wc, WAIT_MS);
		check(got && wc.status == IBV_WC_RNR_RETRY_EXC_ERR, "rnr_retry 0: SEND %s",
		      got ? ibv_wc_status_str(wc.status) : "never completed");
		printf("rnr_retry 0: SEND %s\n", got ? ibv_wc_status_str(wc.status) : "-");
	}
	tcp_word(0);
	/* The server's QP stays usable: an RNR NAK is not an error. */
	if (!opt.server)
		check(qp_state(qp) == IBV_QPS_RTS, "rnr_retry 0: server QP %s",
		      state_name(qp_state(qp)));
	failures += tcp_word(failures);
}

/* ---- access and invalid ---- */

struct subtest {
	const char *name;
	int server_access;          /* the server's MR rights */
	enum ibv_wr_opcode op;      /* what the client does */
	uint64_t offset;            /* from the MR's start */
	uint32_t len;
	int bad_rkey;
	uint32_t recv_len;          /* the server posts a receive of this size */
	enum ibv_wc_status client;  /* the client's completion */
	enum ibv_wc_status server;  /* the server's receive completion, if any */
	int qp_access;              /* the server QP's access flags (0: all) */
};

static void run_subtest(const struct subtest *t, uint8_t *mem, uint32_t psn)
{
	struct ibv_mr *server_mr = NULL, *mr;
	if (opt.server) {
		mr = reg(mem, 65536, IBV_ACCESS_LOCAL_WRITE);
	} else {
		server_mr = reg(mem, 8192, t->server_access);
		mr = reg(mem + 16384, 16384, IBV_ACCESS_LOCAL_WRITE);
	}
	struct ibv_qp *qp = create_qp(IBV_QPT_RC);
	struct peer remote = exchange(qp, psn, server_mr);
	int qp_access = !opt.server && t->qp_access ? t->qp_access : ALL_REMOTE;
	connect_rc_access(qp, &remote, psn, 7, 12, qp_access);
	if (!opt.server) {
		if (t->recv_len)
			post_recv(qp, mr, 0, t->recv_len, 7);
		tcp_word(0);
		tcp_word(0); /* the client has its completion */
		enum ibv_qp_state s = wait_state(qp, IBV_QPS_ERR, 3000);
		check(s == IBV_QPS_ERR, "%s: server QP %s, expected ERR", t->name, state_name(s));
		if (t->recv_len) {
			struct ibv_wc wc;
			int got = !wait_wc(&wc, 3000);
			check(got && wc.status == t->server, "%s: server receive %s, expected %s",
			      t->name, got ? ibv_wc_status_str(wc.status) : "none",
			      ibv_wc_status_str(t->server));
			printf("%s: server QP %s, receive %s\n", t->name, state_name(s),
			       got ? ibv_wc_status_str(wc.status) : "none");
		} else {
			printf("%s: server QP %s\n", t->name, state_name(s));
		}
	} else {
		tcp_word(0);
		struct ibv_sge sge = {(uintptr_t)mem, t->len, mr->lkey};
		struct ibv_send_wr wr = {.wr_id = 9, .sg_list = &sge, .num_sge = 1, .opcode = t->op};
		uint64_t addr = remote.addr + t->offset;
		uint32_t rkey = t->bad_rkey ? ~remote.rkey : remote.rkey;
		if (t->op == IBV_WR_ATOMIC_FETCH_AND_ADD) {
			wr.wr.atomic.remote_addr = addr;
			wr.wr.atomic.rkey = rkey;
			wr.wr.atomic.compare_add = 1;
		} else {
			wr.wr.rdma.remote_addr = addr;
			wr.wr.rdma.rkey = rkey;
		}
		post_send(qp, &wr);
		struct ibv_wc wc;
		int got = !wait_wc(&wc, WAIT_MS);
		check(got && wc.status == t->client, "%s: client %s, expected %s", t->name,
		      got ? ibv_wc_status_str(wc.status) : "no completion", ibv_wc_status_str(t->client));
		enum ibv_qp_state s = wait_state(qp, IBV_QPS_ERR, 3000);
		check(s == IBV_QPS_ERR, "%s: client QP %s, expected ERR", t->name, state_name(s));
		printf("%s: client %s, QP %s\n", t->name, got ? ibv_wc_status_str(wc.status) : "-",
		       state_name(s));
		tcp_word(0);
	}
	failures += tcp_word(failures);
	ibv_destroy_qp(qp);
	if (server_mr)
		ibv_dereg_mr(server_mr);
	ibv_dereg_mr(mr);
}

static const int RW = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;

static const struct subtest access_tests[] = {
	{"bad_rkey_write", ALL_REMOTE, IBV_WR_RDMA_WRITE, 0, 64, 1, 0, IBV_WC_REM_ACCESS_ERR, 0, 0},
	{"mr_no_remote_write", IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ, IBV_WR_RDMA_WRITE, 0,
	 64, 0, 0, IBV_WC_REM_ACCESS_ERR, 0, 0},
	{"mr_no_remote_read", IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE, IBV_WR_RDMA_READ, 0,
	 64, 0, 0, IBV_WC_REM_ACCESS_ERR, 0, 0},
	{"mr_no_remote_atomic", RW, IBV_WR_ATOMIC_FETCH_AND_ADD, 0, 8, 0, 0, IBV_WC_REM_ACCESS_ERR, 0, 0},
	{"read_past_mr_end", ALL_REMOTE, IBV_WR_RDMA_READ, 8192 - 32, 64, 0, 0, IBV_WC_REM_ACCESS_ERR,
	 0, 0},
};

static const struct subtest invalid_tests[] = {
	{"qp_no_remote_write", ALL_REMOTE, IBV_WR_RDMA_WRITE, 0, 64, 0, 0, IBV_WC_REM_INV_REQ_ERR, 0,
	 IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC},
	{"qp_no_remote_read", ALL_REMOTE, IBV_WR_RDMA_READ, 0, 64, 0, 0, IBV_WC_REM_INV_REQ_ERR, 0,
	 IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC},
	{"qp_no_remote_atomic", ALL_REMOTE, IBV_WR_ATOMIC_FETCH_AND_ADD, 0, 8, 0, 0,
	 IBV_WC_REM_INV_REQ_ERR, 0, IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ},
	/* rxe 6.1, and migros after it; the specification: REM_INV_REQ_ERR, LOC_LEN_ERR. */
	{"send_longer_than_receive", ALL_REMOTE, IBV_WR_SEND, 0, 256, 0, 64, IBV_WC_REM_OP_ERR,
	 IBV_WC_LOC_QP_OP_ERR, 0},
};

static void subtests(const struct subtest *t, size_t n)
{
	uint8_t *mem = aligned_alloc(4096, 65536);
	memset(mem, 0, 65536);
	for (size_t i = 0; i < n; i++)
		run_subtest(&t[i], mem, 0x1000 * (i + 1));
}

void access_errors(void)
{
	subtests(access_tests, sizeof(access_tests) / sizeof(access_tests[0]));
}

void invalid_requests(void)
{
	subtests(invalid_tests, sizeof(invalid_tests) / sizeof(invalid_tests[0]));
}
