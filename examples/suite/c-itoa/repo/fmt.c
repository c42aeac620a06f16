#include "fmt.h"

char *int_to_str(int value, char *buf)
{
    char digits[12];
    int n = 0;
    while (value > 0) {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    }
    int len = 0;
    while (n > 0)
        buf[len++] = digits[--n];
    buf[len] = '\0';
    return buf;
}
