/*
 * service.c - see service.h.
 *
 * The socket activation check is written out here rather than taken from
 * libsystemd's sd_listen_fds(): it is a dozen lines, and this way a build
 * without libsystemd still takes a passed socket, and one code path is
 * tested in every build.  Notification goes through sd_notify(), which
 * knows the socket's addressing rules (abstract namespace, vsock) and
 * credentials; without libsystemd qtaud simply does not notify, and the
 * installed unit is Type=simple (configure.ac).
 *
 * Tasks inherit qtaud's environment, NOTIFY_SOCKET included; with the
 * default NotifyAccess=main systemd ignores anything they might send.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "common/log.h"
#include "daemon/service.h"

/* The first passed descriptor, SD_LISTEN_FDS_START in sd-daemon.h; fixed by
 * the protocol, so it needs no libsystemd. */
#define SERVICE_LISTEN_FDS_START 3

void service_notify(const char *fmt, ...)
{
#ifdef HAVE_LIBSYSTEMD
    char msg[512];
    va_list ap;
    int rc;

    if (!getenv("NOTIFY_SOCKET"))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    rc = sd_notify(0, msg);
    if (rc < 0)
        log_warn("cannot notify the service manager (%.*s): %s",
                 (int)strcspn(msg, "\n"), msg, strerror(-rc));
#else
    (void)fmt;
#endif
}

/* A decimal number and nothing else, in [0, max]. */
static int parse_count(const char *s, long max, long *out)
{
    char *end;
    long v;

    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = v;
    return 0;
}

int service_listen_fd(int *fd, struct qt_error *err)
{
    const char *pid_s = getenv("LISTEN_PID"), *fds_s = getenv("LISTEN_FDS");
    int s = SERVICE_LISTEN_FDS_START, type = 0, listening = 0, flags;
    socklen_t len = sizeof(type);
    struct sockaddr_storage ss;
    long pid, n;
    int rc = 0;

    *fd = -1;
    if (!pid_s || !fds_s)
        goto out;
    /* Meant for another process: an ancestor that left them behind. */
    if (parse_count(pid_s, LONG_MAX, &pid) < 0 || pid != (long)getpid())
        goto out;
    if (parse_count(fds_s, INT_MAX - s, &n) < 0) {
        rc = qt_error_arg(err, "listen", "LISTEN_FDS must be a count, got '%.16s'",
                          fds_s);
        goto out;
    }
    if (n == 0)
        goto out;
    if (n != 1) {
        rc = qt_error_arg(err, "listen", "systemd passed %ld sockets; qtaud takes "
                          "exactly one (one ListenStream= in qtaud.socket)", n);
        goto out;
    }
    if (getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM) {
        rc = qt_error_arg(err, "listen", "passed descriptor %d is not a stream "
                          "socket", s);
        goto out;
    }
    len = sizeof(listening);
    if (getsockopt(s, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening) {
        rc = qt_error_arg(err, "listen", "passed socket %d is not listening "
                          "(qtaud.socket needs Accept=no)", s);
        goto out;
    }
    len = sizeof(ss);
    if (getsockname(s, (struct sockaddr *)&ss, &len) < 0
        || (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)) {
        rc = qt_error_arg(err, "listen", "passed socket %d is not a TCP socket "
                          "(ListenStream= must be HOST:PORT)", s);
        goto out;
    }
    /* Not for tasks to inherit; and several server threads accept on it,
     * so a thread that loses the race must not block in accept(). */
    flags = fcntl(s, F_GETFL);
    if (fcntl(s, F_SETFD, FD_CLOEXEC) < 0 || flags < 0
        || fcntl(s, F_SETFL, flags | O_NONBLOCK) < 0) {
        rc = qt_error_arg(err, "listen", "passed socket %d: %s", s, strerror(errno));
        goto out;
    }
    *fd = s;
out:
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return rc;
}

int service_socket_host(int fd, char *host, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    const void *addr;

    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return -1;
    if (ss.ss_family == AF_INET)
        addr = &((struct sockaddr_in *)&ss)->sin_addr;
    else if (ss.ss_family == AF_INET6)
        addr = &((struct sockaddr_in6 *)&ss)->sin6_addr;
    else {
        errno = EAFNOSUPPORT;
        return -1;
    }
    return inet_ntop(ss.ss_family, addr, host, (socklen_t)len) ? 0 : -1;
}
