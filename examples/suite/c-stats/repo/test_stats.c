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
    int values[] = {4, -2, 9, 0};
    CHECK(stats_min(values, 4), -2);
    CHECK(stats_max(values, 4), 9);
    CHECK(stats_range(values, 4), 11);
    int min = 0, max = 0;
    stats_minmax(values, 4, &min, &max);
    CHECK(min, -2);
    CHECK(max, 9);
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures != 0;
}
