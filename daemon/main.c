/*
 * main.c - qtaud: start-up, signal handling and shutdown.
 *
 * Threads: the main thread only waits for signals (they are blocked in
 * every thread and taken with sigwaitinfo, so no handler runs anywhere);
 * the store writer, the scheduler's timer and pool workers, and the HTTP
 * server's threads do the work.
 *
 * SIGTERM/SIGINT: stop accepting work, let running tasks finish
 * within shutdown-grace, stop the rest (recorded as interrupted and
 * requeued for the next start), flush the store, exit 0.
 *
 * Under systemd (service.h): READY=1 goes out only once the store is open
 * and the listener accepts, so units ordered after qtaud find it
 * answering; STOPPING=1 when the drain begins.  A socket passed by
 * socket activation replaces --listen.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "common/log.h"
#include "common/token.h"
#include "daemon/conf.h"
#include "daemon/sched.h"
#include "daemon/service.h"
#include "db/db.h"

/* Writes the bound port to <state-dir>/port atomically (tmp + rename), so
 * a reader never sees a half-written number. */
static int write_port_file(const char *state_dir, int port)
{
    char path[1100], tmp[1110];
    FILE *f;

    snprintf(path, sizeof(path), "%s/port", state_dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "we");
    if (!f)
        return -1;
    fprintf(f, "%d\n", port);
    if (fclose(f) != 0)
        return -1;
    return rename(tmp, path);
}

/* Makes the state dir (mode 0700), or takes the one there: a dir that
 * group or others can enter is closed to them (0700), with a warning - it
 * holds the token, the store with the pilots' tokens and every task's
 * description and output. */
static int make_state_dir(const char *dir)
{
    struct stat st;

    if (mkdir(dir, 0700) == 0)
        return 0;
    if (errno != EEXIST)
        return -1;
    if (stat(dir, &st) < 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    if ((st.st_mode & 077) && st.st_uid == geteuid()) {
        if (chmod(dir, st.st_mode & 0700) < 0)
            return -1;
        log_warn("state dir %s was mode %04o: now %04o, as it holds the token and the "
                 "store", dir, (unsigned)(st.st_mode & 07777), (unsigned)(st.st_mode & 0700));
    }
    return 0;
}

/* Takes <state-dir>/lock for the life of the process (flock: the kernel
 * lets it go however qtaud ends), so that a second qtaud on the same state
 * dir refuses to start instead of taking the first one's running tasks
 * for interrupted ones.  Returns the lock's fd, or -1 with msg filled. */
static int lock_state_dir(const char *dir, char *msg, size_t len)
{
    char path[1100], pid[32] = "";
    int fd;
    ssize_t n;

    snprintf(path, sizeof(path), "%s/lock", dir);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(msg, len, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int saved = errno;

        n = pread(fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        if (saved == EWOULDBLOCK)
            snprintf(msg, len, "state dir %s is in use by another qtaud (pid %s)", dir,
                     pid[0] ? pid : "unknown");
        else
            snprintf(msg, len, "cannot lock %s: %s", path, strerror(saved));
        close(fd);
        return -1;
    }
    n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
        log_warn("cannot write the pid into %s: %s", path, strerror(errno));
    return fd;
}

/* Raises the soft limit on open files to the hard one when the
 * configuration can need more than the soft one allows - each connection
 * is a descriptor and each local pilot worker keeps two live output files
 * open - and warns when even the hard limit is short.  (systemd's advice
 * for daemons; a login shell's soft limit is often 1024, below the
 * default max-connections alone.) */
static void fit_open_files(const struct qtaud_config *cfg)
{
    long cores = cfg->local_cores > 0 ? cfg->local_cores : sched_online_cpus();
    rlim_t need = (rlim_t)cfg->max_connections + 2 * (rlim_t)cores
                  + 64;   /* the store, logs, listeners, libslurm */
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= need)
        return;
    if (rl.rlim_max > rl.rlim_cur) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            log_info("open files limit raised to %llu (max-connections %d and %ld "
                     "local cores need about %llu)", (unsigned long long)rl.rlim_cur,
                     cfg->max_connections, cores, (unsigned long long)need);
    }
    if (rl.rlim_cur < need)
        log_warn("open files limit is %llu, but max-connections %d and %ld local cores "
                 "need about %llu: lower max-connections or raise the limit "
                 "(LimitNOFILE= in the unit, ulimit -n)", (unsigned long long)rl.rlim_cur,
                 cfg->max_connections, cores, (unsigned long long)need);
}

/* Tells the scheduler where agents reach qtaud: agent-url, or the
 * listener at host (a wildcard address is replaced by this host's name). */
static void set_agent_url(struct sched *s, const struct qtaud_config *cfg,
                          const char *host, const char *hostname, int port)
{
    char url[1200];

    if (cfg->agent_url[0]) {
        sched_set_agent_url(s, cfg->agent_url);
        return;
    }
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
        host = hostname;
    if (strchr(host, ':'))
        snprintf(url, sizeof(url), "http://[%s]:%d", host, port);
    else
        snprintf(url, sizeof(url), "http://%s:%d", host, port);
    sched_set_agent_url(s, url);
}

