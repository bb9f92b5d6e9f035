/* An iterative MPI job for the migrated-rank test (containers/mpi.rs):
 * every iteration each rank fills a vector of N 64-bit integers from
 * (iteration, rank, index), the ranks allreduce it (sum), and each rank
 * checks every element of the result against the sum it computes itself;
 * the iteration's checksum (a hash of the whole result) is folded into a
 * running checksum, which rank 0 compares with the one it computes without
 * MPI at the end. Rank 0 stops when it sees the file argv[1] (the test
 * makes it after the migration) or after argv[2] iterations; the decision
 * travels in the allreduced vector's last element, so both ranks stop at
 * the same iteration. Rank 0 prints a progress line every 100 iterations
 * and at the end each iteration's duration summarized (median, max and
 * the wall-clock time the longest one started).
 * Usage: mpi_iter STOP_FILE MAX_ITERS. */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

enum { N = 4096 };

static int64_t value(long it, int rank, int j) { return (int64_t)(it * 7919 + rank * 104729 + j * 31); }

static uint64_t fold(uint64_t h, uint64_t v) { return (h ^ v) * 1099511628211ull; }

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: mpi_iter STOP_FILE MAX_ITERS\n");
    return 2;
  }
  long max = atol(argv[2]);
  if (max < 1) max = 1;
  MPI_Init(&argc, &argv);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int64_t *in = malloc((N + 1) * sizeof *in), *out = malloc((N + 1) * sizeof *out);
  double *dt = malloc(max * sizeof *dt), *start = malloc(max * sizeof *start);
  uint64_t sum = 14695981039346656037ull;
  long it, bad = 0;
  for (it = 0; it < max; it++) {
    for (int j = 0; j < N; j++) in[j] = value(it, rank, j);
    in[N] = rank == 0 && (it + 1 == max || access(argv[1], F_OK) == 0);
    start[it] = now_s();
    MPI_Allreduce(in, out, N + 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    dt[it] = now_s() - start[it];
    for (int j = 0; j < N; j++) {
      int64_t want = 0;
      for (int r = 0; r < size; r++) want += value(it, r, j);
      if (out[j] != want) bad++;
      sum = fold(sum, (uint64_t)out[j]);
    }
    if (rank == 0 && it % 100 == 0) {
      printf("iter %ld t=%.3f bad=%ld\n", it, start[it], bad);
      fflush(stdout);
    }
    if (out[N]) {
      it++;
      break;
    }
  }
  /* The checksum the job should have: the same sums without MPI. */
  uint64_t want = 14695981039346656037ull;
  for (long i = 0; i < it; i++)
    for (int j = 0; j < N; j++) {
      int64_t v = 0;
      for (int r = 0; r < size; r++) v += value(i, r, j);
      want = fold(want, (uint64_t)v);
    }
  long bad_all = 0;
  MPI_Reduce(&bad, &bad_all, 1, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
  if (rank == 0) {
    long imax = 0;
    for (long i = 1; i < it; i++)
      if (dt[i] > dt[imax]) imax = i;
    double t_max = start[imax], d_max = dt[imax];
    qsort(dt, it, sizeof *dt, cmp);
    printf("done iterations=%ld bad=%ld checksum=%016llx expected=%016llx\n", it, bad_all,
           (unsigned long long)sum, (unsigned long long)want);
    printf("iteration median_us=%.1f max_us=%.1f max_at=%.3f max_iter=%ld\n", dt[it / 2] * 1e6,
           d_max * 1e6, t_max, imax);
    fflush(stdout);
  }
  MPI_Finalize();
  return 0;
}
