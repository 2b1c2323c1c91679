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

void
cs_run_point_latest(const char *rundir)
{
    char *copy = cs__strdup(rundir);
    if (copy == NULL)
        return;
    char *slash = strrchr(copy, '/');
    if (slash) {
        *slash = '\0';
        point_latest(*copy ? copy : "/", slash + 1);
    } else {
        point_latest(".", copy);
    }
    cs__free(copy);
}

int
cs_run_create(const char *root, const char *name, char **out)
{
    int rc = cs_run_reserve(root, name, out);
    if (rc == CS_OK)
        cs_run_point_latest(*out);
    return rc;
}

int
cs_run_reserve(const char *root, const char *name, char **out)
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
        if (mkdir(path, cs_file_mode(1)) == 0) {
            (void)chmod(path, cs_file_mode(1)); /* whatever the umask */
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

int
cs_run_job_id(char *buf, size_t n)
{
    const char *slurm = getenv("SLURM_JOB_ID");
    if (slurm && *slurm) {
        const char *step = getenv("SLURM_STEP_ID");
        snprintf(buf, n, "slurm%s%s%s", slurm, step && *step ? "." : "", step ? step : "");
        return 1;
    }
    static const char *const vars[] = {"PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid",
                                       "PMI_KVSNAME"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *s = getenv(vars[i]);
        if (s && *s) {
            snprintf(buf, n, "%s", s);
            return 1;
        }
    }
    return 0;
}

int
cs_run_create_job(const char *root, const char *name, const char *job, char **out)
{
    *out = NULL;
    int rc = cs_mkdirs(root);
    if (rc != CS_OK)
        return rc;
    char tag[128], link[160];
    sanitize(job, tag, sizeof tag);
    snprintf(link, sizeof link, ".job-%s", tag);
    char *claim = cs__path_join(root, link);
    if (claim == NULL)
        return CS_ENOMEM;
    for (int attempt = 0; attempt < 50; attempt++) {
        char target[256];
        ssize_t len = readlink(claim, target, sizeof target - 1);
        if (len > 0) {
            /* another process of the job chose the run: join it. Ours are
             * a run's name in the root; anything else (a path, "..", a
             * link out of the root) is not followed */
            target[len] = '\0';
            if (strchr(target, '/') || target[0] == '.' ||
                (size_t)len >= sizeof target - 1) {
                rc = CS_ENOTRUN;
                break;
            }
            *out = cs__path_join(root, target);
            rc = *out ? CS_OK : CS_ENOMEM;
            if (rc == CS_OK)
                rc = cs_mkdirs(*out); /* it may have been cleaned meanwhile */
            struct stat st;
            if (rc == CS_OK && (lstat(*out, &st) != 0 || !S_ISDIR(st.st_mode)))
                rc = CS_ENOTRUN; /* a link in the root, not a run's directory */
            if (rc != CS_OK) {
                cs__free(*out);
                *out = NULL;
            }
            break;
        }
        char *mine = NULL;
        char jobname[192];
        snprintf(jobname, sizeof jobname, "%s-%s", name && *name ? name : "run", tag);
        if ((rc = cs_run_create(root, jobname, &mine)) != CS_OK)
            break;
        const char *leaf = strrchr(mine, '/') + 1;
        if (symlink(leaf, claim) == 0) {
            *out = mine;
            break;
        }
        /* lost the race: use the winner's run, drop ours (still empty) */
        rmdir(mine);
        cs__free(mine);
    }
    cs__free(claim);
    if (*out == NULL && rc == CS_OK)
        rc = CS_EEXIST;
    if (rc == CS_OK) {
        /* everyone points latest at the job's run */
        const char *leaf = strrchr(*out, '/');
        point_latest(root, leaf ? leaf + 1 : *out);
    }
    return rc;
}
