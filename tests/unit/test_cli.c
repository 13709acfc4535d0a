/* test_cli.c - the programs' option parser: values stored with their
 * types, ranges enforced with one-line messages, operands kept in order,
 * --help seen before anything is stored, and defaults shown by usage. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/opt.h"

typedef struct {
    int n, flag, seen;
    double x;
    float p;
    unsigned long long seed;
    size_t bytes;
    const char *name;
} vals;

static cli_action run(vals *v, const char **ops, int *nops, char *err, size_t errlen, int argc, ...)
{
    const cli_opt opts[] = {
        {"n", CLI_INT, &v->n, 1, 100, "N", "a count", .seen = &v->seen},
        {"flag", CLI_FLAG, &v->flag, 0, 0, NULL, "a switch", .def = NULL},
        {"x", CLI_DOUBLE, &v->x, 0, 10, "X", "a rate", .lo_open = 1},
        {"p", CLI_FLOAT, &v->p, 0, 1, "P", "a probability", .what = "a probability", .hi_open = 1},
        {"seed", CLI_U64, &v->seed, 0, 18446744073709551615.0, "N", "seed", .def = NULL},
        {"bytes", CLI_SIZE, &v->bytes, 1, 1e9, "N", "a size", .def = NULL},
        {"name", CLI_STRING, &v->name, 0, 0, "S", "a name", .def = NULL},
    };
    char *argv[16] = {"prog"};
    va_list ap;
    va_start(ap, argc);
    for (int i = 1; i < argc; i++) argv[i] = va_arg(ap, char *);
    va_end(ap);
    err[0] = '\0';
    return cli_parse(opts, 7, argc, argv, ops, nops, err, errlen);
}

static void test_values_and_operands(void **state)
{
    (void)state;
    vals v = {.n = 5, .x = 1, .name = "none"};
    const char *ops[16];
    int nops = -1;
    char err[256];
    assert_int_equal(run(&v, ops, &nops, err, sizeof err, 12, "a", "--n", "7", "--flag", "b",
                         "--x=2.5", "--p", "0.25", "--seed", "18446744073709551615", "--name=zed"),
                     CLI_RUN);
    assert_int_equal(v.n, 7);
    assert_int_equal(v.seen, 1);
    assert_int_equal(v.flag, 1);
    assert_true(v.x == 2.5);
    assert_true(v.p == 0.25f);
    assert_true(v.seed == 18446744073709551615ull);
    assert_string_equal(v.name, "zed");
    assert_int_equal(nops, 2);
    assert_string_equal(ops[0], "a");
    assert_string_equal(ops[1], "b");
    /* "--" ends the options; "-" alone is an operand. */
    assert_int_equal(run(&v, ops, &nops, err, sizeof err, 5, "-", "--", "--n", "x"), CLI_RUN);
    assert_int_equal(nops, 3);
    assert_string_equal(ops[1], "--n");
}

