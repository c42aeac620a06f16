#include "wc.h"

#include <ctype.h>

size_t count_words(const char *text)
{
    size_t words = 0;
    for (const char *p = text; *p; p++) {
        if (isspace((unsigned char)*p) && p != text && !isspace((unsigned char)p[-1]))
            words++;
    }
    return words;
}
