/*
 * rdma_check: byte checks and error paths between two RoCE devices, for
 * the kernel-interoperability VM test (crates/migros-interop, scripts/vm/).
 * The same binary runs on both sides: linked against libibverbs, it uses
 * Debian's rdma-core on the kernel's SoftRoCE and migros' drop-in
 * libibverbs.so.1 (LD_LIBRARY_PATH) on a migros device.
 *
 *   rdma_check -d DEV -g GID_INDEX -p PORT [-m MTU] [-u TIMEOUT] [-n ROUNDS]
 *              SCENARIO [SERVER_ADDR]
 *
 * Without SERVER_ADDR it is the server: it holds the memory and receives;
 * the client connects over TCP (PORT) to exchange QP numbers, PSNs, GIDs,
 * addresses and rkeys, then acts. Scenarios:
 *
 *   bytes    RDMA WRITE (also with immediate), READ of sizes around the
 *            path MTU (READ responses only, first/middle/last), fetch-and-add
 *            and compare-and-swap against the server's memory, PSNs starting
 *            just before the 24-bit wrap; the client checks what it read and
 *            every atomic's original value, the server every byte written,
 *            the immediate and the atomics' final values (exactly once).
 *   rnr      a SEND (one packet) with no receive posted: RNR NAKs until the
 *            server posts one 300 ms later (rnr_retry 7), then with
 *            rnr_retry 0: the client's WR fails with RNR_RETRY_EXC_ERR.
 *   access   remote access errors, each on a fresh QP pair: a bad rkey, an
 *            MR without REMOTE_WRITE / REMOTE_READ / REMOTE_ATOMIC, a READ
 *            past the MR's end. The client's WR completes with
 *            REM_ACCESS_ERR and the server's QP goes to ERR.
 *   invalid  invalid requests: a WRITE, a READ and an atomic to a QP whose
 *            access flags lack REMOTE_WRITE / REMOTE_READ / REMOTE_ATOMIC
 *            (the client's WR completes with REM_INV_REQ_ERR), and a SEND
 *            longer than the receive buffer (REM_OP_ERR, and the server's
 *            receive LOC_QP_OP_ERR: rxe 6.1 takes it for a malformed WQE
 *            where the specification says REM_INV_REQ_ERR and
 *            LOC_LEN_ERR); the server's QP goes to ERR. (A misaligned
 *            atomic cannot be sent: both libraries refuse to post it.)
 *   ud       UD datagrams with the right Q_Key, a wrong one (dropped) and
 *            0x80000000 (migros sends its QP's Q_Key instead, as the
 *            specification says; rxe 6.1 sends 0x80000000 as it is, so the
 *            receiver drops it: the test's counters tell); every
 *            receive's GRH area is checked (20 zero bytes,
 *            then the IPv4 header: version, length, DF, protocol, addresses,
 *            header checksum) and the server answers through
 *            ibv_create_ah_from_wc.
 *
 * Prints "result: pass ..." or "result: FAIL ..." as its last line and exits
 * 0 only when every check passed, on its side and on the peer's (each side
 * reports to the other over TCP).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <infiniband/verbs.h>

#define PORT_NUM 1
#define MEM_SIZE (1u << 20)
#define READ_AREA 0u
#define WRITE_AREA (512u << 10)
#define ATOMIC_AREA (MEM_SIZE - 4096u)
#define COUNTER_START 0x1000ull
#define CAS_START 7ull
#define N_FETCH_ADD 64
#define N_CAS 16
#define START_PSN 0xffff80u /* wraps after 128 packets */
#define QKEY 0x11111111u
#define WAIT_MS 20000

static const uint32_t sizes[] = {1, 3, 255, 1023, 1024, 1025, 4096, 4097, 12289, 65536, 200000};
#define N_SIZES (sizeof(sizes) / sizeof(sizes[0]))

static struct {
	const char *dev;
	int gidx, tcp_port, timeout, rounds;
	enum ibv_mtu mtu;
	const char *scenario, *server;
} opt = {.gidx = 0, .tcp_port = 19875, .timeout = 18, .rounds = 1, .mtu = IBV_MTU_1024};

