/*
 * What the files of rdma_check share (see rdma_check.c): the options, the
 * failure count, the device, the TCP exchange with the peer and the verbs
 * helpers the scenarios use, and the scenarios.
 */
#ifndef RDMA_CHECK_H
#define RDMA_CHECK_H

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
#define QKEY 0x11111111u
#define WAIT_MS 20000

/* Every remote right (and LOCAL_WRITE), for MRs and QPs. */
#define ALL_REMOTE \
	(IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ | \
	 IBV_ACCESS_REMOTE_ATOMIC)

struct options {
	const char *dev;
	int gidx, tcp_port, timeout, rounds;
	enum ibv_mtu mtu;
	const char *scenario, *server;
};

extern struct options opt;
/* Checks failed, on this side and (once a scenario exchanged them) the peer's. */
extern int failures;

/* What the peer sends over TCP about its QP and memory. */
struct peer {
	uint32_t qpn, psn, rkey, pad;
	uint64_t addr;
	union ibv_gid gid;
};

extern struct ibv_pd *pd;
extern struct ibv_cq *cq;
extern union ibv_gid my_gid;

void check(int ok, const char *fmt, ...);
void die(const char *what);
double now_ms(void);
uint32_t tcp_word(uint32_t mine);
struct ibv_qp *create_qp(enum ibv_qp_type type);
void connect_rc_access(struct ibv_qp *qp, const struct peer *remote, uint32_t my_psn,
		       int rnr_retry, int min_rnr_timer, int qp_access);
void connect_rc(struct ibv_qp *qp, const struct peer *remote, uint32_t my_psn,
		int rnr_retry, int min_rnr_timer);
struct peer exchange(struct ibv_qp *qp, uint32_t psn, struct ibv_mr *mr);
int wait_wc(struct ibv_wc *wc, int ms);
void wait_ok(int n, const char *what);
void post_send(struct ibv_qp *qp, struct ibv_send_wr *wr);
void post_recv(struct ibv_qp *qp, struct ibv_mr *mr, uint64_t off, uint32_t len,
	       uint64_t id);
struct ibv_mr *reg(void *buf, size_t len, int access);
enum ibv_qp_state qp_state(struct ibv_qp *qp);
enum ibv_qp_state wait_state(struct ibv_qp *qp, enum ibv_qp_state want, int ms);
const char *state_name(enum ibv_qp_state s);
void fill(uint8_t *p, uint32_t seed, uint64_t off, uint32_t len);
long mismatch(const uint8_t *p, uint32_t seed, uint64_t off, uint32_t len);

/* The scenarios (rdma_check_rc.c, rdma_check_ud.c). */
void bytes(void);
void rnr(void);
void access_errors(void);
void invalid_requests(void);
void ud(void);

#endif
