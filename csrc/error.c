/* error.c — thread-local error message behind every failing status. */
#include <stdarg.h>
#include <stdio.h>

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