static int failures;

static void check(int ok, const char *fmt, ...)
{
	va_list ap;
	if (ok)
		return;
	failures++;
	va_start(ap, fmt);
	printf("check failed: ");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	fflush(stdout);
}

static void die(const char *what)
{
	printf("result: FAIL %s: %s\n", what, strerror(errno));
	exit(2);
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- TCP ---- */

static int tcp;

static void tcp_setup(void)
{
	int one = 1;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(opt.tcp_port)};
	if (opt.server) {
		if (inet_pton(AF_INET, opt.server, &sa.sin_addr) != 1)
			die("server address");
		for (int i = 0; i < 200; i++) {
			tcp = socket(AF_INET, SOCK_STREAM, 0);
			if (connect(tcp, (struct sockaddr *)&sa, sizeof(sa)) == 0)
				return;
			close(tcp);
			usleep(50000);
		}
		die("connect");
	}
	int l = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 1))
		die("listen");
	tcp = accept(l, NULL, NULL);
	if (tcp < 0)
		die("accept");
	close(l);
}

static void tcp_write(const void *p, size_t n)
{
	if (write(tcp, p, n) != (ssize_t)n)
		die("tcp write");
}

static void tcp_read(void *p, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(tcp, (char *)p + got, n - got);
		if (r <= 0) {
			errno = r == 0 ? ECONNRESET : errno;
			die("tcp read");
		}
		got += r;
	}
}

static uint32_t tcp_word(uint32_t mine)
{
	uint32_t theirs;
	tcp_write(&mine, sizeof(mine));
	tcp_read(&theirs, sizeof(theirs));
	return theirs;
}

/* ---- device ---- */

struct peer {
	uint32_t qpn, psn, rkey, pad;
	uint64_t addr;
	union ibv_gid gid;
};

static struct ibv_context *ctx;
static struct ibv_pd *pd;
static struct ibv_cq *cq;
static union ibv_gid my_gid;

static void open_device(void)
{
	int n;
	struct ibv_device **list = ibv_get_device_list(&n);
	if (!list)
		die("ibv_get_device_list");
	for (int i = 0; i < n; i++)
		if (!strcmp(ibv_get_device_name(list[i]), opt.dev))
			ctx = ibv_open_device(list[i]);
	ibv_free_device_list(list);
	if (!ctx)
		die("ibv_open_device");
	if (ibv_query_gid(ctx, PORT_NUM, opt.gidx, &my_gid))
		die("ibv_query_gid");
	pd = ibv_alloc_pd(ctx);
	cq = ibv_create_cq(ctx, 512, NULL, NULL, 0);
	if (!pd || !cq)
		die("pd/cq");
}

static struct ibv_qp *create_qp(enum ibv_qp_type type)
{
	struct ibv_qp_init_attr a = {
		.send_cq = cq,
		.recv_cq = cq,
		.cap = {.max_send_wr = 256, .max_recv_wr = 64, .max_send_sge = 1, .max_recv_sge = 1},
		.qp_type = type,
		.sq_sig_all = 1,
	};
	struct ibv_qp *qp = ibv_create_qp(pd, &a);
	if (!qp)
		die("ibv_create_qp");
	return qp;
}

static const int ALL_REMOTE = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
			      IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;

/* RESET -> INIT -> RTR -> RTS for an RC QP. */
static void connect_rc_access(struct ibv_qp *qp, const struct peer *remote, uint32_t my_psn,
			      int rnr_retry, int min_rnr_timer, int qp_access)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_INIT,
		.pkey_index = 0,
		.port_num = PORT_NUM,
		.qp_access_flags = qp_access,
	};
	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS))
		die("modify INIT");
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = opt.mtu;
	a.dest_qp_num = remote->qpn;
	a.rq_psn = remote->psn;
	a.max_dest_rd_atomic = 16;
	a.min_rnr_timer = min_rnr_timer;
	a.ah_attr.is_global = 1;
	a.ah_attr.grh.dgid = remote->gid;
	a.ah_attr.grh.sgid_index = opt.gidx;
	a.ah_attr.grh.hop_limit = 64;
	a.ah_attr.port_num = PORT_NUM;
	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
				  IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER))
		die("modify RTR");
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTS;
	a.timeout = opt.timeout;
	a.retry_cnt = 7;
	a.rnr_retry = rnr_retry;
	a.sq_psn = my_psn;
	a.max_rd_atomic = 16;
	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
				  IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC))
		die("modify RTS");
}

