/*
 * What the C tests of this directory share (each built with common.c by
 * its runner in tests/): the headers they all use, CHECK, open_dev and
 * to_init.
 */
#ifndef MIGROS_TESTS_COMMON_H
#define MIGROS_TESTS_COMMON_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <infiniband/verbs.h>

/* A failed check prints "FAIL FILE line N: ..." and exits 1. */
#ifdef __FILE_NAME__
#define CHECK_FILE __FILE_NAME__
#else
#define CHECK_FILE __FILE__
#endif
#define CHECK(c, ...)                                                          \
	do {                                                                   \
		if (!(c)) {                                                    \
			printf("FAIL %s line %d: ", CHECK_FILE, __LINE__);     \
			printf(__VA_ARGS__);                                   \
			printf(" (errno %d)\n", errno);                        \
			exit(1);                                               \
		}                                                              \
	} while (0)

/* Opens the device called `name`; a missing one fails the check. */
struct ibv_context *open_dev(const char *name);
/* Moves `qp` to INIT on port 1, allowing `access` to its peer. */
void to_init(struct ibv_qp *qp, int access);

#endif
