/*
 * What the files of verbs_strict share (see verbs_strict.c): one end of a
 * connection, its set-up, posting and completion helpers, and the cases.
 */
#ifndef MIGROS_VERBS_STRICT_H
#define MIGROS_VERBS_STRICT_H

#include "common.h"

#define SIZE 65536

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

struct ibv_qp *make_qp(struct side *s, enum ibv_qp_type type);
void side_init(struct side *s, const char *name);
void to_rtr(struct ibv_qp *qp, struct side *remote, int dest_rd);
void to_rts(struct ibv_qp *qp);
void connect_pair(struct side *a, struct side *b, int access);
void pair(struct side *a, struct side *b, char **argv, int access);
struct ibv_wc wait_wc(struct ibv_cq *cq);
void expect_wc(struct ibv_cq *cq, uint64_t id, enum ibv_wc_status st,
	       enum ibv_wc_opcode op);
void no_wc(struct ibv_cq *cq);
struct ibv_send_wr send_wr(struct ibv_sge *sge, uint64_t id,
			   enum ibv_wr_opcode op);
int post1(struct ibv_qp *qp, struct ibv_send_wr *wr);
void post_recv(struct ibv_qp *qp, struct side *s, uint64_t id);
/* The next asynchronous event of ctx, acknowledged; fails after timeout_ms. */
struct ibv_async_event next_event(struct ibv_context *ctx, int timeout_ms);

void case_exports(char **argv);
void case_gid(char **argv);
void case_gid_port(char **argv);
void case_ah(char **argv);
void case_cq(char **argv);
void case_mr(char **argv);
void case_post_state(char **argv);
void case_bad_wr(char **argv);
void case_access_flags(char **argv);
void case_atomic_write(char **argv);
void case_srq_ex(char **argv);
void case_mw(char **argv);
void case_iova(char **argv);
void case_resize_cq(char **argv);
void case_srq(char **argv);
void case_events(char **argv);
void case_solicited(char **argv);
void case_queue_full(char **argv);
void case_wr_ex(char **argv);
void case_fatal(char **argv);

#endif
