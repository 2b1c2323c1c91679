/* rundir.c -- creating run directories. A run is never overwritten: the
 * directory is made with mkdir, which fails if it exists, and a numbered
 * suffix is tried next. `latest` is swapped in atomically by rename. */
#include "cs_log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *
cs_run_root_default(void)
{
    const char *s = getenv("CALLSCOPE_DIR");
    return (s && *s) ? s : "callscope-runs";
}

static void
sanitize(const char *name, char *out, size_t n)
{
    size_t j = 0;
    for (size_t i = 0; name && name[i] && j + 1 < n; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_' || c == '.';
        out[j++] = ok ? c : '_';
    }
    out[j] = '\0';
    if (j == 0 || strcmp(out, ".") == 0 || strcmp(out, "..") == 0)
        snprintf(out, n, "run");
}

static void
point_latest(const char *root, const char *leaf)
{
    char *latest = cs__path_join(root, "latest");
    char tmpname[64];
    snprintf(tmpname, sizeof tmpname, ".latest-%ld", (long)getpid());
    char *tmp = cs__path_join(root, tmpname);
    if (latest && tmp) {
        unlink(tmp);
        if (symlink(leaf, tmp) == 0 && rename(tmp, latest) != 0)
            unlink(tmp);
    }
    cs__free(latest);
    cs__free(tmp);
}

int
cs_run_create(const char *root, const char *name, char **out)
{
    *out = NULL;
    int rc = cs_mkdirs(root);
    if (rc != CS_OK)
        return rc;
    char clean[96];
    sanitize(name, clean, sizeof clean);
    /* Milliseconds in the stamp: names sort in creation order even when
     * several runs start within a second. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    localtime_r(&now.tv_sec, &tm);
    char stamp[40], sec[32];
    strftime(sec, sizeof sec, "%Y%m%d-%H%M%S", &tm);
    snprintf(stamp, sizeof stamp, "%.24s-%03u", sec, (unsigned)(now.tv_nsec / 1000000L) % 1000u);
    for (int i = 0; i < 10000; i++) {
        char leaf[160];
        if (i == 0)
            snprintf(leaf, sizeof leaf, "%s-%s", stamp, clean);
        else
            snprintf(leaf, sizeof leaf, "%s-%s-%d", stamp, clean, i + 1);
        char *path = cs__path_join(root, leaf);
        if (path == NULL)
            return CS_ENOMEM;
        if (mkdir(path, 0777) == 0) {
            point_latest(root, leaf);
            *out = path;
            return CS_OK;
        }
        int e = errno;
        cs__free(path);
        if (e != EEXIST)
            return cs_from_errno(e);
    }
    return CS_EEXIST;
}