/* connect_rc_access with every remote right on the QP. */
static void connect_rc(struct ibv_qp *qp, const struct peer *remote, uint32_t my_psn,
		       int rnr_retry, int min_rnr_timer)
{
	connect_rc_access(qp, remote, my_psn, rnr_retry, min_rnr_timer, ALL_REMOTE);
}

static struct peer exchange(struct ibv_qp *qp, uint32_t psn, struct ibv_mr *mr)
{
	struct peer me = {.qpn = qp->qp_num, .psn = psn, .gid = my_gid}, them;
	if (mr) {
		me.rkey = mr->rkey;
		me.addr = (uintptr_t)mr->addr;
	}
	tcp_write(&me, sizeof(me));
	tcp_read(&them, sizeof(them));
	printf("qp local %#x remote %#x\n", me.qpn, them.qpn);
	return them;
}

/* Waits for one completion; returns 0 and fills *wc, or -1 after WAIT_MS. */
static int wait_wc(struct ibv_wc *wc, int ms)
{
	double end = now_ms() + ms;
	while (now_ms() < end) {
		int n = ibv_poll_cq(cq, 1, wc);
		if (n < 0)
			die("ibv_poll_cq");
		if (n == 1)
			return 0;
	}
	return -1;
}

/* Waits for `n` successful completions; counts anything else as a failure. */
static void wait_ok(int n, const char *what)
{
	struct ibv_wc wc;
	for (int i = 0; i < n; i++) {
		if (wait_wc(&wc, WAIT_MS)) {
			check(0, "%s: %d of %d completions", what, i, n);
			return;
		}
		check(wc.status == IBV_WC_SUCCESS, "%s: wr %" PRIu64 " %s", what, wc.wr_id,
		      ibv_wc_status_str(wc.status));
	}
}

static void post_send(struct ibv_qp *qp, struct ibv_send_wr *wr)
{
	struct ibv_send_wr *bad;
	if (ibv_post_send(qp, wr, &bad))
		die("ibv_post_send");
}

static void post_recv(struct ibv_qp *qp, struct ibv_mr *mr, uint64_t off, uint32_t len,
		      uint64_t id)
{
	struct ibv_sge sge = {.addr = (uintptr_t)mr->addr + off, .length = len, .lkey = mr->lkey};
	struct ibv_recv_wr wr = {.wr_id = id, .sg_list = &sge, .num_sge = 1}, *bad;
	if (ibv_post_recv(qp, &wr, &bad))
		die("ibv_post_recv");
}

static struct ibv_mr *reg(void *buf, size_t len, int access)
{
	struct ibv_mr *mr = ibv_reg_mr(pd, buf, len, access);
	if (!mr)
		die("ibv_reg_mr");
	return mr;
}

static enum ibv_qp_state qp_state(struct ibv_qp *qp)
{
	struct ibv_qp_attr a;
	struct ibv_qp_init_attr ia;
	if (ibv_query_qp(qp, &a, IBV_QP_STATE, &ia))
		die("ibv_query_qp");
	return a.qp_state;
}

/* Polls the QP's state until it is `want` or `ms` passed. */
static enum ibv_qp_state wait_state(struct ibv_qp *qp, enum ibv_qp_state want, int ms)
{
	double end = now_ms() + ms;
	enum ibv_qp_state s;
	while ((s = qp_state(qp)) != want && now_ms() < end)
		usleep(10000);
	return s;
}

