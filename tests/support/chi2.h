/* Chi-square survival function for the distribution tests. */
#ifndef SPECDEC_TESTS_CHI2_H
#define SPECDEC_TESTS_CHI2_H

/* P(X > x) for X ~ chi-square(df) = Q(df / 2, x / 2), to ~1e-12 relative. */
double sd_test_chi2_sf(double x, int df);

#endif
