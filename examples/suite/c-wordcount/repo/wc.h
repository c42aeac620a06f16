#ifndef WC_H
#define WC_H

#include <stddef.h>

/* The number of words in `text`: runs of characters that are not whitespace. */
size_t count_words(const char *text);

#endif
