#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "fmt.h"

static int failures;

static void check(int value)
{
    char buf[12], want[12];
    snprintf(want, sizeof want, "%d", value);
    const char *got = int_to_str(value, buf);
    if (strcmp(got, want) != 0) {
        printf("FAIL int_to_str(%d): got \"%s\", want \"%s\"\n", value, got, want);
        failures++;
    }
}

int main(void)
{
    int values[] = {0, 1, -1, 9, 10, -10, 123, -45, 1000000, INT_MAX, INT_MIN, INT_MIN + 1};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        check(values[i]);
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures != 0;
}
