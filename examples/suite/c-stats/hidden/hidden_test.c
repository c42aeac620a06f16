#include <limits.h>
#include <stdio.h>

#include "stats.h"

static int failures;

#define CHECK(expr, want)                                                   \
    do {                                                                    \
        long got_ = (expr);                                                 \
        if (got_ != (want)) {                                               \
            printf("FAIL %s: got %ld, want %ld\n", #expr, got_, (long)(want)); \
            failures++;                                                     \
        }                                                                   \
    } while (0)

int main(void)
{
    int one[] = {7};
    CHECK(stats_min(one, 1), 7);
    CHECK(stats_max(one, 1), 7);
    CHECK(stats_range(one, 1), 0);
    int wide[] = {INT_MAX, 0, INT_MIN};
    CHECK(stats_min(wide, 3), INT_MIN);
    CHECK(stats_max(wide, 3), INT_MAX);
    CHECK(stats_range(wide, 3), (long)INT_MAX - (long)INT_MIN);
    int sorted[] = {1, 2, 3, 4, 5};
    int min = 0, max = 0;
    stats_minmax(sorted, 5, &min, &max);
    CHECK(min, 1);
    CHECK(max, 5);
    int reversed[] = {5, 4, 3, 2, 1};
    stats_minmax(reversed, 5, &min, &max);
    CHECK(min, 1);
    CHECK(max, 5);
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures != 0;
}
