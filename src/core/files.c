/* files.c -- small filesystem helpers, and the process memory reading. */
#include "cs_core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

char *
cs__path_join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    while (la > 1 && a[la - 1] == '/')
        la--;
    char *p = cs__malloc(la + lb + 2);
    if (p == NULL)
        return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

int
cs__is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int
cs__exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

int
cs_mkdirs(const char *path)
{
    char *p = cs__strdup(path);
    if (p == NULL)
        return CS_ENOMEM;
    int rc = CS_OK;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, cs_file_mode(1)) != 0 && errno != EEXIST) {
            rc = cs_from_errno(errno);
            goto cleanup;
        }
        *s = '/';
    }
    if (mkdir(p, cs_file_mode(1)) != 0 && errno != EEXIST)
        rc = cs_from_errno(errno);
    else if (!cs__is_dir(p))
        rc = CS_ENOTDIR; /* a file where the directory should be */
cleanup:
    cs__free(p);
    return rc;
}

int
cs_rmtree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? CS_OK : cs_from_errno(errno);
    if (!S_ISDIR(st.st_mode))
        return unlink(path) == 0 ? CS_OK : cs_from_errno(errno);
    DIR *d = opendir(path);
    if (d == NULL)
        return cs_from_errno(errno);
    int rc = CS_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *child = cs__path_join(path, e->d_name);
        if (child == NULL) {
            rc = CS_ENOMEM;
            break;
        }
        int r = cs_rmtree(child);
        cs__free(child);
        if (r != CS_OK)
            rc = r;
    }
    closedir(d);
    if (rc == CS_OK && rmdir(path) != 0)
        rc = cs_from_errno(errno);
    return rc;
}

uint64_t
cs_du(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return 0;
    uint64_t total = (uint64_t)st.st_blocks * 512u;
    if (!S_ISDIR(st.st_mode))
        return total;
    DIR *d = opendir(path);
    if (d == NULL)
        return total;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *child = cs__path_join(path, e->d_name);
        if (child) {
            total += cs_du(child);
            cs__free(child);
        }
    }
    closedir(d);
    return total;
}

/* The descriptor of /proc/self/statm, kept open: reopening costs more than
 * the read. /proc/self is resolved at open, so a forked child drops the
 * parent's (the fork handler) and opens its own. */
static atomic_int statm_fd = -1;
static pthread_once_t statm_once = PTHREAD_ONCE_INIT;

static void
statm_child(void)
{
    int fd = atomic_exchange(&statm_fd, -1);
    if (fd >= 0)
        close(fd);
}

static void
statm_atfork(void)
{
    pthread_atfork(NULL, NULL, statm_child);
}

/* /proc/self/statm gives pages; VmHWM in /proc/self/status would need
 * parsing, while getrusage gives the peak in KiB without any. */
int
cs_mem_rss(uint64_t *rss, uint64_t *peak)
{
    static long page;
    if (rss)
        *rss = 0;
    if (peak)
        *peak = 0;
    if (page == 0)
        page = sysconf(_SC_PAGESIZE);
    if (rss) {
        /* Kept open: reopening costs more than the read. /proc/self is
         * resolved at open, so a forked child opens its own. */
        if (pthread_once(&statm_once, statm_atfork) != 0)
            return CS_EIO;
        int fd = atomic_load(&statm_fd);
        if (fd < 0) {
            fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                return cs_from_errno(errno);
            int expected = -1;
            if (!atomic_compare_exchange_strong(&statm_fd, &expected, fd)) {
                close(fd); /* another thread opened it first */
                fd = expected;
            }
        }
        char buf[128];
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        if (n <= 0)
            return CS_EIO;
        buf[n] = '\0';
        unsigned long size = 0, res = 0;
        if (sscanf(buf, "%lu %lu", &size, &res) != 2)
            return CS_EFORMAT;
        *rss = (uint64_t)res * (uint64_t)page;
    }
    if (peak) {
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) == 0)
            *peak = (uint64_t)ru.ru_maxrss * 1024u;
    }
    return CS_OK;
}

const char *
cs_fmt_ns(uint64_t ns, char *out, size_t n)
{
    if (ns < 1000u)
        snprintf(out, n, "%lluns", (unsigned long long)ns);
    else if (ns < 1000000u)
        snprintf(out, n, "%.2fus", ns / 1e3);
    else if (ns < 1000000000u)
        snprintf(out, n, "%.2fms", ns / 1e6);
    else
        snprintf(out, n, "%.3fs", ns / 1e9);
    return out;
}

const char *
cs_fmt_bytes(uint64_t b, char *out, size_t n)
{
    if (b < 1024u)
        snprintf(out, n, "%lluB", (unsigned long long)b);
    else if (b < 1024u * 1024u)
        snprintf(out, n, "%.1fKiB", b / 1024.0);
    else if (b < 1024ull * 1024u * 1024u)
        snprintf(out, n, "%.1fMiB", b / (1024.0 * 1024.0));
    else
        snprintf(out, n, "%.2fGiB", b / (1024.0 * 1024.0 * 1024.0));
    return out;
}

void
cs_hostname(char *out, size_t n)
{
    const char *env = getenv("CALLSCOPE_HOSTNAME");
    if (env && *env) {
        snprintf(out, n, "%s", env);
        return;
    }
    memset(out, 0, n);
    if (gethostname(out, n - 1) != 0 || out[0] == '\0')
        snprintf(out, n, "unknown");
}

unsigned
cs_file_mode(int dir)
{
    const char *share = getenv("CALLSCOPE_SHARE");
    int group = share && strcmp(share, "group") == 0;
    return dir ? (group ? 0750u : 0700u) : (group ? 0640u : 0600u);
}

int
cs_create_file(const char *path, int flags)
{
    int fd = open(path, flags | O_CREAT, (mode_t)cs_file_mode(0));
    if (fd >= 0 && (flags & O_EXCL))
        (void)fchmod(fd, (mode_t)cs_file_mode(0)); /* new: exactly, whatever the umask */
    return fd;
}
