/* test_pool.c - the worker pool: every task of every run runs exactly
 * once, a run returns only after all its tasks ended, and neither holds
 * whether the hand-offs are caught while spinning or after sleeping (runs
 * back to back, runs after a pause longer than the spin, tasks that
 * finish long after the caller's). Run under ThreadSanitizer by make
 * tsan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "nn/pool.h"

#define MAXT 8

typedef struct {
    int run;                 /* the run's number, set by the caller before it */
    int nthreads[MAXT];      /* what fn was told, per t */
    int slow;                /* a task other than 0 sleeps this many us       */
    long seen[MAXT];         /* run number each task last saw                 */
    long count[MAXT];        /* tasks run, per t                              */
    volatile long out[MAXT]; /* written by the task, read after the run  */
} job;

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static void task(void *arg, int t, int n)
{
    job *j = arg;
    j->nthreads[t] = n;
    if (t > 0 && j->slow) sleep_us(j->slow);
    j->seen[t] = j->run;
    j->count[t]++;
    j->out[t] = (long)j->run * 1000 + t;
}

/* Runs `runs` times, pausing pause_us between runs, and checks after
 * every run that each task ran once and had finished. */
static void check_runs(int nthreads, int runs, long pause_us, int slow)
{
    nn_pool *p = nn_pool_create(nthreads);
    assert_non_null(p);
    job j;
    memset(&j, 0, sizeof j);
    j.slow = slow;
    for (int r = 1; r <= runs; r++) {
        j.run = r;
        nn_pool_run(p, task, &j);
        for (int t = 0; t < nthreads; t++) {
            assert_int_equal(j.nthreads[t], nthreads);
            assert_int_equal(j.seen[t], r);
            assert_int_equal(j.count[t], r);
            assert_int_equal(j.out[t], (long)r * 1000 + t);
        }
        if (pause_us) sleep_us(pause_us);
    }
    nn_pool_free(p);
}

static void test_back_to_back(void **s)
{
    (void)s;
    check_runs(2, 20000, 0, 0);
    check_runs(4, 5000, 0, 0);
}

/* Pauses well past the spin, so the workers are asleep at the next run. */
static void test_after_sleep(void **s)
{
    (void)s;
    check_runs(2, 200, 300, 0);
    check_runs(3, 100, 1000, 0);
}

/* Workers that end long after the caller's task: the caller sleeps on
 * their end. */
static void test_slow_workers(void **s)
{
    (void)s;
    check_runs(2, 50, 0, 500);
    check_runs(4, 20, 200, 2000);
}

static void test_single_and_free(void **s)
{
    (void)s;
    check_runs(1, 10, 0, 0);
    /* Freed at once, and while asleep: the workers must end either way. */
    for (int i = 0; i < 20; i++) nn_pool_free(nn_pool_create(2 + i % 3));
    nn_pool *p = nn_pool_create(3);
    assert_non_null(p);
    sleep_us(2000);
    nn_pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_back_to_back),
        cmocka_unit_test(test_after_sleep),
        cmocka_unit_test(test_slow_workers),
        cmocka_unit_test(test_single_and_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
