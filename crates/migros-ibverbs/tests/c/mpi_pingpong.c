/* Two MPI ranks: a ping-pong at 8 bytes and 64 KiB whose replies are
 * checked, then 100 allreduces of rank+1. Rank 0 prints one line per size
 * and the sum. Built by tests/mpi.rs with mpicc. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank, size; MPI_Comm_rank(MPI_COMM_WORLD, &rank); MPI_Comm_size(MPI_COMM_WORLD, &size);
  int sizes[2] = {8, 65536};
  char *buf = malloc(65536);
  for (int s = 0; s < 2; s++) {
    int n = sizes[s] == 8 ? 1000 : 200, bad = 0;
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int i = 0; i < n; i++) {
      if (rank == 0) {
        memset(buf, i & 0xff, sizes[s]);
        MPI_Send(buf, sizes[s], MPI_CHAR, 1, 0, MPI_COMM_WORLD);
        MPI_Recv(buf, sizes[s], MPI_CHAR, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if ((unsigned char)buf[sizes[s]-1] != (unsigned char)((i + 1) & 0xff)) bad++;
      } else {
        MPI_Recv(buf, sizes[s], MPI_CHAR, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        memset(buf, (i + 1) & 0xff, sizes[s]);
        MPI_Send(buf, sizes[s], MPI_CHAR, 0, 0, MPI_COMM_WORLD);
      }
    }
    double dt = MPI_Wtime() - t0;
    if (rank == 0)
      printf("pingpong bytes=%d iters=%d half_rtt_us=%.2f bw_MBps=%.2f bad=%d\n", sizes[s], n,
             dt / n / 2 * 1e6, 2.0 * n * sizes[s] / dt / 1e6, bad);
  }
  long local = rank + 1, sum = 0;
  for (int i = 0; i < 100; i++) MPI_Allreduce(&local, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) printf("allreduce sum=%ld expected=%d\n", sum, size * (size + 1) / 2);
  MPI_Finalize();
  return 0;
}