static void test_errors(void **state)
{
    (void)state;
    vals v = {.n = 5};
    const char *ops[16];
    int nops;
    char err[256];
    static const struct {
        const char *flag, *value, *msg;
    } bad[] = {
        {"--n", "0", "--n wants an integer from 1 to 100, got '0'"},
        {"--n", "abc", "--n wants an integer from 1 to 100, got 'abc'"},
        {"--n", "7x", "--n wants an integer from 1 to 100, got '7x'"},
        {"--n", "-3", "--n wants an integer from 1 to 100, got '-3'"},
        {"--n", "", "--n wants an integer from 1 to 100, got ''"},
        {"--n", "101", "--n wants an integer from 1 to 100, got '101'"},
        {"--x", "0", "--x wants a number above 0 up to 10, got '0'"},
        {"--x", "nan", "--x wants a number above 0 up to 10, got 'nan'"},
        {"--p", "1", "--p wants a probability from 0 to below 1, got '1'"},
        {"--seed", "-1", "--seed wants an integer from 0 to 2^64-1, got '-1'"},
        {"--seed", "18446744073709551616", "--seed wants an integer from 0 to 2^64-1"},
        {"--bytes", "0", "--bytes wants an integer from 1 to 1000000000, got '0'"},
        {"--name", "", "--name wants a value, got ''"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v.n = 5;
        assert_int_equal(run(&v, ops, &nops, err, sizeof err, 3, bad[i].flag, bad[i].value),
                         CLI_ERROR);
        if (strncmp(err, bad[i].msg, strlen(bad[i].msg)) != 0)
            fail_msg("%s %s: got \"%s\", want \"%s\"", bad[i].flag, bad[i].value, err, bad[i].msg);
        assert_null(strchr(err, '\n'));
    }
    assert_int_equal(v.n, 5); /* a refused value is not stored */
    assert_int_equal(run(&v, ops, &nops, err, sizeof err, 2, "--n"), CLI_ERROR);
    assert_string_equal(err, "--n needs a value");
    assert_int_equal(run(&v, ops, &nops, err, sizeof err, 2, "--bogus=1"), CLI_ERROR);
    assert_string_equal(err, "unknown option --bogus (see --help)");
    assert_int_equal(run(&v, ops, &nops, err, sizeof err, 2, "-q"), CLI_ERROR);
    assert_string_equal(err, "unknown option -q (see --help)");
    assert_int_equal(run(&v, ops, &nops, err, sizeof err, 2, "--flag=1"), CLI_ERROR);
    assert_string_equal(err, "--flag takes no value");
}

static void test_help_first_and_usage(void **state)
{
    (void)state;
    vals v = {.n = 5, .x = 1.5, .name = "none"};
    const char *ops[16];
    int nops;
    char err[256];
    /* --help wins even after a bad value, and nothing was stored. */
    assert_int_equal(run(&v, ops, &nops, err, sizeof err, 4, "--n", "9", "--help"), CLI_HELP);
    assert_int_equal(v.n, 5);
    assert_int_equal(run(&v, ops, &nops, err, sizeof err, 4, "--n", "abc", "-h"), CLI_HELP);
    assert_int_equal(run(&v, ops, &nops, err, sizeof err, 2, "--version"), CLI_VERSION);

    int n = 42;
    const char *s = "models";
    const cli_opt opts[] = {
        {"n", CLI_INT, &n, 1, 100, "N", "a count", .def = NULL},
        {"dir", CLI_STRING, &s, 0, 0, "DIR", "where", .def = NULL},
        {"k", CLI_INT, &n, 0, 9, "K", "computed", .def = "the preset's"},
    };
    char buf[1024] = "";
    FILE *f = fmemopen(buf, sizeof buf, "w");
    assert_non_null(f);
    cli_usage(f, "usage: prog", opts, 3);
    fclose(f);
    assert_non_null(strstr(buf, "usage: prog\n"));
    assert_non_null(strstr(buf, "--n N"));
    assert_non_null(strstr(buf, "a count (default 42)"));
    assert_non_null(strstr(buf, "where (default models)"));
    assert_non_null(strstr(buf, "computed (default the preset's)"));
    assert_non_null(strstr(buf, "--help"));
}

static void test_floats_and_set(void **state)
{
    (void)state;
    float f[3];
    assert_int_equal(cli_floats("15,0.15,0.1", f, 3), 0);
    assert_true(f[0] == 15.0f && f[1] == 0.15f && f[2] == 0.1f);
    assert_int_equal(cli_floats("15,0.15", f, 3), -1);
    assert_int_equal(cli_floats("15,0.15,0.1,2", f, 3), -1);
    assert_int_equal(cli_floats("15,,0.1", f, 3), -1);
    assert_int_equal(cli_floats("1,2,x", f, 3), -1);
    assert_int_equal(cli_floats("1,inf,2", f, 3), -1);
    double secs = 0.3;
    char err[200];
    const cli_opt o = {"seconds", CLI_DOUBLE, &secs, 0, 100, "S", "s", .lo_open = 1, .hi_open = 1};
    assert_int_equal(cli_set(&o, "2", err, sizeof err), 0);
    assert_true(secs == 2.0);
    assert_int_equal(cli_set(&o, "100", err, sizeof err), -1);
    assert_string_equal(err, "--seconds wants a number above 0 and below 100, got '100'");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_and_operands),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_help_first_and_usage),
        cmocka_unit_test(test_floats_and_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
