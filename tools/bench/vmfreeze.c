/* vmfreeze: how long this virtual machine was not run at all during a benchmark run.
 *
 *   vmfreeze [period_us] [threshold_us]
 *
 * Why: on this VM the host caps the whole machine's CPU time per 100 ms period, and the
 * host's own work for our disk (each fdatasync is two virtio requests) counts against the
 * cap. Measured: one process spinning on one core plus another doing write+fdatasync in a
 * loop froze both virtual CPUs for 8-14 ms of every 100 ms; either alone did not. A frozen
 * VM shows no steal time here (/proc/stat steal stays 0), so it has to be seen from the
 * inside: a thread that asks to wake every period_us (4,000) and notes how late it woke.
 * It runs SCHED_FIFO (when allowed), so on a running CPU it preempts whatever is there at
 * once and a late wake-up above threshold_us (500) means the CPU itself was not running.
 * The cost is one short wake-up per period on the CPU it is pinned to: waking every
 * 1 ms took ~3 % of that core and ~5 % off a run whose client had its core to itself
 * (W1, wrk at 99 %); every 4 ms, ~1 % and no change above the noise. A freeze shorter
 * than the period can fall between two wake-ups, so the sum is a lower bound; the
 * freezes seen here last 2-15 ms.
 *
 * Runs until SIGTERM or SIGINT, then prints one line:
 *   RESULT frozen_ms=.. freezes=.. longest_ms=.. seconds=.. rt=1
 * frozen_ms sums how late the late wake-ups were, each measured from its deadline (so the
 * sleep itself is not counted); freezes counts them and longest_ms is the worst.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static long long ns_of(const struct timespec *t)
{
    return (long long)t->tv_sec * 1000000000LL + t->tv_nsec;
}

int main(int argc, char **argv)
{
    long period_us = argc > 1 ? atol(argv[1]) : 4000;
    long threshold_us = argc > 2 ? atol(argv[2]) : 500;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* timer slack would add up to 50 us to every wake-up */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    struct sched_param sp = {.sched_priority = 1};
    int rt = sched_setscheduler(0, SCHED_FIFO, &sp) == 0;

    struct timespec start, deadline, woke;
    clock_gettime(CLOCK_MONOTONIC, &start);
    deadline = start;
    double frozen_ms = 0, longest_ms = 0;
    long freezes = 0;
    while (!stop) {
        deadline.tv_nsec += period_us * 1000;
        while (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_nsec -= 1000000000L;
            deadline.tv_sec++;
        }
        int rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, NULL);
        if (rc == EINTR)
            continue;
        clock_gettime(CLOCK_MONOTONIC, &woke);
        long long late_ns = ns_of(&woke) - ns_of(&deadline);
        if (late_ns > threshold_us * 1000LL) {
            double ms = late_ns / 1e6;
            frozen_ms += ms;
            freezes++;
            if (ms > longest_ms)
                longest_ms = ms;
            /* a long freeze: start the next period from now, not from the missed ones */
            deadline = woke;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &woke);
    printf("RESULT frozen_ms=%.1f freezes=%ld longest_ms=%.2f seconds=%.2f rt=%d\n", frozen_ms,
           freezes, longest_ms, (ns_of(&woke) - ns_of(&start)) / 1e9, rt);
    return 0;
}