static const char *state_name(enum ibv_qp_state s)
{
	static const char *names[] = {"RESET", "INIT", "RTR", "RTS", "SQD", "SQE", "ERR"};
	return s <= IBV_QPS_ERR ? names[s] : "?";
}

static uint8_t pattern(uint32_t seed, uint64_t i)
{
	uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
	return (uint8_t)(x >> 29);
}

static void fill(uint8_t *p, uint32_t seed, uint64_t off, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++)
		p[i] = pattern(seed, off + i);
}

static long mismatch(const uint8_t *p, uint32_t seed, uint64_t off, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++)
		if (p[i] != pattern(seed, off + i))
			return i;
	return -1;
}

/* ---- bytes ---- */

static void bytes(void)
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

static void rnr(void)
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

/* ---- ud ---- */

static uint16_t ip_checksum(const uint8_t *h)
{
	uint32_t sum = 0;
	for (int i = 0; i < 20; i += 2)
		sum += (h[i] << 8) | h[i + 1];
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* Checks the 40-byte GRH area of a UD receive of `payload` bytes from `src` to
 * `dst` (IPv4-mapped GIDs). */
static void check_grh(const uint8_t *grh, uint32_t payload, const union ibv_gid *src,
		      const union ibv_gid *dst, const char *what)
{
	static const uint8_t zero[20];
	const uint8_t *h = grh + 20;
	uint16_t total = (h[2] << 8) | h[3];
	/* IPv4, UDP, BTH, DETH, ImmDt (every datagram here carries one),
	 * payload and pad to 4 bytes, ICRC. */
	uint16_t want = 20 + 8 + 12 + 8 + 4 + ((payload + 3) & ~3u) + 4;
	check(!memcmp(grh, zero, 20), "%s: GRH bytes 0..20 not zero", what);
	check(h[0] == 0x45, "%s: IPv4 version/IHL %#x", what, h[0]);
	check(total == want, "%s: IPv4 total length %u, expected %u", what, total, want);
	check((h[6] & 0xe0) == 0x40 && (h[6] & 0x1f) == 0 && h[7] == 0,
	      "%s: IPv4 flags/fragment %02x%02x, expected DF", what, h[6], h[7]);
	check(h[8] != 0, "%s: TTL 0", what);
	check(h[9] == 17, "%s: protocol %u", what, h[9]);
	check(!memcmp(h + 12, src->raw + 12, 4), "%s: source address", what);
	check(!memcmp(h + 16, dst->raw + 12, 4), "%s: destination address", what);
	check(ip_checksum(h) == 0, "%s: IPv4 header checksum %02x%02x does not verify", what, h[10],
	      h[11]);
}

static void ud(void)
{
	enum { SLOT = 4096, N_RECV = 32 };
	uint8_t *mem = aligned_alloc(4096, SLOT * (N_RECV + 2));
	memset(mem, 0, SLOT * (N_RECV + 2));
	struct ibv_mr *mr = reg(mem, SLOT * (N_RECV + 2), IBV_ACCESS_LOCAL_WRITE);
	struct ibv_qp *qp = create_qp(IBV_QPT_UD);
	struct ibv_qp_attr a = {.qp_state = IBV_QPS_INIT, .pkey_index = 0, .port_num = PORT_NUM,
				.qkey = QKEY};
	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY))
		die("modify INIT");
	a = (struct ibv_qp_attr){.qp_state = IBV_QPS_RTR};
	if (ibv_modify_qp(qp, &a, IBV_QP_STATE))
		die("modify RTR");
	a = (struct ibv_qp_attr){.qp_state = IBV_QPS_RTS, .sq_psn = 0};
	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN))
		die("modify RTS");
	for (int i = 0; i < N_RECV; i++)
		post_recv(qp, mr, (uint64_t)SLOT * i, SLOT, i);
	struct peer remote = exchange(qp, 0, NULL);
	uint8_t *out = mem + SLOT * N_RECV;
	/* seq: its Q_Key (0 = the right one), payload size */
	static const struct { uint32_t qkey; uint32_t len; } sends[] = {
		{QKEY, 64}, {0x22222222u, 64}, {QKEY, 0}, {QKEY, 1}, {QKEY, 1000}, {0x80000000u, 64},
		{QKEY, 2048},
	};
	enum { N_SENDS = sizeof(sends) / sizeof(sends[0]) };
	tcp_word(0);
	if (opt.server) {
		struct ibv_ah_attr aa = {.is_global = 1, .port_num = PORT_NUM};
		aa.grh.dgid = remote.gid;
		aa.grh.sgid_index = opt.gidx;
		aa.grh.hop_limit = 64;
		struct ibv_ah *ah = ibv_create_ah(pd, &aa);
		if (!ah)
			die("ibv_create_ah");
		for (int i = 0; i < N_SENDS; i++) {
			uint32_t len = sends[i].len;
			fill(out, 0x1000 + i, 0, len);
			if (len >= 1)
				out[0] = (uint8_t)i;
			struct ibv_sge sge = {(uintptr_t)out, len, mr->lkey};
			struct ibv_send_wr wr = {.wr_id = i, .sg_list = &sge, .num_sge = len ? 1 : 0,
						 .opcode = IBV_WR_SEND_WITH_IMM, .imm_data = htonl(i)};
			wr.wr.ud.ah = ah;
			wr.wr.ud.remote_qpn = remote.qpn;
			wr.wr.ud.remote_qkey = sends[i].qkey;
			post_send(qp, &wr);
			wait_ok(1, "UD send");
			usleep(20000);
		}
	}
	tcp_word(0); /* the client sent everything */
	if (!opt.server) {
		int seen[N_SENDS] = {0};
		struct ibv_wc wc, last = {0};
		double end = now_ms() + 1000;
		while (now_ms() < end) {
			if (ibv_poll_cq(cq, 1, &wc) != 1)
				continue;
			int seq = ntohl(wc.imm_data);
			char what[64];
			snprintf(what, sizeof(what), "datagram %d", seq);
			if (wc.status != IBV_WC_SUCCESS || seq < 0 || seq >= N_SENDS) {
				check(0, "UD receive: %s, imm %d", ibv_wc_status_str(wc.status), seq);
				continue;
			}
			seen[seq]++;
			uint8_t *buf = mem + (uint64_t)SLOT * wc.wr_id;
			uint32_t len = sends[seq].len;
			check(wc.byte_len == 40 + len, "%s: byte_len %u", what, wc.byte_len);
			check(wc.wc_flags & IBV_WC_GRH, "%s: no IBV_WC_GRH", what);
			check(wc.src_qp == remote.qpn, "%s: src_qp %#x", what, wc.src_qp);
			check_grh(buf, len, &remote.gid, &my_gid, what);
			if (len > 1)
				check(mismatch(buf + 41, 0x1000 + seq, 1, len - 1) < 0, "%s: bytes differ",
				      what);
			const uint8_t *h = buf + 20;
			printf("datagram %d (%u bytes): IPv4 id %u tos %#x ttl %u\n", seq, len,
			       (h[4] << 8) | h[5], h[1], h[8]);
			last = wc;
		}
		for (int i = 0; i < N_SENDS; i++) {
			int want = sends[i].qkey == QKEY;
			if (sends[i].qkey == 0x80000000u) {
				/* The sending QP's Q_Key by the specification (migros
				 * sends that); rxe 6.1 sends 0x80000000 as it is. */
				check(seen[i] <= 1, "datagram %d received %d times", i, seen[i]);
				printf("Q_Key 0x80000000: %s\n", seen[i] ? "delivered" : "dropped");
				continue;
			}
			check(seen[i] == want, "datagram %d (Q_Key %#x): received %d times, expected %d", i,
			      sends[i].qkey, seen[i], want);
		}
		/* Answer the last datagram through an AH made from its GRH. */
		if (last.byte_len) {
			uint8_t *buf = mem + (uint64_t)SLOT * last.wr_id;
			struct ibv_ah *ah = ibv_create_ah_from_wc(pd, &last, (struct ibv_grh *)buf, PORT_NUM);
			check(ah != NULL, "ibv_create_ah_from_wc: %s", strerror(errno));
			if (ah) {
				fill(out, 0x2000, 0, 500);
				struct ibv_sge sge = {(uintptr_t)out, 500, mr->lkey};
				struct ibv_send_wr wr = {.wr_id = 99, .sg_list = &sge, .num_sge = 1,
							 .opcode = IBV_WR_SEND_WITH_IMM, .imm_data = htonl(99)};
				wr.wr.ud.ah = ah;
				wr.wr.ud.remote_qpn = last.src_qp;
				wr.wr.ud.remote_qkey = QKEY;
				post_send(qp, &wr);
				wait_ok(1, "UD reply");
			}
		}
	} else {
		struct ibv_wc wc;
		int got = !wait_wc(&wc, 5000);
		check(got && wc.status == IBV_WC_SUCCESS && ntohl(wc.imm_data) == 99,
		      "the reply through ibv_create_ah_from_wc: %s",
		      got ? ibv_wc_status_str(wc.status) : "never arrived");
		if (got && wc.status == IBV_WC_SUCCESS) {
			uint8_t *buf = mem + (uint64_t)SLOT * wc.wr_id;
			check(wc.byte_len == 540, "reply: byte_len %u", wc.byte_len);
			check_grh(buf, 500, &remote.gid, &my_gid, "reply");
			check(mismatch(buf + 40, 0x2000, 0, 500) < 0, "reply: bytes differ");
			const uint8_t *h = buf + 20;
			printf("reply (500 bytes): IPv4 id %u tos %#x ttl %u\n", (h[4] << 8) | h[5], h[1],
			       h[8]);
		}
	}
	failures += tcp_word(failures);
}

