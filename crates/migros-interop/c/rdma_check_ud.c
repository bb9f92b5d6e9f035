/* rdma_check's UD scenario: ud (see rdma_check.c). */
#include "rdma_check.h"

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

void ud(void)
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
