/* tmpdir.h - one scratch directory per test binary, shared by its tests:
 * cmocka group setup/teardown that create it under /tmp and remove it with
 * everything the tests left in it.
 *
 *   #define TMPDIR_PREFIX "test_idx"
 *   #include "tmpdir.h"
 *   ... snprintf(path, sizeof path, "%s/x.bin", tmpdir); ...
 *   return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
 */
#ifndef TESTS_TMPDIR_H
#define TESTS_TMPDIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef TMPDIR_PREFIX
#error "define TMPDIR_PREFIX before including tmpdir.h"
#endif

static char tmpdir[64];

static int tmpdir_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/%s.XXXXXX", TMPDIR_PREFIX);
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int tmpdir_remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int tmpdir_teardown(void **state)
{
    (void)state;
    /* Depth first, not following links: children before their directory. */
    return nftw(tmpdir, tmpdir_remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
