/*
 * bench/lat_hist.h — the latency histogram floormta-sink keeps and floormta-load reads
 * back (through the sink's --stats-file), shared so both sides agree on the buckets.
 *
 * Values are microseconds. Below 16 each value has its own bucket; above, every power
 * of two is split into 16 equal buckets, so a bucket is at most 1/16 (6.25%) of its
 * values wide: log-linear, as HdrHistogram does at one significant hex digit. The
 * table is fixed (BENCH_LAT_BUCKETS counters, ~4.7 KB), so recording never allocates
 * and two histograms subtract bucket by bucket (a run's share of a long-lived sink).
 *
 * Header only (static inline): the two programs share no library of their own.
 */
#ifndef FLOORMTA_BENCH_LAT_HIST_H
#define FLOORMTA_BENCH_LAT_HIST_H

#include <stdint.h>

#define BENCH_LAT_EXP_MAX 39 /* 2^40 us (~12 days) and above land in the last bucket */
#define BENCH_LAT_BUCKETS ((BENCH_LAT_EXP_MAX - 3) * 16 + 16)

/* The bucket of a value in microseconds. */
static inline unsigned bench_lat_bucket(uint64_t us)
{
    if (us < 16)
        return (unsigned)us;
    unsigned e = 63u - (unsigned)__builtin_clzll(us); /* 2^e <= us < 2^(e+1), e >= 4 */
    if (e > BENCH_LAT_EXP_MAX)
        return BENCH_LAT_BUCKETS - 1;
    unsigned sub = (unsigned)(us >> (e - 4)) - 16u; /* 0..15 */
    return (e - 3) * 16 + sub;
}

/* The smallest value of a bucket, in microseconds. */
static inline uint64_t bench_lat_bucket_low(unsigned b)
{
    if (b < 16)
        return b;
    unsigned e = b / 16 + 3, sub = b % 16;
    return (uint64_t)(16 + sub) << (e - 4);
}

/* The bucket's width in microseconds (1 below 16). */
static inline uint64_t bench_lat_bucket_width(unsigned b)
{
    return b < 16 ? 1 : (uint64_t)1 << (b / 16 - 1);
}

#endif /* FLOORMTA_BENCH_LAT_HIST_H */
