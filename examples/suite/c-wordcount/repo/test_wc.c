#include <stdio.h>

#include "wc.h"

static int failures;

static void check(const char *text, size_t want)
{
    size_t got = count_words(text);
    if (got != want) {
        printf("FAIL count_words(\"%s\"): got %zu, want %zu\n", text, got, want);
        failures++;
    }
}

int main(void)
{
    check("hello world", 2);
    check("one", 1);
    check("trailing space ", 2);
    check("", 0);
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures != 0;
}
