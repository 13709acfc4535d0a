/* opt.h - command-line options for the programs (tools/, bench/, test
 * tools): one table per program lists every option once, with its type,
 * its range and its help line, so parsing, checking and --help cannot
 * drift apart (the server's server/config.c works the same way, with
 * environment variables besides).
 *
 *   int epochs = 0;                  // 0: the preset's
 *   double lr = 1e-3;
 *   const char *out = NULL;
 *   const cli_opt opts[] = {
 *       {"epochs", CLI_INT, &epochs, 1, 100000, "N", "epochs", .def = "the preset's"},
 *       {"lr", CLI_DOUBLE, &lr, 1e-9, 10, "X", "learning rate"},
 *       {"out", CLI_STRING, &out, 0, 0, "FILE", "weights file to write"},
 *   };
 *   const char *files[argc]; int nfiles;
 *   switch (cli_parse(opts, 3, argc, argv, files, &nfiles, err, sizeof err)) {
 *   case CLI_HELP: cli_usage(stdout, "usage: prog [options] FILE...", opts, 3); return 0;
 *   case CLI_VERSION: ...; case CLI_ERROR: fprintf(stderr, "prog: %s\n", err); return 2;
 *   case CLI_RUN: break;
 *   }
 *
 * Values: "--name VALUE" or "--name=VALUE". Numbers must be whole (no
 * trailing characters) and inside [lo, hi] (hi excluded with .hi_open),
 * else one line such as "--epochs wants an integer from 1 to 100000, got
 * 'abc'". Bounds are inclusive unless .lo_open / .hi_open. Operands (non-options) may come anywhere; "--" ends the options.
 * --help/-h and --version win over everything else and are seen before any
 * value is stored, so cli_usage shows the defaults the table starts with.
 */
#ifndef CLI_OPT_H
#define CLI_OPT_H

#include <stddef.h>
#include <stdio.h>

typedef enum {
    CLI_FLAG,   /* no value; *(int *)dst = 1 */
    CLI_INT,    /* int */
    CLI_U64,    /* unsigned long long (lo/hi as doubles) */
    CLI_SIZE,   /* size_t */
    CLI_DOUBLE, /* double */
    CLI_FLOAT,  /* float */
    CLI_STRING  /* const char *, non-empty, pointing into argv */
} cli_type;

typedef struct {
    const char *name; /* without the dashes: "epochs" is --epochs */
    cli_type type;
    void *dst;        /* where the value goes, of the type's C type */
    double lo, hi;    /* numbers: the accepted range */
    const char *arg;  /* the value's name in --help ("N", "FILE") */
    const char *help; /* what it does, one line */
    const char *def;  /* --help's default when dst's value is not it
                          ("the preset's"); "" shows none; NULL: dst's */
    const char *what; /* the value in messages ("a probability");
                          NULL: "an integer" / "a number" */
    int lo_open;      /* nonzero: lo itself is refused ("above 0") */
    int hi_open;      /* nonzero: hi itself is refused ("below 1") */
    int *seen;        /* if not NULL, set to 1 when the option is given */
} cli_opt;

typedef enum { CLI_RUN, CLI_HELP, CLI_VERSION, CLI_ERROR } cli_action;

/* Parses argv[1..argc) against the n options. operands (room for argc
 * pointers) receives the non-option arguments in order, *noperands their
 * count. CLI_ERROR leaves a one-line message in err. */
cli_action cli_parse(const cli_opt *opts, int n, int argc, char **argv, const char **operands,
                     int *noperands, char *err, size_t errlen);

/* Checks value v against option o and stores it (what cli_parse does for
 * "--name v"); for operands that are numbers. 0, or -1 + err. */
int cli_set(const cli_opt *o, const char *v, char *err, size_t errlen);

/* A strict comma-separated list of exactly n numbers ("15,0.15,0.1") into
 * out: 0, or -1 (wrong count, junk, not finite). */
int cli_floats(const char *v, float *out, int n);

/* The usage text: the synopsis line(s), then one line per option with its
 * default, then --help and --version. */
void cli_usage(FILE *f, const char *synopsis, const cli_opt *opts, int n);

#endif
