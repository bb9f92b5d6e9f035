/*
 * Preloaded into CRIU 4.1.x by the `criu` wrapper (scripts/setup-criu.sh).
 *
 * Since Linux 6.16 the socket options SO_PASSCRED and SO_PASSSEC exist only
 * for unix, netlink and bluetooth sockets: getsockopt/setsockopt on a TCP or
 * UDP socket fail with EOPNOTSUPP. CRIU 4.1.1 reads both options from every
 * socket it dumps, so it cannot dump any process with an inet socket on
 * these kernels ("sockets: Can't get 1:16 opt: Operation not supported";
 * upstream issue checkpoint-restore/criu#2705, fixed after 4.1.1 by skipping
 * the options for such sockets).
 *
 * This library gives CRIU the old kernels' answer for those sockets: the
 * option reads as 0 (it can never have been set), and setting it to 0 is a
 * no-op. Any other call, and any other error, passes through unchanged.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/socket.h>

typedef int (*getsockopt_fn)(int, int, int, void *, socklen_t *);
typedef int (*setsockopt_fn)(int, int, int, const void *, socklen_t);

static int is_pass_option(int level, int optname)
{
	return level == SOL_SOCKET && (optname == SO_PASSCRED || optname == SO_PASSSEC);
}

int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen)
{
	static getsockopt_fn real;
	if (!real)
		real = (getsockopt_fn)dlsym(RTLD_NEXT, "getsockopt");
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	int ret = real(fd, level, optname, optval, optlen);
	if (ret < 0 && errno == EOPNOTSUPP && is_pass_option(level, optname) &&
	    optval && optlen && *optlen >= (socklen_t)sizeof(int)) {
		*(int *)optval = 0;
		*optlen = sizeof(int);
		return 0;
	}
	return ret;
}

int setsockopt(int fd, int level, int optname, const void *optval, socklen_t optlen)
{
	static setsockopt_fn real;
	if (!real)
		real = (setsockopt_fn)dlsym(RTLD_NEXT, "setsockopt");
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	int ret = real(fd, level, optname, optval, optlen);
	if (ret < 0 && errno == EOPNOTSUPP && is_pass_option(level, optname) &&
	    optval && optlen >= (socklen_t)sizeof(int) && *(const int *)optval == 0)
		return 0;
	return ret;
}
