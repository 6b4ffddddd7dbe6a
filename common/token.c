/*
 * token.c - see token.h.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/token.h"

int qt_token_new(char *out)
{
    unsigned char raw[QT_TOKEN_LEN / 2];
    size_t got = 0;

    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);

        if (n < 0 && errno != EINTR)
            return -1;
        if (n > 0)
            got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return 0;
}

bool qt_token_equal(const char *want, const char *got)
{
    size_t n = strlen(want), m = got ? strlen(got) : 0;
    unsigned char diff = (unsigned char)(n != m);

    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(want[i] ^ (i < m ? got[i] : 0));
    return diff == 0;
}

/* Writes a new token to path through a temporary file made with mode 0600
 * from the start, then links it into place: link() fails if another
 * process created path meanwhile, and then that token is the one. */
static int token_file_create(const char *path, const char *field, struct qt_error *err)
{
    char tmp[1200], tok[QT_TOKEN_LEN + 2];
    int fd, rc;

    if (qt_token_new(tok) < 0)
        return qt_error_arg(err, field, "cannot make a token: %s", strerror(errno));
    strcat(tok, "\n");
    snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return qt_error_arg(err, field, "cannot create %s: %s", tmp, strerror(errno));
    rc = write(fd, tok, strlen(tok)) == (ssize_t)strlen(tok) && fsync(fd) == 0 ? 0 : -1;
    if (close(fd) != 0)
        rc = -1;
    if (rc == 0 && link(tmp, path) < 0 && errno != EEXIST)
        rc = -1;
    if (rc < 0)
        qt_error_arg(err, field, "cannot write %s: %s", path, strerror(errno));
    unlink(tmp);
    return rc;
}

int qt_token_file_load(const char *path, bool create, const char *field, char *out,
                       struct qt_error *err)
{
    char buf[QT_TOKEN_MAX + 4];
    struct stat st;
    ssize_t n;
    size_t len;
    char *s;
    int fd;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT && create) {
        if (token_file_create(path, field, err) < 0)
            return -1;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    }
    if (fd < 0)
        return qt_error_arg(err, field, "cannot read token file %s: %s", path,
                            strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return qt_error_arg(err, field, "token file %s is not a regular file", path);
    }
    /* a token others can read is a token others can use */
    if (st.st_uid != geteuid() || (st.st_mode & 077)) {
        close(fd);
        return qt_error_arg(err, field, "token file %s must belong to uid %ld and "
                            "have mode 0600 (it has uid %ld, mode %04o)", path,
                            (long)geteuid(), (long)st.st_uid,
                            (unsigned)(st.st_mode & 07777));
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0)
        return qt_error_arg(err, field, "cannot read token file %s: %s", path,
                            strerror(errno));
    buf[n] = '\0';
    s = buf + strspn(buf, " \t\r\n");
    len = strcspn(s, " \t\r\n");
    if (s[len + strspn(s + len, " \t\r\n")] != '\0' || len < 16 || len > QT_TOKEN_MAX)
        return qt_error_arg(err, field, "token file %s must hold one token of 16 to "
                            "%d printable characters", path, QT_TOKEN_MAX);
    for (size_t i = 0; i < len; i++)
        if (s[i] < 0x21 || s[i] > 0x7e)
            return qt_error_arg(err, field, "token file %s holds a byte that is not "
                                "printable ASCII", path);
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}
