// Steering RoCE v2 datagrams to the process that owns their destination
// QPN (issue 17, ARCHITECTURE.md "Data path in the application's threads"):
// three UDP sockets share <addr>:4791 through SO_REUSEPORT (socket 0 stands
// for the daemon, 1 and 2 for two processes), and an sk_reuseport eBPF
// program reads the BTH's destination QPN and selects the socket from a
// map the daemon would own: a SOCKHASH keyed by QPN (default), or with
// `array` a hash map QPN -> index plus a REUSEPORT_SOCKARRAY. A QPN without
// an entry, or a datagram too short for a BTH, goes to socket 0. Checks
// each case 100 times (a hash fallback would be right one time in three),
// an entry deleted (eviction), and times send+receive through the group
// against a plain socket. Needs root (CAP_BPF). The program is written as
// instructions here: no clang or libbpf on the machines.
//   gcc -O2 -o steer steer.c && ./steer 127.0.0.89 [array]
#include <arpa/inet.h>
#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_ATTACH_REUSEPORT_EBPF
#define SO_ATTACH_REUSEPORT_EBPF 52
#endif

#define INSN(c, d, s, o, i) ((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i)})
#define MOV64_REG(d, s) INSN(BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0)
#define MOV64_IMM(d, i) INSN(BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, i)
#define ADD64_IMM(d, i) INSN(BPF_ALU64 | BPF_ADD | BPF_K, d, 0, 0, i)
#define AND64_IMM(d, i) INSN(BPF_ALU64 | BPF_AND | BPF_K, d, 0, 0, i)
#define BSWAP32(d) INSN(BPF_ALU | BPF_END | BPF_TO_BE, d, 0, 0, 32)
#define LDX_W(d, s, o) INSN(BPF_LDX | BPF_MEM | BPF_W, d, s, o, 0)
#define STX_W(d, s, o) INSN(BPF_STX | BPF_MEM | BPF_W, d, s, o, 0)
#define ST_W(d, o, i) INSN(BPF_ST | BPF_MEM | BPF_W, d, 0, o, i)
#define CALL(f) INSN(BPF_JMP | BPF_CALL, 0, 0, 0, f)
#define JNE_IMM(d, i, o) INSN(BPF_JMP | BPF_JNE | BPF_K, d, 0, o, i)
#define JEQ_IMM(d, i, o) INSN(BPF_JMP | BPF_JEQ | BPF_K, d, 0, o, i)
#define LD_MAP(d, fd) INSN(BPF_LD | BPF_DW | BPF_IMM, d, BPF_PSEUDO_MAP_FD, 0, fd), INSN(0, 0, 0, 0, 0)
#define EXIT() INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)

static long bpf(int cmd, union bpf_attr *a) { return syscall(__NR_bpf, cmd, a, sizeof *a); }

static int sock_in_group(const char *ip) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0), on = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(4791)};
  inet_pton(AF_INET, ip, &a.sin_addr);
  if (bind(s, (void *)&a, sizeof a)) { perror("bind"); exit(1); }
  return s;
}

static void put_qpn(unsigned char *d, uint32_t qpn) {
  memset(d, 0, 64);
  d[0] = 0x04; d[2] = 0xff; d[3] = 0xff;  // BTH: RC SEND_ONLY, default P_Key
  d[5] = qpn >> 16; d[6] = qpn >> 8; d[7] = qpn;
}

// Sends one datagram for `qpn` and says which of the three sockets got it.
static int steer_one(int tx, struct sockaddr_in *to, int *s, uint32_t qpn, int len) {
  unsigned char d[64];
  put_qpn(d, qpn);
  sendto(tx, d, len, 0, (void *)to, sizeof *to);
  int got = -1;
  for (int i = 0; i < 3; i++) {
    char b[64];
    while (recv(s[i], b, sizeof b, MSG_DONTWAIT) >= 0) got = (got == -1) ? i : 9;
  }
  return got;
}

static double now_ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }

