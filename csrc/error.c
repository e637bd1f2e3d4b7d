/* error.c — thread-local error message behind every failing status; the interrupt check. */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "ccfg.h"

static _Thread_local char last_error[512];

const char *ccfg_last_error(void) { return last_error; }

void ccfg_clear_error(void) { last_error[0] = '\0'; }

int ccfg_fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

/* the host's check, set once before any work (a plain pointer read by every thread after) */
static int (*interrupt_check)(void);

void ccfg_set_interrupt_check(int (*check)(void)) { interrupt_check = check; }

/* seconds between two calls of the host's check in one thread: the Python module's takes the GIL,
 * which another busy thread may hold for its switch interval */
#define INTERRUPT_PERIOD 0.02

int ccfg_check_interrupt(void)
{
    static _Thread_local double last = -1.0;
    struct timespec ts;
    if (!interrupt_check) return CCFG_OK;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    const double now = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    if (last >= 0.0 && now - last < INTERRUPT_PERIOD) return CCFG_OK;
    last = now;
    return interrupt_check() ? ccfg_fail(CCFG_ECANCEL, "interrupted") : CCFG_OK;
}