int main(int argc, char **argv)
{
	int c;
	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((c = getopt(argc, argv, "d:g:p:m:u:n:")) != -1) {
		switch (c) {
		case 'd': opt.dev = optarg; break;
		case 'g': opt.gidx = atoi(optarg); break;
		case 'p': opt.tcp_port = atoi(optarg); break;
		case 'm':
			switch (atoi(optarg)) {
			case 256: opt.mtu = IBV_MTU_256; break;
			case 512: opt.mtu = IBV_MTU_512; break;
			case 1024: opt.mtu = IBV_MTU_1024; break;
			case 2048: opt.mtu = IBV_MTU_2048; break;
			case 4096: opt.mtu = IBV_MTU_4096; break;
			default: fprintf(stderr, "bad MTU\n"); return 2;
			}
			break;
		case 'u': opt.timeout = atoi(optarg); break;
		case 'n': opt.rounds = atoi(optarg); break;
		default: goto usage;
		}
	}
	if (!opt.dev || optind >= argc || argc - optind > 2 || opt.rounds < 1)
		goto usage;
	opt.scenario = argv[optind];
	/* The server's address names the client (as with ibv_rc_pingpong). */
	opt.server = optind + 1 < argc ? argv[optind + 1] : NULL;
	open_device();
	tcp_setup();
	if (!strcmp(opt.scenario, "bytes"))
		bytes();
	else if (!strcmp(opt.scenario, "rnr"))
		rnr();
	else if (!strcmp(opt.scenario, "access"))
		subtests(access_tests, sizeof(access_tests) / sizeof(access_tests[0]));
	else if (!strcmp(opt.scenario, "invalid"))
		subtests(invalid_tests, sizeof(invalid_tests) / sizeof(invalid_tests[0]));
	else if (!strcmp(opt.scenario, "ud"))
		ud();
	else
		goto usage;
	printf("result: %s %s %s failures %d\n", failures ? "FAIL" : "pass", opt.scenario,
	       opt.server ? "client" : "server", failures);
	return failures ? 1 : 0;
usage:
	fprintf(stderr, "usage: %s -d DEV [-g GID_INDEX] [-p PORT] [-m MTU] [-u TIMEOUT] [-n ROUNDS] "
			"bytes|rnr|access|invalid|ud [SERVER_ADDR]\n",
		argv[0]);
	return 2;
}
