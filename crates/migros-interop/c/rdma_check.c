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
 *
 * This file holds the options, the TCP exchange, the verbs helpers and
 * main; the scenarios are in rdma_check_rc.c and rdma_check_ud.c (built
 * together: scripts/vm/run.sh compiles every .c file here).
 */
#include "rdma_check.h"

struct options opt = {.gidx = 0, .tcp_port = 19875, .timeout = 18, .rounds = 1, .mtu = IBV_MTU_1024};

int failures;

void check(int ok, const char *fmt, ...)
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

void die(const char *what)
{
	printf("result: FAIL %s: %s\n", what, strerror(errno));
	exit(2);
}

double now_ms(void)
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

uint32_t tcp_word(uint32_t mine)
{
	uint32_t theirs;
	tcp_write(&mine, sizeof(mine));
	tcp_read(&theirs, sizeof(theirs));
	return theirs;
}

/* ---- device ---- */

static struct ibv_context *ctx;
struct ibv_pd *pd;
struct ibv_cq *cq;
union ibv_gid my_gid;

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

struct ibv_qp *create_qp(enum ibv_qp_type type)
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

/* RESET -> INIT -> RTR -> RTS for an RC QP. */
void connect_rc_access(struct ibv_qp *qp, const struct peer *remote, uint32_t my_psn,
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
void connect_rc(struct ibv_qp *qp, const struct peer *remote, uint32_t my_psn,
		int rnr_retry, int min_rnr_timer)
{
	connect_rc_access(qp, remote, my_psn, rnr_retry, min_rnr_timer, ALL_REMOTE);
}

struct peer exchange(struct ibv_qp *qp, uint32_t psn, struct ibv_mr *mr)
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
int wait_wc(struct ibv_wc *wc, int ms)
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
void wait_ok(int n, const char *what)
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

void post_send(struct ibv_qp *qp, struct ibv_send_wr *wr)
{
	struct ibv_send_wr *bad;
	if (ibv_post_send(qp, wr, &bad))
		die("ibv_post_send");
}

void post_recv(struct ibv_qp *qp, struct ibv_mr *mr, uint64_t off, uint32_t len,
	       uint64_t id)
{
	struct ibv_sge sge = {.addr = (uintptr_t)mr->addr + off, .length = len, .lkey = mr->lkey};
	struct ibv_recv_wr wr = {.wr_id = id, .sg_list = &sge, .num_sge = 1}, *bad;
	if (ibv_post_recv(qp, &wr, &bad))
		die("ibv_post_recv");
}

struct ibv_mr *reg(void *buf, size_t len, int access)
{
	struct ibv_mr *mr = ibv_reg_mr(pd, buf, len, access);
	if (!mr)
		die("ibv_reg_mr");
	return mr;
}

enum ibv_qp_state qp_state(struct ibv_qp *qp)
{
	struct ibv_qp_attr a;
	struct ibv_qp_init_attr ia;
	if (ibv_query_qp(qp, &a, IBV_QP_STATE, &ia))
		die("ibv_query_qp");
	return a.qp_state;
}

/* Polls the QP's state until it is `want` or `ms` passed. */
enum ibv_qp_state wait_state(struct ibv_qp *qp, enum ibv_qp_state want, int ms)
{
	double end = now_ms() + ms;
	enum ibv_qp_state s;
	while ((s = qp_state(qp)) != want && now_ms() < end)
		usleep(10000);
	return s;
}

const char *state_name(enum ibv_qp_state s)
{
	static const char *names[] = {"RESET", "INIT", "RTR", "RTS", "SQD", "SQE", "ERR"};
	return s <= IBV_QPS_ERR ? names[s] : "?";
}

static uint8_t pattern(uint32_t seed, uint64_t i)
{
	uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
	return (uint8_t)(x >> 29);
}

void fill(uint8_t *p, uint32_t seed, uint64_t off, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++)
		p[i] = pattern(seed, off + i);
}

long mismatch(const uint8_t *p, uint32_t seed, uint64_t off, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++)
		if (p[i] != pattern(seed, off + i))
			return i;
	return -1;
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
		access_errors();
	else if (!strcmp(opt.scenario, "invalid"))
		invalid_requests();
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
