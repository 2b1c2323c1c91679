/* cmd_clean.c -- `callscope clean`: delete old runs, never a running one. */
#include "cli.h"

#include <dirent.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char cs_usage_clean[] =
    "usage: callscope clean [options]\n\n"
    "Delete runs under the root, oldest first, keeping the newest N.\n"
    "Runs with a live process are never deleted.\n\n"
    "options:\n"
    "  -k, --keep N     keep the newest N runs (default 0)\n"
    "  -y, --yes        do not ask for confirmation\n"
    "  --dry-run        only list what would be deleted\n"
    "  -d, --dir ROOT   root of the run directories\n"
    "  -h, --help       show this help\n";

/* Remove `.job-*` links (see cs_run_create_job) to runs that are gone. */
static void
drop_stale_job_links(const char *root)
{
    DIR *d = opendir(root);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, ".job-", 5) != 0)
            continue;
        char *p = cs__path_join(root, e->d_name);
        if (p && !cs__is_dir(p))
            unlink(p);
        cs__free(p);
    }
    closedir(d);
}

/* Point `latest` at the newest run left (dirs[i] is NULL once deleted). */
static void
repoint_latest(const char *root, char **dirs, size_t n)
{
    char *latest = cs__path_join(root, "latest");
    if (latest == NULL)
        return;
    const char *keep = NULL;
    for (size_t i = 0; i < n; i++)
        if (dirs[i] != NULL)
            keep = dirs[i];
    unlink(latest);
    if (keep) {
        const char *leaf = strrchr(keep, '/');
        if (symlink(leaf ? leaf + 1 : keep, latest) != 0)
            cli_warn("cannot update %s", latest);
    }
    cs__free(latest);
}

int
cs_cmd_clean(int argc, char **argv)
{
    const char *root = cs_run_root_default();
    size_t keep = 0;
    int yes = 0, dry = 0;
    static const struct option opts[] = {
        {"keep", required_argument, NULL, 'k'}, {"yes", no_argument, NULL, 'y'},
        {"dry-run", no_argument, NULL, 'D'},    {"dir", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0},
    };
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":k:yd:h", opts, NULL)) != -1) {
        switch (c) {
        case 'k':
            if (cli_parse_size(optarg, &keep) != 0)
                return cli_error(CS_EXIT_USAGE, "clean: --keep needs a number, not '%s'", optarg);
            break;
        case 'y':
            yes = 1;
            break;
        case 'D':
            dry = 1;
            break;
        case 'd':
            root = optarg;
            break;
        case 'h':
            fputs(cs_usage_clean, stdout);
            return CS_EXIT_OK;
        case ':':
            return cli_error(CS_EXIT_USAGE, "clean: option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_error(CS_EXIT_USAGE,
                             "clean: unknown option '%s' (see callscope clean --help)",
                             argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_error(CS_EXIT_USAGE, "clean: unexpected argument '%s'", argv[optind]);
    char **dirs = NULL;
    size_t n = 0;
    int rc = cs_run_list(root, &dirs, &n);
    if (rc != CS_OK)
        return cli_error(CS_EXIT_FAIL, "%s: %s", root, cs_strerror(rc));
    /* only runs callscope made count, and are ever deleted */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (cs_run_is_ours(dirs[i])) {
            dirs[m++] = dirs[i];
        } else {
            cli_warn("leaving %s alone: not a run callscope made (no callscope run.db or log)",
                     dirs[i]);
            cs__free(dirs[i]);
        }
    }
    n = m;
    size_t ndel = n > keep ? n - keep : 0;
    int *victim = cs__calloc(n ? n : 1, sizeof *victim);
    if (victim == NULL) {
        cs_run_list_free(dirs, n);
        return cli_error(CS_EXIT_FAIL, "out of memory");
    }
    size_t count = 0;
    uint64_t bytes = 0;
    for (size_t i = 0; i < ndel; i++) {
        cs_run_summary s;
        cs_run_summarize(dirs[i], &s);
        if (s.state == CS_RUN_RUNNING) {
            cli_warn("skipping %s: a process is still running", dirs[i]);
        } else {
            victim[i] = 1;
            count++;
            bytes += s.disk_bytes;
            if (dry || !yes)
                printf("  %s\n", dirs[i]);
        }
        cs_run_summary_free(&s);
    }
    char sz[32];
    int status = CS_EXIT_OK;
    if (count == 0) {
        printf("nothing to delete in %s\n", root);
        goto out;
    }
    if (dry) {
        printf("would delete %zu run(s), %s\n", count, cs_fmt_bytes(bytes, sz, sizeof sz));
        goto out;
    }
    if (!yes) {
        if (!isatty(STDIN_FILENO)) {
            status = cli_error(CS_EXIT_USAGE,
                               "clean: would delete %zu run(s); add --yes to confirm", count);
            goto out;
        }
        printf("delete %zu run(s), %s? [y/N] ", count, cs_fmt_bytes(bytes, sz, sizeof sz));
        fflush(stdout);
        char ans[16] = "";
        if (fgets(ans, sizeof ans, stdin) == NULL || (ans[0] != 'y' && ans[0] != 'Y')) {
            printf("nothing deleted\n");
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!victim[i])
            continue;
        int kept = 0;
        if (cs_run_remove(dirs[i], &kept) != CS_OK)
            status = cli_error(CS_EXIT_FAIL, "clean: cannot delete %s", dirs[i]);
        else if (kept)
            cli_warn("kept %s: it holds files callscope did not make (its own were deleted)",
                     dirs[i]);
        cs__free(dirs[i]);
        dirs[i] = NULL;
    }
    repoint_latest(root, dirs, n);
    drop_stale_job_links(root);
    printf("deleted %zu run(s), %s\n", count, cs_fmt_bytes(bytes, sz, sizeof sz));
out:
    cs__free(victim);
    cs_run_list_free(dirs, n);
    return status;
}
