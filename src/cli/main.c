/* main.c -- the callscope command-line tool: a table of commands. */
#include "cli.h"

#include <string.h>

static const cs_command commands[] = {
    {"run", "run a Python script or module and record it", cs_cmd_run, cs_usage_run},
    {"top", "one row per function: calls, errors, times", cs_cmd_top, cs_usage_top},
    {"tree", "where the time goes: the call tree, hottest paths first", cs_cmd_tree,
     cs_usage_tree},
    {"info", "one row per run: when, what, how big, state", cs_cmd_info, cs_usage_info},
    {"clean", "delete old runs", cs_cmd_clean, cs_usage_clean},
    {"compare", "digits kept across runs, or what changed between two", cs_cmd_compare,
     cs_usage_compare},
    {"report", "one self-contained HTML file with the views of a run", cs_cmd_report,
     cs_usage_report},
    {"export", "write a run as Chrome trace, speedscope, pstats, CSV, JSON Lines or Parquet",
     cs_cmd_export, cs_usage_export},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void
usage(FILE *f)
{
    fputs("usage: callscope <command> [options] [args]\n\n"
          "Record the function calls of Python programs and look at them.\n\n"
          "commands:\n",
          f);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fputs("\n'callscope <command> --help' describes a command.\n"
          "Runs live under $CALLSCOPE_DIR (default ./callscope-runs).\n",
          f);
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CS_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "help") == 0) {
        if (argc > 2 && strcmp(name, "help") == 0) {
            for (size_t i = 0; i < N_COMMANDS; i++)
                if (strcmp(argv[2], commands[i].name) == 0) {
                    fputs(commands[i].usage, stdout);
                    return CS_EXIT_OK;
                }
        }
        usage(stdout);
        return CS_EXIT_OK;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0) {
        printf("callscope 0.1.0 (log format %u, schema %d)\n", CS_LOG_VERSION,
               CS_SCHEMA_VERSION);
        return CS_EXIT_OK;
    }
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(name, commands[i].name) != 0)
            continue;
        for (int a = 2; a < argc; a++) {
            if (strcmp(argv[a], "--") == 0)
                break;
            if (strcmp(argv[a], "-h") == 0 || strcmp(argv[a], "--help") == 0) {
                fputs(commands[i].usage, stdout);
                return CS_EXIT_OK;
            }
            /* run stops reading its own options at the script */
            if (commands[i].fn == cs_cmd_run && argv[a][0] != '-')
                break;
        }
        return commands[i].fn(argc - 1, argv + 1);
    }
    cli_error(CS_EXIT_USAGE, "unknown command '%s'", name);
    usage(stderr);
    return CS_EXIT_USAGE;
}