static double per_datagram(int tx, struct sockaddr_in *to, int rx, uint32_t qpn) {
  unsigned char d[64], b[64];
  put_qpn(d, qpn);
  int n = 200000;
  double t = now_ns();
  for (int i = 0; i < n; i++) {
    sendto(tx, d, 64, 0, (void *)to, sizeof *to);
    while (recv(rx, b, sizeof b, MSG_DONTWAIT) < 0) {}
  }
  return (now_ns() - t) / n;
}

int main(int argc, char **argv) {
  const char *ip = argc > 1 ? argv[1] : "127.0.0.89";
  int array = argc > 2 && !strcmp(argv[2], "array");
  union bpf_attr m = {.map_type = BPF_MAP_TYPE_SOCKHASH, .key_size = 4, .value_size = 8, .max_entries = 1024};
  if (array) {  // sockets by index; QPN -> index in a hash map
    m.map_type = BPF_MAP_TYPE_REUSEPORT_SOCKARRAY;
    m.max_entries = 16;
  }
  int map = bpf(BPF_MAP_CREATE, &m);
  if (map < 0) { perror("map create"); return 1; }
  union bpf_attr hm = {.map_type = BPF_MAP_TYPE_HASH, .key_size = 4, .value_size = 4, .max_entries = 1024};
  int hash = bpf(BPF_MAP_CREATE, &hm);
  if (hash < 0) { perror("hash create"); return 1; }
  struct bpf_insn prog_array[] = {
      MOV64_REG(6, 1),
      MOV64_IMM(2, 12), MOV64_REG(3, 10), ADD64_IMM(3, -4), MOV64_IMM(4, 4), CALL(BPF_FUNC_skb_load_bytes),
      JNE_IMM(0, 0, 20),
      LDX_W(1, 10, -4), BSWAP32(1), AND64_IMM(1, 0xffffff), STX_W(10, 1, -8),
      LD_MAP(1, hash), MOV64_REG(2, 10), ADD64_IMM(2, -8), CALL(BPF_FUNC_map_lookup_elem),
      JEQ_IMM(0, 0, 10),
      LDX_W(1, 0, 0), STX_W(10, 1, -12),
      MOV64_REG(1, 6), LD_MAP(2, map), MOV64_REG(3, 10), ADD64_IMM(3, -12), MOV64_IMM(4, 0),
      CALL(BPF_FUNC_sk_select_reuseport),
      JEQ_IMM(0, 0, 8),
      ST_W(10, -12, 0), MOV64_REG(1, 6), LD_MAP(2, map), MOV64_REG(3, 10), ADD64_IMM(3, -12), MOV64_IMM(4, 0),
      CALL(BPF_FUNC_sk_select_reuseport),
      MOV64_IMM(0, SK_PASS), EXIT(),
  };
  struct bpf_insn prog[] = {
      MOV64_REG(6, 1),
      // bpf_skb_load_bytes(ctx, 8 + 4, fp - 4, 4): BTH bytes 4..8 after the UDP header
      MOV64_IMM(2, 12), MOV64_REG(3, 10), ADD64_IMM(3, -4), MOV64_IMM(4, 4), CALL(BPF_FUNC_skb_load_bytes),
      JNE_IMM(0, 0, 12),  // too short: to the default
      LDX_W(1, 10, -4), BSWAP32(1), AND64_IMM(1, 0xffffff), STX_W(10, 1, -8),
      MOV64_REG(1, 6), LD_MAP(2, map), MOV64_REG(3, 10), ADD64_IMM(3, -8), MOV64_IMM(4, 0),
      CALL(BPF_FUNC_sk_select_reuseport),
      JEQ_IMM(0, 0, 8),  // selected
      // default: key 0, the daemon's socket
      ST_W(10, -8, 0), MOV64_REG(1, 6), LD_MAP(2, map), MOV64_REG(3, 10), ADD64_IMM(3, -8), MOV64_IMM(4, 0),
      CALL(BPF_FUNC_sk_select_reuseport),
      MOV64_IMM(0, SK_PASS), EXIT(),
  };
  static char log[65536];
  union bpf_attr p = {.prog_type = BPF_PROG_TYPE_SK_REUSEPORT,
                      .expected_attach_type = BPF_SK_REUSEPORT_SELECT,
                      .insn_cnt = array ? sizeof prog_array / sizeof prog_array[0] : sizeof prog / sizeof prog[0],
                      .insns = (uint64_t)(uintptr_t)(array ? prog_array : prog),
                      .license = (uint64_t)(uintptr_t)"GPL",
                      .log_level = 1, .log_size = sizeof log, .log_buf = (uint64_t)(uintptr_t)log};
  int pfd = bpf(BPF_PROG_LOAD, &p);
  if (pfd < 0) { perror("prog load"); fprintf(stderr, "%s\n", log); return 1; }
  int s[3];
  uint32_t keys[3] = {0, 0x123456, 0xabcdef};  // 0: the daemon
  for (int i = 0; i < 3; i++) {
    s[i] = sock_in_group(ip);
    uint64_t fd = s[i];
    uint32_t idx = i;
    union bpf_attr u = {.map_fd = map, .key = (uint64_t)(uintptr_t)(array ? &idx : &keys[i]), .value = (uint64_t)(uintptr_t)&fd, .flags = BPF_ANY};
    if (bpf(BPF_MAP_UPDATE_ELEM, &u)) { perror("map update"); return 1; }
    union bpf_attr h = {.map_fd = hash, .key = (uint64_t)(uintptr_t)&keys[i], .value = (uint64_t)(uintptr_t)&idx, .flags = BPF_ANY};
    if (array && i > 0 && bpf(BPF_MAP_UPDATE_ELEM, &h)) { perror("hash update"); return 1; }
  }
  if (setsockopt(s[0], SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &pfd, sizeof pfd)) { perror("attach"); return 1; }
  int tx = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(4791)};
  inet_pton(AF_INET, ip, &to.sin_addr);
  struct { uint32_t qpn; int len; int want; } cases[] = {
      {0x123456, 40, 1}, {0xabcdef, 40, 2}, {0x777777, 40, 0}, {0x000001, 40, 0}, {0x123456, 3, 0},
      {0xabcdef, 40, 2}, {0x123456, 40, 1}};
  int bad = 0, n = sizeof cases / sizeof cases[0], rounds = 100;
  // Each case many times: with three sockets a hash fallback would be
  // right one time in three.
  for (int c = 0; c < n; c++) {
    int right = 0, last = -1;
    for (int r = 0; r < rounds; r++) {
      int got = steer_one(tx, &to, s, cases[c].qpn, cases[c].len);
      right += got == cases[c].want;
      last = got;
    }
    printf("qpn %#08x len %2d -> socket %d (want %d): %d of %d right\n", cases[c].qpn, cases[c].len, last, cases[c].want, right, rounds);
    bad += rounds - right;
  }
  // Eviction: without its entry a QPN falls back to the daemon's socket.
  union bpf_attr del = {.map_fd = array ? hash : map, .key = (uint64_t)(uintptr_t)&keys[1]};
  if (bpf(BPF_MAP_DELETE_ELEM, &del)) { perror("map delete"); return 1; }
  int after = steer_one(tx, &to, s, 0x123456, 40);
  printf("qpn 0x123456 after its entry was deleted -> socket %d (want 0)\n", after);
  bad += after != 0;
  // Cost: datagrams sent and received through the steered group against a
  // plain socket (one process, loopback delivers inside sendto).
  int plain = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  struct sockaddr_in pa = {.sin_family = AF_INET, .sin_port = htons(4792)};
  pa.sin_addr = to.sin_addr;
  if (bind(plain, (void *)&pa, sizeof pa)) { perror("bind plain"); return 1; }
  for (int k = 0; k < 2; k++) {
    double g = per_datagram(tx, &to, s[2], 0xabcdef), q = per_datagram(tx, &pa, plain, 0xabcdef);
    printf("send+receive per datagram: steered group %.0f ns, plain socket %.0f ns\n", g, q);
  }
  printf("%s (%s): %d datagrams steered wrong\n", bad ? "FAILED" : "ok", array ? "hash map + REUSEPORT_SOCKARRAY" : "SOCKHASH", bad);
  return bad != 0;
}
