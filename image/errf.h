/* errf.h - image/'s internal error formatter: a one-line message into the
 * caller's buffer (nothing when err is NULL or errlen is 0). Not part of
 * the public interface in image.h. */
#ifndef IMAGE_ERRF_H
#define IMAGE_ERRF_H

#include <stddef.h>

void img_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
