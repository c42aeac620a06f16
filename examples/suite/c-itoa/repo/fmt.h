#ifndef FMT_H
#define FMT_H

/* Writes `value` in decimal to `buf` (at least 12 bytes) and returns `buf`. */
char *int_to_str(int value, char *buf);

#endif
