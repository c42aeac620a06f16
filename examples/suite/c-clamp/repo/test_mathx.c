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
    CHECK(min_int(3, 4), 3);
    CHECK(max_int(3, 4), 4);
    CHECK(clamp_int(5, 0, 10), 5);
    CHECK(clamp_int(-3, 0, 10), 0);
    CHECK(clamp_int(42, 0, 10), 10);
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures != 0;
}
