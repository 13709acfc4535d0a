/* err.h - the library's one way of reporting an error: a formatted
 * one-line message into the caller's buffer. The library never prints and
 * never exits; programs print the message, the server turns it into JSON. */
#ifndef NN_ERR_H
#define NN_ERR_H

#include <stddef.h>

/* Writes the message into err (errlen bytes, always NUL-terminated; nothing
 * when err is NULL or errlen is 0), control characters replaced by '?'. Returns -1, so `return nn_errf(...)`
 * reports a failure in one line. */
int nn_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