/* SIGHUP: reads the configuration again (file, environment, flags, as at
 * start-up) and applies what a running daemon can change - log level,
 * kill-grace, max-requeues, agent-timeout.  Listener, state dir and pools
 * need a restart.  A bad configuration changes nothing and says why.
 * Logs go to stderr (journald under systemd): there is no file to reopen. */
static void reload(struct sched *s, struct qtaud_config *cfg, int argc, char **argv,
                   const char *status)
{
    struct qtaud_config next;
    struct qt_error err = { 0 };

    if (config_load(&next, argc, argv, &err) < 0) {
        log_err("SIGHUP: configuration not reloaded: %s", err.message);
        return;
    }
    /* RELOADING=1 then READY=1 tells systemd when the reload is done */
    service_notify("RELOADING=1\nSTATUS=reloading the configuration");
    {
        enum log_level lvl;

        if (log_level_parse(next.log_level, &lvl) == 0)
            log_threshold = lvl;
    }
    sched_reconfigure(s, next.kill_grace, next.max_requeues, next.agent_timeout);
    service_notify("READY=1\nSTATUS=%s", status);
    if (strcmp(next.listen_host, cfg->listen_host) || next.listen_port != cfg->listen_port
        || strcmp(next.state_dir, cfg->state_dir) || next.local_cores != cfg->local_cores)
        log_warn("SIGHUP: listen, state-dir and local-cores take effect at the next start");
    log_info("SIGHUP: configuration reloaded (log-level %s, kill-grace %g s, "
             "max-requeues %d, agent-timeout %g s)", next.log_level, next.kill_grace,
             next.max_requeues, next.agent_timeout);
    cfg->kill_grace = next.kill_grace;
    cfg->max_requeues = next.max_requeues;
    cfg->agent_timeout = next.agent_timeout;
    snprintf(cfg->log_level, sizeof(cfg->log_level), "%s", next.log_level);
}

/* Whether host is a loopback address, the only one safe to listen on
 * without thinking about who else can reach the port. */
static bool host_is_loopback(const char *host)
{
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0;
}

