#ifndef STATS_H
#define STATS_H

#include <stddef.h>

/* Each takes a non-empty array of `n` values. */
int stats_min(const int *values, size_t n);
int stats_max(const int *values, size_t n);
/* max - min */
long stats_range(const int *values, size_t n);

#endif
