#include <limits.h>
#include <stdio.h>

#include "mathx.h"

static int failures;

#define CHECK(expr, want)                                                   \
    do {                                                                    \
        int got_ = (expr);                                                  \
        if (got_ != (want)) {                                               \
            printf("FAIL %s: got %d, want %d\n", #expr, got_, (want));      \
            failures++;                                                     \
        }                                                                   \
    } while (0)

int main(void)
{
    CHECK(clamp_int(5, 0, 10), 5);
    CHECK(clamp_int(0, 0, 10), 0);
    CHECK(clamp_int(10, 0, 10), 10);
    CHECK(clamp_int(-3, 0, 10), 0);
    CHECK(clamp_int(42, 0, 10), 10);
    CHECK(clamp_int(42, 10, 0), 10);
    CHECK(clamp_int(-1, 10, 0), 0);
    CHECK(clamp_int(INT_MIN, -5, 5), -5);
    CHECK(clamp_int(INT_MAX, INT_MIN, INT_MAX), INT_MAX);
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures != 0;
}
