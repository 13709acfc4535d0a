/* opt.c - see opt.h. */
#include "cli/opt.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const cli_opt *find(const cli_opt *opts, int n, const char *name, size_t len)
{
    for (int i = 0; i < n; i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0) return &opts[i];
    return NULL;
}

static int is_integer_type(cli_type t) { return t == CLI_INT || t == CLI_U64 || t == CLI_SIZE; }

/* "an integer from 1 to 100000" */
static void range_text(const cli_opt *o, char *buf, size_t len)
{
    const char *what = o->what ? o->what : is_integer_type(o->type) ? "an integer" : "a number";
    const char *to =
        o->lo_open ? (o->hi_open ? "and below" : "up to") : (o->hi_open ? "to below" : "to");
    char hi[32];
    if (o->hi >= 18446744073709551615.0)
        snprintf(hi, sizeof hi, "2^64-1");
    else
        snprintf(hi, sizeof hi, "%.10g", o->hi);
    snprintf(buf, len, "%s %s %.10g %s %s", what, o->lo_open ? "above" : "from", o->lo, to, hi);
}

int cli_set(const cli_opt *o, const char *v, char *err, size_t errlen)
{
    char range[160];
    if (o->type == CLI_FLAG) {
        *(int *)o->dst = 1;
        return 0;
    }
    if (o->type == CLI_STRING) {
        if (!*v) {
            snprintf(err, errlen, "--%s wants a value, got ''", o->name);
            return -1;
        }
        *(const char **)o->dst = v;
        return 0;
    }
    char *end;
    errno = 0;
    int ok;
    double d = 0;
    unsigned long long u = 0;
    if (is_integer_type(o->type)) {
        /* strtoull would take "-1" as a huge number: no sign allowed but a
         * minus for ranges that go below zero. */
        if (v[0] == '-' && o->lo < 0) {
            long long s = strtoll(v, &end, 10);
            d = (double)s;
        } else {
            u = strtoull(v, &end, 10);
            d = (double)u;
        }
        ok = *v && v[0] != '+' && (v[0] != '-' || o->lo < 0) && !*end && errno == 0;
    } else {
        d = strtod(v, &end);
        ok = *v && !*end && errno == 0 && isfinite(d);
    }
    ok = ok && (o->lo_open ? d > o->lo : d >= o->lo) && (o->hi_open ? d < o->hi : d <= o->hi);
    if (!ok) {
        range_text(o, range, sizeof range);
        snprintf(err, errlen, "--%s wants %s, got '%.60s'", o->name, range, v);
        return -1;
    }
    switch (o->type) {
    case CLI_INT: *(int *)o->dst = (int)d; break;
    case CLI_U64:
        *(unsigned long long *)o->dst = v[0] == '-' ? (unsigned long long)(long long)d : u;
        break;
    case CLI_SIZE: *(size_t *)o->dst = (size_t)u; break;
    case CLI_DOUBLE: *(double *)o->dst = d; break;
    case CLI_FLOAT: *(float *)o->dst = (float)d; break;
    default: break;
    }
    return 0;
}

cli_action cli_parse(const cli_opt *opts, int n, int argc, char **argv, const char **operands,
                     int *noperands, char *err, size_t errlen)
{
    *noperands = 0;
    /* --help and --version first: nothing is stored before usage shows the
     * defaults. */
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return CLI_HELP;
        if (!strcmp(argv[i], "--version")) return CLI_VERSION;
    }
    int options = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!options || a[0] != '-' || a[1] == '\0') {
            operands[(*noperands)++] = a;
            continue;
        }
        if (!strcmp(a, "--")) {
            options = 0;
            continue;
        }
        const char *name = a + (a[1] == '-' ? 2 : 1), *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const cli_opt *o = a[1] == '-' ? find(opts, n, name, len) : NULL;
        if (!o) {
            snprintf(err, errlen, "unknown option %.*s (see --help)",
                     (int)(eq ? eq - a : (long)strlen(a)), a);
            return CLI_ERROR;
        }
        if (o->seen) *o->seen = 1;
        if (o->type == CLI_FLAG) {
            if (eq) {
                snprintf(err, errlen, "--%s takes no value", o->name);
                return CLI_ERROR;
            }
            *(int *)o->dst = 1;
            continue;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!v) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "--%s needs a value", o->name);
                return CLI_ERROR;
            }
            v = argv[++i];
        }
        if (cli_set(o, v, err, errlen) < 0) return CLI_ERROR;
    }
    return CLI_RUN;
}

int cli_floats(const char *v, float *out, int n)
{
    for (int i = 0; i < n; i++) {
        char *end;
        errno = 0;
        double d = strtod(v, &end);
        if (end == v || errno || !isfinite(d) || *end != (i + 1 < n ? ',' : '\0')) return -1;
        out[i] = (float)d;
        v = end + 1;
    }
    return 0;
}

static void default_text(const cli_opt *o, char *buf, size_t len)
{
    buf[0] = '\0';
    if (o->def) {
        if (*o->def) snprintf(buf, len, " (default %s)", o->def);
        return;
    }
    switch (o->type) {
    case CLI_INT: snprintf(buf, len, " (default %d)", *(const int *)o->dst); break;
    case CLI_U64: snprintf(buf, len, " (default %llu)", *(const unsigned long long *)o->dst); break;
    case CLI_SIZE: snprintf(buf, len, " (default %zu)", *(const size_t *)o->dst); break;
    case CLI_DOUBLE: snprintf(buf, len, " (default %g)", *(const double *)o->dst); break;
    case CLI_FLOAT: snprintf(buf, len, " (default %g)", (double)*(const float *)o->dst); break;
    case CLI_STRING:
        if (*(const char *const *)o->dst)
            snprintf(buf, len, " (default %s)", *(const char *const *)o->dst);
        break;
    case CLI_FLAG: break;
    }
}

void cli_usage(FILE *f, const char *synopsis, const cli_opt *opts, int n)
{
    fprintf(f, "%s\n", synopsis);
    for (int i = 0; i < n; i++) {
        const cli_opt *o = &opts[i];
        char left[64], def[160];
        snprintf(left, sizeof left, "--%s%s%s", o->name, o->type == CLI_FLAG ? "" : " ",
                 o->type == CLI_FLAG ? ""
                 : o->arg            ? o->arg
                                     : "X");
        default_text(o, def, sizeof def);
        fprintf(f, "  %-22s %s%s\n", left, o->help, def);
    }
    fprintf(f, "  %-22s %s\n", "--help, --version", "this text; the program's version");
}
