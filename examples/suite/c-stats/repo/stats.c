#include "stats.h"

int stats_min(const int *values, size_t n)
{
    int min = values[0];
    for (size_t i = 1; i < n; i++)
        if (values[i] < min)
            min = values[i];
    return min;
}

int stats_max(const int *values, size_t n)
{
    int max = values[0];
    for (size_t i = 1; i < n; i++)
        if (values[i] > max)
            max = values[i];
    return max;
}

long stats_range(const int *values, size_t n)
{
    int min = values[0], max = values[0];
    for (size_t i = 1; i < n; i++) {
        if (values[i] < min)
            min = values[i];
        if (values[i] > max)
            max = values[i];
    }
    return (long)max - (long)min;
}
