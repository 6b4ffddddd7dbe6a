/*
 * service.h - qtaud under a service manager: readiness notification
 * (sd_notify) and a listening socket passed by socket activation.
 *
 * Both are no-ops outside systemd, so main() calls them unconditionally.
 */
#ifndef QT_SERVICE_H
#define QT_SERVICE_H

#include <stddef.h>

#include "common/error.h"

/* Sends newline-separated assignments ("READY=1\nSTATUS=...") to the
 * service manager, as sd_notify(3) does.  Does nothing without
 * $NOTIFY_SOCKET, or in a build without libsystemd.  A notification that
 * cannot be sent is logged, never fatal: qtaud serves either way. */
void service_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Takes the listening socket systemd passed (LISTEN_PID, LISTEN_FDS; see
 * sd_listen_fds(3)).  Returns 0 with *fd = -1 when none was passed to this
 * process, 0 with *fd = 3 (close-on-exec, non-blocking) when one was, or
 * -1 with err filled (field "listen") when what was passed is not one
 * listening TCP socket.  Unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES
 * so tasks do not inherit them: call before any thread exists. */
int service_listen_fd(int *fd, struct qt_error *err);

/* The numeric host a socket is bound to, for messages and the agent URL.
 * Returns 0, or -1 with errno. */
int service_socket_host(int fd, char *host, size_t len);

#endif