int main(int argc, char **argv)
{
    struct qtaud_config cfg;
    struct qt_error err = { 0 };
    struct db_writer *writer = NULL;
    struct sched *s = NULL;
    struct api *api = NULL;
    sqlite3 *db, *reader;
    sigset_t sigs;
    char db_path[1100], hostname[256], listen_host[64], status[160];
    char token_path[1100], sock_path[1100], token[QT_TOKEN_MAX + 1];
    int port = 0, rc = 1, listen_fd = -1, lock_fd;

    if (config_load(&cfg, argc, argv, &err) < 0) {
        fprintf(stderr, "qtaud: %s\n", err.message);
        return 2;
    }
    if (cfg.help) {
        config_usage(stdout);
        return 0;
    }
    if (cfg.version) {
        printf("qtaud %s\n", PACKAGE_VERSION);
        return 0;
    }
    {
        enum log_level lvl;

        if (log_level_parse(cfg.log_level, &lvl) == 0)   /* checked by config_load */
            log_threshold = lvl;
    }
    if (geteuid() == 0 && !cfg.allow_root) {
        fprintf(stderr, "qtaud: refusing to run as root: every task would run as "
                        "root too; run as a dedicated user, or pass --allow-root "
                        "if you mean it\n");
        return 2;
    }
    if (make_state_dir(cfg.state_dir) < 0) {
        fprintf(stderr, "qtaud: state directory %s: %s\n", cfg.state_dir,
                strerror(errno));
        return 2;
    }
    {
        char msg[1200];

        /* held until exit: the fd is closed by the exit itself */
        lock_fd = lock_state_dir(cfg.state_dir, msg, sizeof(msg));
        if (lock_fd < 0) {
            fprintf(stderr, "qtaud: %s\n", msg);
            return 2;
        }
    }
    fit_open_files(&cfg);
    /* before any thread: it unsets LISTEN_* */
    if (service_listen_fd(&listen_fd, &err) < 0) {
        fprintf(stderr, "qtaud: %s\n", err.message);
        return 2;
    }
    snprintf(listen_host, sizeof(listen_host), "%s", cfg.listen_host);
    if (listen_fd >= 0 && service_socket_host(listen_fd, listen_host,
                                              sizeof(listen_host)) < 0) {
        fprintf(stderr, "qtaud: passed socket: %s\n", strerror(errno));
        return 2;
    }

    /* Block the signals we handle before any thread exists, so every
     * thread inherits the mask and only sigwaitinfo() below sees them.
     * SIGPIPE is ignored: a client that hangs up is not a reason to die. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* the admin token: the configured file, or one made in the state dir */
    if (cfg.token_file[0])
        snprintf(token_path, sizeof(token_path), "%s", cfg.token_file);
    else
        snprintf(token_path, sizeof(token_path), "%s/token", cfg.state_dir);
    if (qt_token_file_load(token_path, !cfg.token_file[0], "token-file", token,
                           &err) < 0) {
        fprintf(stderr, "qtaud: %s\n", err.message);
        return 2;
    }
    if (cfg.socket_path[0])
        snprintf(sock_path, sizeof(sock_path), "%s", cfg.socket_path);
    else
        snprintf(sock_path, sizeof(sock_path), "%s/qtaud.sock", cfg.state_dir);

    if (gethostname(hostname, sizeof(hostname)) < 0)
        snprintf(hostname, sizeof(hostname), "localhost");
    hostname[sizeof(hostname) - 1] = '\0';
    snprintf(db_path, sizeof(db_path), "%s/qtaud.db", cfg.state_dir);
    db = db_open(db_path, &err);
    if (!db)
        goto out;
    if (db_set_durability(db, cfg.durability, &err) < 0) {
        db_close(db);
        goto out;
    }
    writer = db_writer_start(db);
    if (!writer) {
        db_close(db);
        qt_error_set(&err, 503, "unavailable", NULL, "cannot start store writer: %s",
                     strerror(errno));
        goto out;
    }
    reader = db_open_reader(db_path, &err);
    if (!reader)
        goto out;
    s = sched_create(&(struct sched_config){
                         .state_dir = cfg.state_dir,
                         .hostname = hostname,
                         .local_cores = cfg.local_cores,
                         .local_pilot = !cfg.no_local_pilot,
                         .kill_grace = cfg.kill_grace,
                         .max_requeues = cfg.max_requeues,
                         .agent_path = cfg.agent_path,
                         .slurm_poll = cfg.slurm_poll,
                         .heartbeat = cfg.heartbeat,
                         .agent_timeout = cfg.agent_timeout,
                     },
                     writer, reader, &err);
    db_close(reader);
    if (!s || sched_start(s, &err) < 0)
        goto out;
    api = api_start(&(struct api_config){
                        .host = cfg.listen_host,
                        .port = cfg.listen_port,
                        .listen_fd = listen_fd,
                        .threads = cfg.http_threads,
                        .max_body = (size_t)cfg.max_body,
                        .idle_timeout = (unsigned)cfg.idle_timeout,
                        .max_connections = (unsigned)cfg.max_connections,
                        .max_connections_per_client =
                            (unsigned)cfg.max_connections_per_client,
                        .max_header_size = (size_t)cfg.max_header_size,
                        .db_path = db_path,
                        .token = token,
                        .unix_path = strcmp(sock_path, "none") ? sock_path : NULL,
                    },
                    s, &port, &err);
    if (!api)
        goto out;
    set_agent_url(s, &cfg, listen_host, hostname, port);
    if (write_port_file(cfg.state_dir, port) < 0)
        log_warn("cannot write %s/port: %s", cfg.state_dir, strerror(errno));
    snprintf(status, sizeof(status), "serving on %s%s%s:%d",
             strchr(listen_host, ':') ? "[" : "", listen_host,
             strchr(listen_host, ':') ? "]" : "", port);
    log_info("qtaud %s %s%s, state in %s", PACKAGE_VERSION, status,
             listen_fd >= 0 ? " (socket passed by systemd)" : "", cfg.state_dir);
    if (strcmp(sock_path, "none"))
        log_info("owner's socket: %s (no token needed)", sock_path);
    if (!host_is_loopback(listen_host))
        log_warn("listening on %s, which is not loopback: anyone who can reach "
                 "port %d and learns the token can run commands as this user",
                 listen_host, port);
    /* The store is open, the scheduler runs and the listener accepts: from
     * here a client that systemd lets start finds qtaud answering.  The
     * port file is written first, so whoever reads it after READY=1 finds
     * it. */
    service_notify("READY=1\nSTATUS=%s", status);

    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&sigs, &si);

        if (sig < 0)
            continue;
        if (sig == SIGHUP) {
            reload(s, &cfg, argc, argv, status);
            continue;
        }
        log_info("%s: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        service_notify("STOPPING=1\nSTATUS=draining: running tasks get %g s to finish",
                       cfg.shutdown_grace);
        break;
    }
    rc = 0;
out:
    if (rc != 0) {
        log_err("%s", err.message);
        service_notify("STATUS=failed to start: %s", err.message);
    }
    /* The server goes on answering while tasks drain: new work gets 503
     * (the scheduler is draining), reads and long polls still work.  It
     * is not quiesced: libmicrohttpd 0.9.75's MHD_quiesce_daemon() races
     * its own epoll threads over the listening socket and can abort. */
    if (s)
        sched_drain(s, cfg.shutdown_grace);
    api_stop(api);
    db_writer_stop(writer);
    sched_destroy(s);
    if (rc == 0) {
        char path[1100];

        snprintf(path, sizeof(path), "%s/port", cfg.state_dir);
        unlink(path);
        log_info("stopped");
    }
    close(lock_fd);   /* last: the store is closed, another qtaud may come */
    return rc;
}
