/* The project's clock: monotonic seconds, for deadlines, timeouts and timings. */
#ifndef SPECDEC_CORE_CLOCK_H
#define SPECDEC_CORE_CLOCK_H

/* Seconds since an arbitrary fixed point (CLOCK_MONOTONIC); never goes backwards. */
double sd_now(void);

#endif
