#include "nn/err.h"

#include <stdarg.h>
#include <stdio.h>

int nn_errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        /* Messages quote names read from files; a control character in
         * one (a newline in a layer type) would break the one line. */
        for (char *p = err; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    }
    return -1;
}
