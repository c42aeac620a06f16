#include <stdio.h>
#include <string.h>

#include "fmt.h"

static int failures;

static void check(int value, const char *want)
{
    char buf[12];
    const char *got = int_to_str(value, buf);
    if (strcmp(got, want) != 0) {
        printf("FAIL int_to_str(%d): got \"%s\", want \"%s\"\n", value, got, want);
        failures++;
    }
}

int main(void)
{
    check(123, "123");
    check(0, "0");
    check(-45, "-45");
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures != 0;
}
